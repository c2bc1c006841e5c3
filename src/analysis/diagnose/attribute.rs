//! Naming what blocked: the catalog entry and call site of a callback stack ([`attribute`]),
//! the API called, the endpoint and route, what the loop waited on, and the threads it
//! waited for.

use super::blocks::Block;
use super::model::{CallSite, Fix, WaitedThread};
use crate::analysis::catalog::{Catalog, Entry, MatchedBy, SiteFacts};
use crate::analysis::loops::{self, Activity};
use crate::analysis::memo;
use crate::analysis::stats::round1;
use crate::recording::frames::{self, Origin};
use crate::recording::{FrameDef, Recording, UNIDENTIFIED_SOCKET};
use std::collections::{BTreeMap, HashSet};

/// `function (file:line)` of a frame, with the file shortened.
pub(super) fn frame_label(rec: &Recording, f: &FrameDef) -> String {
    format!(
        "{} ({}:{})",
        rec.str(f.name),
        frames::short_file(rec.str(f.file)),
        f.line
    )
}

/// The top-level package of a frame's module (`asyncio` for `asyncio.subprocess`).
pub(super) fn package(rec: &Recording, f: &FrameDef) -> String {
    let module = memo::module_of(rec, f);
    module.split('.').next().unwrap_or(&module).to_owned()
}

/// The public name of a library frame: `Class.method`, or `package.function`.
pub(super) fn api_name(rec: &Recording, f: &FrameDef) -> String {
    let name = rec.str(f.name);
    if name.contains('.') {
        name.to_owned()
    } else {
        let module = memo::module_of(rec, f);
        let package = module.split('.').next().unwrap_or(&module).to_owned();
        format!("{package}.{name}")
    }
}

/// The first call on a source line (`time.sleep` in `    time.sleep(ms / 1000)`).
pub(super) fn called_on_line(source: &str) -> Option<String> {
    const KEYWORDS: &[&str] = &[
        "if", "elif", "while", "for", "return", "await", "with", "and", "or", "not", "in", "yield",
        "assert", "print", "lambda", "del", "raise",
    ];
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
                i += 1;
            }
            let word = &source[start..i];
            let mut j = i;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'(' && !KEYWORDS.contains(&word) {
                return Some(word.trim_matches('.').to_owned());
            }
        } else if c == b'"' || c == b'\'' || c == b'#' {
            // Stop at strings and comments: calls inside them are not calls.
            if c == b'#' {
                return None;
            }
            let quote = c;
            i += 1;
            while i < bytes.len() && bytes[i] != quote {
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    None
}

/// The innermost application frame of a stack, else its innermost frame, as a call site.
pub(super) fn user_or_leaf(rec: &Recording, stack: u32) -> Option<CallSite> {
    let frames: Vec<&FrameDef> = rec.stack(stack).collect();
    let f = frames
        .iter()
        .find(|f| frames::origin(rec.str(f.file)) == Origin::App)
        .or(frames.first())?;
    Some(CallSite {
        file: rec.str(f.file).to_owned(),
        line: f.line,
        function: rec.str(f.name).to_owned(),
        source: rec.source_line(f).map(|s| s.trim().to_owned()),
    })
}

/// How the capture stage describes a pipe shared with a child process of the target.
pub(super) const CHILD_PIPE_PREFIX: &str = "pipe from child process";

/// The catalog id of a blocking wait for a child process.
pub(super) const SUBPROCESS_CATEGORY: &str = "blocking-subprocess";

/// The route whose endpoint function is `endpoint` in the recorded route tables
/// ([`crate::recording::RouteDef`]), when exactly one route has it.
pub(super) fn route_by_endpoint(rec: &Recording, endpoint: &str) -> Option<String> {
    let mut routes = rec
        .routes
        .iter()
        .filter(|r| r.endpoint == endpoint)
        .map(|r| r.route.as_str());
    let first = routes.next()?;
    routes.all(|r| r == first).then(|| first.to_owned())
}

/// The route that took the most time over a group's samples.
pub(super) fn route_of(rec: &Recording, group: &[&Block]) -> Option<String> {
    heaviest(group.iter().flat_map(|b| {
        b.routes
            .iter()
            .zip(&b.activities)
            .filter_map(|(r, (_, t))| Some(((*r)?, *t)))
    }))
    .map(|id| rec.str(id).to_owned())
}

/// The wait target that took the most time over a group's samples.
pub(super) fn wait_target_of(rec: &Recording, group: &[&Block]) -> Option<String> {
    heaviest_wait(
        rec,
        group.iter().flat_map(|b| {
            b.waits
                .iter()
                .zip(&b.activities)
                .filter_map(|(w, (_, t))| Some(((*w)?, *t)))
        }),
    )
}

/// The wait target (string id) that took the most time, any identified one before
/// [`UNIDENTIFIED_SOCKET`] (a socket created since the socket tables were last read is
/// another connection to the same place far more often than a place of its own).
pub(super) fn heaviest_wait(
    rec: &Recording,
    weights: impl IntoIterator<Item = (u32, f64)>,
) -> Option<String> {
    let (unknown, known): (Vec<_>, Vec<_>) = weights
        .into_iter()
        .partition(|(id, _)| rec.str(*id) == UNIDENTIFIED_SOCKET);
    heaviest(if known.is_empty() { unknown } else { known }).map(|id| rec.str(id).to_owned())
}

/// The threads a loop waiting on a lock/join/future waited for: in the group's samples, the
/// other threads of the same process with an application frame, by how often they were there.
pub(super) fn waited_threads(rec: &Recording, group: &[&Block]) -> Vec<WaitedThread> {
    let times: HashSet<(u32, u64)> = group
        .iter()
        .flat_map(|b| b.times.iter().map(move |t| (b.pid, *t)))
        .collect();
    let loop_tids: HashSet<(u32, u32)> = group.iter().map(|b| (b.pid, b.tid)).collect();
    /// A thread seen at one application frame: how often, one of its ids, how often in
    /// each activity, and a wait target (string id).
    struct Seen {
        n: usize,
        tid: u32,
        activities: BTreeMap<Activity, usize>,
        wait: Option<u32>,
    }
    // By (name, app frame id), not thread id: a pool created per request has new threads
    // each time.
    let mut seen: BTreeMap<(String, u32), Seen> = BTreeMap::new();
    for s in rec
        .samples
        .iter()
        .filter(|s| times.contains(&(s.pid, s.t_us)))
    {
        for t in &s.threads {
            if loop_tids.contains(&(s.pid, t.tid)) {
                continue;
            }
            let app = rec.stacks[t.stack as usize]
                .iter()
                .copied()
                .find(|f| frames::origin(rec.str(rec.frame(*f).file)) == Origin::App);
            if let Some(app) = app {
                let name = rec.thread_name(t).unwrap_or("?").to_owned();
                let e = seen.entry((name, app)).or_insert(Seen {
                    n: 0,
                    tid: t.tid,
                    activities: BTreeMap::new(),
                    wait: t.wait,
                });
                e.n += 1;
                *e.activities.entry(loops::activity(rec, s, t)).or_default() += 1;
                // Keep a described wait when a later sample has one.
                if e.wait.is_none() {
                    e.wait = t.wait;
                }
            }
        }
    }
    let mut out: Vec<WaitedThread> = seen
        .into_iter()
        .map(|((name, app), e)| WaitedThread {
            name,
            tid: e.tid,
            call_site: call_site(rec, rec.frame(app)),
            // What it did most of the time, not in one sample (which one came first
            // depends on the machine's load).
            state: e
                .activities
                .iter()
                .max_by_key(|(a, n)| (**n, std::cmp::Reverse(**a)))
                .map(|(a, _)| a.to_string())
                .unwrap_or_default(),
            wait_target: e.wait.map(|w| rec.str(w).to_owned()),
            share_pct: round1((100.0 * e.n as f64 / times.len().max(1) as f64).min(100.0)),
        })
        .collect();
    out.sort_by(|a, b| {
        b.share_pct
            .partial_cmp(&a.share_pct)
            .unwrap()
            .then(a.tid.cmp(&b.tid))
    });
    out.truncate(3);
    out
}

/// Said first in the fix of a loop blocked on a future's result while no other thread ran
/// application code: the future may be one only this loop could complete.
pub const SELF_WAIT_NOTE: &str = "No other thread was running application code while the loop waited: if the future belongs to a coroutine scheduled on this same loop (`asyncio.run_coroutine_threadsafe(coro, loop)` called from the loop), the loop waits for itself, a deadlock that ends only with the timeout; `await coro` instead.";

/// Whether a loop waiting on `Future.result` had no thread working for it.
pub(super) fn waits_for_itself(
    waited_for: &[WaitedThread],
    blocking_call: Option<&str>,
    major: Activity,
) -> bool {
    major == Activity::Waiting(loops::WaitReason::Lock)
        && waited_for.is_empty()
        && blocking_call.is_some_and(|b| b.ends_with("Future.result"))
}

/// Of weighted keys, the one with the most weight (ties: the smallest key).
pub(super) fn heaviest<K: Ord>(weights: impl IntoIterator<Item = (K, f64)>) -> Option<K> {
    let mut by: BTreeMap<K, f64> = BTreeMap::new();
    for (k, w) in weights {
        *by.entry(k).or_default() += w;
    }
    by.into_iter()
        .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap().then(b.0.cmp(&a.0)))
        .map(|(k, _)| k)
}

/// The innermost frame's API that took the most time over a group's samples.
pub(super) fn dominant_leaf(rec: &Recording, group: &[&Block]) -> Option<String> {
    heaviest(group.iter().flat_map(|b| {
        b.stacks
            .iter()
            .zip(&b.activities)
            .filter_map(|((stack, _), (_, w))| Some((api_name(rec, rec.stack(*stack).next()?), *w)))
    }))
}

/// What [`attribute`] found.
pub(super) struct Attribution<'c> {
    pub(super) entry: &'c Entry,
    pub(super) matched_by: MatchedBy,
    pub(super) call_site: Option<CallSite>,
    pub(super) blocking_call: Option<String>,
}

/// A frame as a call site, with its source line when recorded.
pub(super) fn call_site(rec: &Recording, f: &FrameDef) -> CallSite {
    CallSite {
        file: rec.str(f.file).to_owned(),
        line: f.line,
        function: rec.str(f.name).to_owned(),
        source: rec.source_line(f).map(|s| s.trim().to_owned()),
    }
}

/// Names what blocked in a callback stack (`stack[..anchor]`, innermost first).
///
/// Library frames are examined from the outermost application frame inwards: the first one a
/// catalog entry recognises is the API the application called (so `logger.info` is found even
/// when the slow part is the application's own handler class deeper down), and the call site
/// is the application frame that called it. Without such a frame, the innermost application
/// frame is the call site and its source line, then the activity, choose the entry.
pub(super) fn attribute<'c>(
    rec: &Recording,
    catalog: &'c Catalog,
    stack: &[&FrameDef],
    anchor: usize,
    activity: Activity,
) -> Attribution<'c> {
    let is_app = |i: usize| frames::origin(rec.str(stack[i].file)) == Origin::App;
    let outermost_app = (0..anchor).rev().find(|&i| is_app(i));
    // Library frames from the outermost application frame inwards, by stack index.
    let libs: Vec<usize> = (0..outermost_app.map_or(anchor, |o| o + 1))
        .rev()
        .filter(|&i| !is_app(i))
        .collect();
    let user = loops::app_frame(rec, stack, anchor);
    let site_frame = user.map(|u| stack[u]).or(stack.first().copied());
    let source = site_frame.and_then(|f| rec.source_line(f));
    let facts = SiteFacts {
        callees: libs
            .iter()
            .map(|&i| {
                (
                    memo::module_of(rec, stack[i]).into_owned(),
                    rec.str(stack[i].name),
                )
            })
            .collect(),
        source,
        activity,
    };
    let (entry, matched_by) = catalog.classify(&facts);
    if let MatchedBy::Frame(k) = matched_by {
        // The API the application called; the call site is the application frame calling it.
        let i = libs[k];
        let caller = (i + 1..anchor).find(|&j| is_app(j)).unwrap_or(i);
        return Attribution {
            entry,
            matched_by,
            call_site: Some(call_site(rec, stack[caller])),
            blocking_call: Some(api_name(rec, stack[i])),
        };
    }
    let blocking_call = match user {
        Some(u) if u > 0 => Some(api_name(rec, stack[u - 1])),
        Some(_) => source.and_then(called_on_line),
        None => stack.first().map(|f| api_name(rec, f)),
    };
    Attribution {
        entry,
        matched_by,
        call_site: site_frame.map(|f| call_site(rec, f)),
        blocking_call,
    }
}

/// The fix of a catalog entry.
pub fn fix_of(e: &Entry) -> Fix {
    Fix {
        id: e.id.clone(),
        summary: e.fix.clone(),
        why: e.why.clone(),
        before: e.before.clone(),
        after: e.after.clone(),
        links: e.links.clone(),
    }
}

/// The endpoint: the function FastAPI called (directly above `run_endpoint_function`), else
/// the outermost application frame of the callback, without its `.<locals>` suffix.
pub(super) fn endpoint(rec: &Recording, stack: &[&FrameDef], anchor: usize) -> Option<String> {
    if let Some(i) = stack[..anchor].iter().position(|f| {
        rec.str(f.name).ends_with("run_endpoint_function")
            && memo::module_of(rec, f) == "fastapi.routing"
    }) {
        if i > 0 {
            return Some(rec.str(stack[i - 1].name).to_owned());
        }
    }
    (0..anchor)
        .rev()
        .find(|&i| frames::origin(rec.str(stack[i].file)) == Origin::App)
        .map(|i| {
            let name = rec.str(stack[i].name);
            name.split(".<locals>").next().unwrap_or(name).to_owned()
        })
}
