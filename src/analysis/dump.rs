//! `loopprof dump`: what every Python thread is doing *now*, from a short burst of snapshots.
//!
//! For each thread, the stack it was in most often, with its activity (on-CPU, native,
//! waiting and why, GIL wait, idle for event loops) and in how many of the snapshots it stayed
//! there. The verdict comes from the regular diagnosis of the same snapshots; when the loop
//! waits on a lock, join or future (`executor-shutdown-wait`, `thread-sync-wait`), the threads
//! of that process busy in application code are named as the ones it is probably waiting for.

use super::diagnose::{Diagnosis, Options};
use super::loops::{self, Activity, LoopState};
use crate::recording::frames::{self, short_file, Origin};
use crate::recording::Recording;
use serde::Serialize;
use std::collections::BTreeMap;

/// One thread in the dump.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadDump {
    /// Process id.
    pub pid: u32,
    /// OS thread id.
    pub tid: u32,
    /// Thread name.
    pub name: String,
    /// True for the application's event-loop threads.
    pub event_loop: bool,
    /// `idle`, `on-cpu`, `native`, `waiting`, `gil-wait`.
    pub state: String,
    /// The wait reason, when waiting.
    pub wait_reason: Option<String>,
    /// Snapshots in which the thread was in this stack.
    pub snapshots: usize,
    /// Snapshots of the thread in total.
    pub of: usize,
    /// The stack, innermost first: `function (dir/file.py:line)`.
    pub stack: Vec<String>,
    /// Source text of the innermost application frame, when recorded.
    pub source: Option<String>,
    /// Index in `stack` of the innermost application frame (the line to look at), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_frame: Option<usize>,
    /// The HTTP route the thread served in most of those snapshots, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// What it waited on in most of those snapshots (`tcp socket to 10.0.0.5:5432`), when
    /// blocked on a file descriptor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_target: Option<String>,
}

/// A thread the blocked loop is probably waiting for.
#[derive(Debug, Clone, Serialize)]
pub struct WaitedFor {
    /// Thread name.
    pub name: String,
    /// OS thread id.
    pub tid: u32,
    /// Its innermost application frame, `function (dir/file.py:line)`.
    pub at: String,
    /// Its innermost frame (what it is stuck in).
    pub leaf: String,
    /// Its activity.
    pub state: String,
}

/// The whole dump.
#[derive(Debug, Clone, Serialize)]
pub struct Dump {
    /// Window covered, seconds.
    pub window_s: f64,
    /// Snapshots per process.
    pub snapshots: usize,
    /// Every thread, event loops first.
    pub threads: Vec<ThreadDump>,
    /// True when the diagnosis found the loop blocked (any finding).
    pub loop_blocked: bool,
    /// The diagnosis verdict sentence.
    pub verdict: String,
    /// For lock/join/future waits: threads of the same process busy in application code.
    pub waited_for: Vec<WaitedFor>,
}

fn label(rec: &Recording, f: &crate::recording::FrameDef) -> String {
    format!(
        "{} ({}:{})",
        rec.str(f.name),
        short_file(rec.str(f.file)),
        f.line
    )
}

fn state_of(a: Option<Activity>) -> (String, Option<String>) {
    match a {
        None => ("idle".into(), None),
        Some(Activity::Waiting(r)) => ("waiting".into(), Some(r.name().into())),
        Some(a) => (a.name().into(), None),
    }
}

/// Per thread: its name, how often each (stack id, activity) was seen, and its sample count.
type Seen = (String, BTreeMap<(u32, Option<Activity>), usize>, usize);

/// The diagnosis options of a dump taken at `rate_hz` snapshots per second: a stall must span
/// several snapshots (one busy snapshot is any short callback), at least 50 ms, and only
/// stalls count (no share of short blocks can reach 100%).
pub fn options(rate_hz: f64) -> Options {
    let interval_ms = 1000.0 / rate_hz;
    Options {
        threshold_ms: (2.5 * interval_ms).max(50.0),
        min_share_pct: 100.0,
    }
}

/// What a dump concludes (`loopprof dump` exits 8, 6 or 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The snapshots cannot be trusted (a frozen target, most reads failed).
    Inconclusive,
    /// The loop is blocked (any finding).
    LoopBlocked,
    /// The loop is not blocked.
    NotBlocked,
}

/// The conclusion of a dump and the diagnosis it came from.
pub fn outcome(d: &Diagnosis, dump: &Dump) -> Outcome {
    if !d.quality.trusted {
        Outcome::Inconclusive
    } else if dump.loop_blocked {
        Outcome::LoopBlocked
    } else {
        Outcome::NotBlocked
    }
}

/// Builds the dump from a short recording and its diagnosis.
pub fn dump(rec: &Recording, d: &Diagnosis) -> Dump {
    // (pid, tid) -> (name, (stack id, activity) -> count, total)
    let mut seen: BTreeMap<(u32, u32), Seen> = BTreeMap::new();
    // (pid, tid, stack id) -> route id -> snapshots
    let mut routes: BTreeMap<(u32, u32, u32), BTreeMap<u32, usize>> = BTreeMap::new();
    // (pid, tid, stack id) -> wait target id -> snapshots
    let mut waits: BTreeMap<(u32, u32, u32), BTreeMap<u32, usize>> = BTreeMap::new();
    for s in &rec.samples {
        for t in &s.threads {
            let lt = d.loops.iter().find(|l| l.pid == s.pid && l.tid == t.tid);
            let activity = match lt {
                Some(lt) => match loops::classify(rec, lt, s, t) {
                    LoopState::Idle | LoopState::Overhead => None,
                    LoopState::GilWait => Some(Activity::GilWait),
                    LoopState::Busy { activity, .. } => Some(activity),
                    LoopState::NotLoop => Some(loops::activity(rec, s, t)),
                },
                None => Some(loops::activity(rec, s, t)),
            };
            let e = seen
                .entry((s.pid, t.tid))
                .or_insert_with(|| (String::new(), BTreeMap::new(), 0));
            if let Some(n) = rec.thread_name(t) {
                e.0 = n.to_owned();
            }
            *e.1.entry((t.stack, activity)).or_default() += 1;
            e.2 += 1;
            if let Some(w) = t.wait {
                *waits
                    .entry((s.pid, t.tid, t.stack))
                    .or_default()
                    .entry(w)
                    .or_default() += 1;
            }
            if let Some(r) = t.route {
                *routes
                    .entry((s.pid, t.tid, t.stack))
                    .or_default()
                    .entry(r)
                    .or_default() += 1;
            }
        }
    }
    let mut threads: Vec<ThreadDump> = seen
        .into_iter()
        .map(|((pid, tid), (name, stacks, total))| {
            let ((stack, activity), count) = stacks
                .into_iter()
                .max_by_key(|(k, c)| (*c, std::cmp::Reverse(k.0)))
                .unwrap();
            let frames: Vec<_> = rec.stack(stack).collect();
            let (state, wait_reason) = state_of(activity);
            let most = |m: &BTreeMap<(u32, u32, u32), BTreeMap<u32, usize>>| {
                m.get(&(pid, tid, stack))
                    .and_then(|r| {
                        r.iter()
                            .max_by_key(|(id, c)| (**c, std::cmp::Reverse(**id)))
                    })
                    .map(|(id, _)| rec.str(*id).to_owned())
            };
            let route = most(&routes);
            let wait_target = most(&waits);
            ThreadDump {
                route,
                wait_target,
                pid,
                tid,
                name,
                event_loop: d.loops.iter().any(|l| l.pid == pid && l.tid == tid),
                state,
                wait_reason,
                snapshots: count,
                of: total,
                app_frame: frames
                    .iter()
                    .position(|f| frames::origin(rec.str(f.file)) == Origin::App),
                source: frames
                    .iter()
                    .find(|f| frames::origin(rec.str(f.file)) == Origin::App)
                    .and_then(|f| rec.source_line(f))
                    .map(|s| s.trim().to_owned()),
                stack: frames.iter().map(|f| label(rec, f)).collect(),
            }
        })
        .collect();
    threads.sort_by_key(|t| (!t.event_loop, t.pid, t.tid));

    // What a loop blocked on a lock/join/future waits for: the other threads of its process
    // that are busy in application code.
    let mut waited_for = Vec::new();
    if let Some(top) = d.findings.first() {
        if matches!(
            top.category.as_str(),
            "executor-shutdown-wait" | "thread-sync-wait"
        ) {
            for s in rec
                .samples
                .iter()
                .rev()
                .filter(|s| s.pid == top.pid)
                .take(1)
            {
                for t in &s.threads {
                    if d.loops.iter().any(|l| l.pid == s.pid && l.tid == t.tid) {
                        continue;
                    }
                    let frames: Vec<_> = rec.stack(t.stack).collect();
                    if let Some(app) = frames
                        .iter()
                        .find(|f| frames::origin(rec.str(f.file)) == Origin::App)
                    {
                        let (state, reason) = state_of(Some(loops::activity(rec, s, t)));
                        waited_for.push(WaitedFor {
                            name: rec.thread_name(t).unwrap_or("?").to_owned(),
                            tid: t.tid,
                            at: label(rec, app),
                            leaf: frames.first().map(|f| label(rec, f)).unwrap_or_default(),
                            state: match reason {
                                Some(r) => format!("{state} ({r})"),
                                None => state,
                            },
                        });
                    }
                }
            }
        }
    }
    let snapshots = rec
        .processes
        .first()
        .map(|p| rec.samples.iter().filter(|s| s.pid == p.pid).count())
        .unwrap_or(0);
    Dump {
        window_s: rec.duration_us() as f64 / 1e6,
        snapshots,
        threads,
        loop_blocked: !d.findings.is_empty(),
        verdict: d.verdict.summary.clone(),
        waited_for,
    }
}
