//! `loopprof dump`: what every Python thread is doing *now*, from a short burst of snapshots.
//!
//! For each thread, the stack it was in most often, with its activity (on-CPU, native,
//! waiting and why, GIL wait, idle for event loops) and in how many of the snapshots it stayed
//! there. The verdict comes from the regular diagnosis of the same snapshots; when the loop
//! waits on a lock, join or future (`executor-shutdown-wait`, `thread-sync-wait`), the threads
//! of that process busy in application code are named as the ones it is probably waiting for.

use super::diagnose::{Diagnosis, Options};
use super::loops::{self, Activity, ActivityKind, LoopState, WaitReason};
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
    pub state: ThreadState,
    /// The wait reason, when waiting.
    pub wait_reason: Option<WaitReason>,
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
    /// The asyncio task tree of each event loop, from the last task snapshot of each process
    /// (empty when tasks were not read).
    pub tasks: Vec<super::tasks::TaskTree>,
}

fn label(rec: &Recording, f: &crate::recording::FrameDef) -> String {
    format!(
        "{} ({}:{})",
        rec.str(f.name),
        short_file(rec.str(f.file)),
        f.line
    )
}

/// What a thread was doing in most snapshots: an [`ActivityKind`], or idle (an event loop
/// waiting for events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThreadState {
    /// An event loop waiting for events.
    Idle,
    /// Executing Python bytecode.
    OnCpu,
    /// Native code, GIL released.
    Native,
    /// Blocked in the kernel.
    Waiting,
    /// Waiting for the GIL.
    GilWait,
}

impl std::fmt::Display for ThreadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ThreadState::Idle => "idle",
            ThreadState::OnCpu => "on-cpu",
            ThreadState::Native => "native",
            ThreadState::Waiting => "waiting",
            ThreadState::GilWait => "gil-wait",
        })
    }
}

fn state_of(a: Option<Activity>) -> (ThreadState, Option<WaitReason>) {
    let state = match a.map(Activity::kind) {
        None => ThreadState::Idle,
        Some(ActivityKind::OnCpu) => ThreadState::OnCpu,
        Some(ActivityKind::Native) => ThreadState::Native,
        Some(ActivityKind::Waiting) => ThreadState::Waiting,
        Some(ActivityKind::GilWait) => ThreadState::GilWait,
    };
    (state, a.and_then(Activity::wait_reason))
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

/// Builds the dump from a short recording and its diagnosis (`catalog` names the places the
/// tasks wait at).
pub fn dump(rec: &Recording, d: &Diagnosis, catalog: &super::catalog::Catalog) -> Dump {
    let tally = Tally::of(rec, d);
    let mut threads: Vec<ThreadDump> = tally
        .seen
        .iter()
        .map(|(&(pid, tid), (name, stacks, total))| {
            let (&(stack, activity), &count) = stacks
                .iter()
                .max_by_key(|(k, c)| (**c, std::cmp::Reverse(k.0)))
                .unwrap();
            let frames: Vec<_> = rec.stack(stack).collect();
            let (state, wait_reason) = state_of(activity);
            let app = frames
                .iter()
                .position(|f| frames::origin(rec.str(f.file)) == Origin::App);
            ThreadDump {
                route: tally.most(rec, &tally.routes, (pid, tid, stack)),
                wait_target: tally.most(rec, &tally.waits, (pid, tid, stack)),
                pid,
                tid,
                name: name.clone(),
                event_loop: d.loops.iter().any(|l| l.pid == pid && l.tid == tid),
                state,
                wait_reason,
                snapshots: count,
                of: *total,
                app_frame: app,
                source: app
                    .and_then(|i| rec.source_line(frames[i]))
                    .map(|s| s.trim().to_owned()),
                stack: frames.iter().map(|f| label(rec, f)).collect(),
            }
        })
        .collect();
    threads.sort_by_key(|t| (!t.event_loop, t.pid, t.tid));
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
        waited_for: waited_for(rec, d),
        tasks: super::tasks::task_trees(rec, catalog),
    }
}

/// Snapshot counts per (pid, tid, stack id) of each string id (route or wait target).
type PerStack = BTreeMap<(u32, u32, u32), BTreeMap<u32, usize>>;

/// What the snapshots saw of each thread.
struct Tally {
    /// Per thread: name, snapshots per (stack id, activity), snapshots in all.
    seen: BTreeMap<(u32, u32), Seen>,
    /// Routes served, per thread and stack.
    routes: PerStack,
    /// Wait targets, per thread and stack.
    waits: PerStack,
}

impl Tally {
    fn of(rec: &Recording, d: &Diagnosis) -> Tally {
        let mut t = Tally {
            seen: BTreeMap::new(),
            routes: BTreeMap::new(),
            waits: BTreeMap::new(),
        };
        for s in &rec.samples {
            for th in &s.threads {
                let lt = d.loops.iter().find(|l| l.pid == s.pid && l.tid == th.tid);
                let activity = match lt {
                    Some(lt) => match loops::classify(rec, lt, s, th) {
                        LoopState::Idle | LoopState::Overhead => None,
                        LoopState::GilWait => Some(Activity::GilWait),
                        LoopState::Busy { activity, .. } => Some(activity),
                        LoopState::NotLoop => Some(loops::activity(rec, s, th)),
                    },
                    None => Some(loops::activity(rec, s, th)),
                };
                let e = t
                    .seen
                    .entry((s.pid, th.tid))
                    .or_insert_with(|| (String::new(), BTreeMap::new(), 0));
                if let Some(n) = rec.thread_name(th) {
                    e.0 = n.to_owned();
                }
                *e.1.entry((th.stack, activity)).or_default() += 1;
                e.2 += 1;
                let key = (s.pid, th.tid, th.stack);
                for (map, id) in [(&mut t.waits, th.wait), (&mut t.routes, th.route)] {
                    if let Some(id) = id {
                        *map.entry(key).or_default().entry(id).or_default() += 1;
                    }
                }
            }
        }
        t
    }

    /// The string seen most often at a thread's stack (ties to the lowest id).
    fn most(&self, rec: &Recording, m: &PerStack, key: (u32, u32, u32)) -> Option<String> {
        m.get(&key)
            .and_then(|r| {
                // An identified target before a socket not identified yet.
                r.iter().max_by_key(|(id, c)| {
                    (
                        rec.str(**id) != crate::recording::UNIDENTIFIED_SOCKET,
                        **c,
                        std::cmp::Reverse(**id),
                    )
                })
            })
            .map(|(id, _)| rec.str(*id).to_owned())
    }
}

/// What a loop blocked on a lock/join/future waits for: in the last snapshot, the other
/// threads of its process that are busy in application code.
fn waited_for(rec: &Recording, d: &Diagnosis) -> Vec<WaitedFor> {
    let mut out = Vec::new();
    let Some(top) = d.findings.first() else {
        return out;
    };
    if !matches!(
        top.category.as_str(),
        "executor-shutdown-wait" | "thread-sync-wait"
    ) {
        return out;
    }
    let Some(s) = rec.samples.iter().rev().find(|s| s.pid == top.pid) else {
        return out;
    };
    for t in &s.threads {
        if d.loops.iter().any(|l| l.pid == s.pid && l.tid == t.tid) {
            continue;
        }
        let frames: Vec<_> = rec.stack(t.stack).collect();
        if let Some(app) = frames
            .iter()
            .find(|f| frames::origin(rec.str(f.file)) == Origin::App)
        {
            out.push(WaitedFor {
                name: rec.thread_name(t).unwrap_or("?").to_owned(),
                tid: t.tid,
                at: label(rec, app),
                leaf: frames.first().map(|f| label(rec, f)).unwrap_or_default(),
                state: loops::activity(rec, s, t).to_string(),
            });
        }
    }
    out
}
