//! Finding the application's event-loop threads and classifying each of their samples.
//!
//! A thread runs an asyncio loop when its stack holds `BaseEventLoop.run_forever`
//! (`asyncio.base_events`); callbacks run above `Handle._run` (`asyncio.events`) and an idle
//! loop sits in a `selectors` `select`. uvloop's loop is Cython and invisible: the thread's
//! stack holds a Python loop entry (`Runner.run`, `asyncio.run`, uvicorn's `Server.run`...)
//! with no `BaseEventLoop` frame, callbacks sit directly above that entry, and an idle loop's
//! innermost frame *is* the entry. Threads of thread pools (`ThreadPoolExecutor-*`,
//! `AnyIO worker thread`, `asyncio_*`) and loops that are not the application's (gunicorn's
//! control socket) are never loop threads. Idle vs busy is decided by frames, never by
//! py-spy's racy `active` flag; what a busy loop is doing comes from the GIL flag, the OS
//! state and the syscall.

use super::memo;
use crate::recording::frames::{self, Origin};
use crate::recording::{FrameDef, Recording, Sample, ThreadSample};
use serde::Serialize;
use std::collections::BTreeMap;

/// Which loop implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopKind {
    /// The pure-Python asyncio loop.
    Asyncio,
    /// uvloop (or another loop implemented in C).
    Uvloop,
}

/// An event-loop thread of a process.
#[derive(Debug, Clone, Serialize)]
pub struct LoopThread {
    /// Process id.
    pub pid: u32,
    /// OS thread id.
    pub tid: u32,
    /// Thread name.
    pub name: String,
    /// Loop kind.
    pub kind: LoopKind,
}

/// Why a thread waits in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitReason {
    /// `time.sleep` and friends.
    Sleep,
    /// Socket or pipe I/O.
    Socket,
    /// Waiting for a child process.
    ChildProcess,
    /// A lock, condition, queue, join.
    Lock,
    /// Disk I/O (or uninterruptible sleep).
    Disk,
    /// Anything else, or unknown.
    Other,
}

impl WaitReason {
    /// The reason's name as used in JSON and the catalog.
    pub fn name(self) -> &'static str {
        match self {
            WaitReason::Sleep => "sleep",
            WaitReason::Socket => "socket",
            WaitReason::ChildProcess => "child-process",
            WaitReason::Lock => "lock",
            WaitReason::Disk => "disk",
            WaitReason::Other => "other",
        }
    }
}

/// What a thread was doing in one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activity {
    /// Executing Python bytecode (holds the GIL).
    OnCpu,
    /// Running native code with the GIL released.
    Native,
    /// Blocked in the kernel.
    Waiting(WaitReason),
    /// Waiting for the GIL another thread holds.
    GilWait,
}

impl std::fmt::Display for WaitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `on-cpu`, `native`, `gil-wait`, or `waiting (REASON)`: how text outputs say it.
impl std::fmt::Display for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Activity::Waiting(r) => write!(f, "waiting ({r})"),
            a => f.write_str(a.name()),
        }
    }
}

/// An [`Activity`] without its wait reason: what summary.json calls a `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivityKind {
    /// Executing Python bytecode.
    OnCpu,
    /// Native code, GIL released.
    Native,
    /// Blocked in the kernel.
    Waiting,
    /// Waiting for the GIL.
    GilWait,
}

impl ActivityKind {
    /// `on-cpu`, `native`, `waiting` or `gil-wait`.
    pub fn name(self) -> &'static str {
        match self {
            ActivityKind::OnCpu => "on-cpu",
            ActivityKind::Native => "native",
            ActivityKind::Waiting => "waiting",
            ActivityKind::GilWait => "gil-wait",
        }
    }
}

impl std::fmt::Display for ActivityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The time-split label of an idle event loop (see [`Activity::label`]).
pub const IDLE_LABEL: &str = "idle";

/// The prefix of a waiting activity's time-split label (`waiting:socket`).
pub const WAITING_LABEL_PREFIX: &str = "waiting:";

impl Activity {
    /// `on-cpu`, `native`, `waiting` or `gil-wait`.
    pub fn name(self) -> &'static str {
        self.kind().name()
    }

    /// The activity without its wait reason.
    pub fn kind(self) -> ActivityKind {
        match self {
            Activity::OnCpu => ActivityKind::OnCpu,
            Activity::Native => ActivityKind::Native,
            Activity::Waiting(_) => ActivityKind::Waiting,
            Activity::GilWait => ActivityKind::GilWait,
        }
    }

    /// The key of this activity in a time split (a finding's `state_mix`, a thread's shares):
    /// `on-cpu`, `native`, `gil-wait`, or `waiting:REASON` (`waiting:socket`). Kept as a
    /// string so the JSON maps keep their alphabetical order.
    pub fn label(self) -> String {
        match self {
            Activity::Waiting(r) => format!("{WAITING_LABEL_PREFIX}{}", r.name()),
            a => a.name().to_owned(),
        }
    }

    /// The wait reason, when waiting.
    pub fn wait_reason(self) -> Option<WaitReason> {
        match self {
            Activity::Waiting(r) => Some(r),
            _ => None,
        }
    }
}

/// A loop-thread sample, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopState {
    /// Waiting for events: nothing to do.
    Idle,
    /// The loop's own bookkeeping between callbacks (asyncio only; tiny).
    Overhead,
    /// Running a callback; `anchor` is the index (innermost first) of the frame the callback
    /// frames sit on, so frames `0..anchor` are the callback's.
    Busy {
        /// What the thread was doing.
        activity: Activity,
        /// Index of the loop anchor frame in the stack.
        anchor: usize,
    },
    /// Ready to run but waiting for the GIL (looks idle by frames; the syscall says futex).
    GilWait,
    /// The stack holds no loop (startup, shutdown).
    NotLoop,
}

const WORKER_NAME_PREFIXES: &[&str] = &["ThreadPoolExecutor-", "AnyIO worker thread", "asyncio_"];

/// (module, function) of Python frames that start a loop implemented in C (uvloop) and so
/// sit directly under its callbacks.
const LOOP_ENTRIES: &[(&str, &str)] = &[
    ("asyncio.runners", "Runner.run"),
    ("asyncio.runners", "run"),
    ("uvicorn._compat", "asyncio_run"),
    ("uvicorn.server", "Server.run"),
    ("uvloop", "run"),
];

fn is(rec: &Recording, f: &FrameDef, module: &str, function: &str) -> bool {
    frames::function_matches(function, rec.str(f.name))
        && frames::module_in(&memo::module_of(rec, f), module)
}

/// The [`StackFacts`] of every stack, by stack id (a per-recording cache).
struct AllStackFacts(Vec<StackFacts>);

/// The loop facts of a stack, computed once per stack and cached on the recording.
pub fn stack_facts(rec: &Recording, stack: u32) -> std::borrow::Cow<'_, StackFacts> {
    let all = &rec
        .derived
        .get_or_init(|| {
            AllStackFacts(
                (0..rec.stacks.len() as u32)
                    .map(|id| StackFacts::of(rec, id))
                    .collect(),
            )
        })
        .0;
    match all.get(stack as usize) {
        Some(f) => std::borrow::Cow::Borrowed(f),
        None => std::borrow::Cow::Owned(StackFacts::of(rec, stack)),
    }
}

/// What a stack alone says about an event loop (computed once per stack, [`stack_facts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackFacts {
    /// The loop kind the stack shows, if any.
    pub kind: Option<LoopKind>,
    /// An asyncio loop's `run_forever` is on the stack.
    run_forever: bool,
    /// Index of the innermost `Handle._run` (asyncio callback anchor).
    handle_anchor: Option<usize>,
    /// Index of the innermost loop-entry frame (uvloop anchor).
    uvloop_anchor: Option<usize>,
    /// The innermost frame is in `selectors` (an asyncio loop waiting for events).
    leaf_in_selectors: bool,
    /// The innermost frame is a threading/queue/futures/multiprocessing primitive.
    leaf_lock_primitive: bool,
}

impl StackFacts {
    /// Computes the facts of stack `id`.
    pub fn of(rec: &Recording, id: u32) -> StackFacts {
        let stack: Vec<&FrameDef> = rec.stack(id).collect();
        let leaf = stack.first();
        StackFacts {
            kind: stack_loop_kind(rec, &stack),
            run_forever: has_run_forever(rec, &stack),
            handle_anchor: stack
                .iter()
                .position(|f| is(rec, f, "asyncio.events", "Handle._run")),
            uvloop_anchor: uvloop_anchor(rec, &stack),
            leaf_in_selectors: leaf.is_some_and(|f| memo::module_of(rec, f) == "selectors"),
            leaf_lock_primitive: leaf.is_some_and(|f| lock_primitive(rec, f)),
        }
    }
}

fn has_run_forever(rec: &Recording, stack: &[&FrameDef]) -> bool {
    stack
        .iter()
        .any(|f| is(rec, f, "asyncio.base_events", "BaseEventLoop.run_forever"))
}

/// Index of the innermost loop-entry frame (uvloop anchor).
fn uvloop_anchor(rec: &Recording, stack: &[&FrameDef]) -> Option<usize> {
    stack
        .iter()
        .position(|f| LOOP_ENTRIES.iter().any(|(m, func)| is(rec, f, m, func)))
}

fn foreign_loop(rec: &Recording, stack: &[&FrameDef]) -> bool {
    stack
        .iter()
        .any(|f| frames::module_in(&memo::module_of(rec, f), "gunicorn.ctl"))
}

/// The loop kind a single stack shows, if any.
fn stack_loop_kind(rec: &Recording, stack: &[&FrameDef]) -> Option<LoopKind> {
    if foreign_loop(rec, stack) {
        return None;
    }
    if has_run_forever(rec, stack) {
        Some(LoopKind::Asyncio)
    } else if uvloop_anchor(rec, stack).is_some() {
        Some(LoopKind::Uvloop)
    } else {
        None
    }
}

/// Finds the application's event-loop threads: threads (not pool workers) whose stacks show a
/// loop in at least half of their samples.
pub fn find_loop_threads(rec: &Recording) -> Vec<LoopThread> {
    #[derive(Default)]
    struct Count {
        name_id: Option<u32>,
        samples: usize,
        asyncio: usize,
        uvloop: usize,
    }
    let mut counts: BTreeMap<(u32, u32), Count> = BTreeMap::new();
    // The loop kind depends on the stack only: classify each distinct stack once.
    let mut kind_of: std::collections::HashMap<u32, Option<LoopKind>> =
        std::collections::HashMap::new();
    for s in &rec.samples {
        for t in &s.threads {
            let c = counts.entry((s.pid, t.tid)).or_default();
            if t.name.is_some() {
                c.name_id = t.name;
            }
            c.samples += 1;
            let kind = *kind_of
                .entry(t.stack)
                .or_insert_with(|| stack_facts(rec, t.stack).kind);
            match kind {
                Some(LoopKind::Asyncio) => c.asyncio += 1,
                Some(LoopKind::Uvloop) => c.uvloop += 1,
                None => {}
            }
        }
    }
    counts
        .into_iter()
        .map(|(k, c)| {
            (
                k,
                c.name_id
                    .map(|id| rec.str(id).to_owned())
                    .unwrap_or_default(),
                c,
            )
        })
        .filter(|(_, name, _)| !WORKER_NAME_PREFIXES.iter().any(|p| name.starts_with(p)))
        .filter(|(_, _, c)| 2 * (c.asyncio + c.uvloop) >= c.samples && c.samples > 0)
        .map(|((pid, tid), name, c)| LoopThread {
            pid,
            tid,
            name,
            kind: if c.asyncio >= c.uvloop {
                LoopKind::Asyncio
            } else {
                LoopKind::Uvloop
            },
        })
        .collect()
}

fn lock_primitive(rec: &Recording, f: &FrameDef) -> bool {
    let m = memo::module_of(rec, f);
    [
        "threading",
        "queue",
        "concurrent.futures",
        "multiprocessing",
    ]
    .iter()
    .any(|p| frames::module_in(&m, p))
}

/// The wait reason a syscall implies (with the leaf frame and its source line for the
/// ambiguous `select`, which Python ≤ 3.10 uses for `time.sleep`).
pub fn wait_reason(syscall: &str, leaf_source: Option<&str>) -> WaitReason {
    match syscall {
        "clock_nanosleep" | "nanosleep" => WaitReason::Sleep,
        "select" | "pselect6" => {
            if leaf_source.is_some_and(|s| s.contains("sleep(")) {
                WaitReason::Sleep
            } else {
                WaitReason::Socket
            }
        }
        "poll" | "ppoll" | "epoll_wait" | "epoll_pwait" | "epoll_pwait2" | "recvfrom"
        | "recvmsg" | "recvmmsg" | "sendto" | "sendmsg" | "sendmmsg" | "connect" | "accept"
        | "accept4" | "read" | "readv" | "write" | "writev" => WaitReason::Socket,
        "wait4" | "waitid" => WaitReason::ChildProcess,
        "futex" | "flock" | "semop" => WaitReason::Lock,
        "fsync" | "fdatasync" | "sync_file_range" | "sync" | "syncfs" | "open" | "openat"
        | "unlink" | "unlinkat" | "rename" | "truncate" | "ftruncate" | "fallocate" | "stat"
        | "fstat" | "lstat" | "newfstatat" | "statx" | "getdents" | "getdents64" | "msync"
        | "pread64" | "pwrite64" | "preadv" | "pwritev" | "io_getevents" | "io_uring_enter"
        | "copy_file_range" | "sendfile" | "mkdir" => WaitReason::Disk,
        _ => WaitReason::Other,
    }
}

/// What any thread was doing in a sample, from its GIL flag, OS state and syscall. A futex
/// wait whose innermost frame is not a threading/queue/futures primitive, while another thread
/// of the process holds the GIL, is a GIL wait.
pub fn activity(rec: &Recording, sample: &Sample, t: &ThreadSample) -> Activity {
    if t.gil {
        return Activity::OnCpu;
    }
    match t.state {
        'R' => Activity::Native,
        'D' => Activity::Waiting(WaitReason::Disk),
        _ => match t.syscall.as_deref() {
            Some("running") => Activity::Native,
            Some("futex") => {
                let other_holds_gil = sample.threads.iter().any(|o| o.tid != t.tid && o.gil);
                if other_holds_gil && !stack_facts(rec, t.stack).leaf_lock_primitive {
                    Activity::GilWait
                } else {
                    Activity::Waiting(WaitReason::Lock)
                }
            }
            Some(sc) => {
                // Only `select` needs the leaf's source line (time.sleep on Python <= 3.10).
                let leaf_source = match sc {
                    "select" | "pselect6" => {
                        rec.stack(t.stack).next().and_then(|f| rec.source_line(f))
                    }
                    _ => None,
                };
                Activity::Waiting(wait_reason(sc, leaf_source))
            }
            None => Activity::Waiting(WaitReason::Other),
        },
    }
}

/// Classifies one sample of a loop thread.
pub fn classify(rec: &Recording, lt: &LoopThread, sample: &Sample, t: &ThreadSample) -> LoopState {
    let facts = stack_facts(rec, t.stack);
    let idle_looking = |t: &ThreadSample| {
        // After epoll returns, the loop re-takes the GIL: a futex wait here is a GIL wait.
        if t.syscall.as_deref() == Some("futex") && !t.gil {
            LoopState::GilWait
        } else {
            LoopState::Idle
        }
    };
    match lt.kind {
        LoopKind::Asyncio => {
            if !facts.run_forever {
                return LoopState::NotLoop;
            }
            if let Some(anchor) = facts.handle_anchor {
                return LoopState::Busy {
                    activity: activity(rec, sample, t),
                    anchor,
                };
            }
            if facts.leaf_in_selectors {
                idle_looking(t)
            } else {
                LoopState::Overhead
            }
        }
        LoopKind::Uvloop => match facts.uvloop_anchor {
            None => LoopState::NotLoop,
            Some(0) => idle_looking(t),
            Some(anchor) => LoopState::Busy {
                activity: activity(rec, sample, t),
                anchor,
            },
        },
    }
}

/// The samples of a loop thread (its process's ticks in which the thread appears), in order.
pub fn samples_of<'r>(rec: &'r Recording, lt: &LoopThread) -> Vec<&'r Sample> {
    rec.samples
        .iter()
        .filter(|s| s.pid == lt.pid && s.threads.iter().any(|t| t.tid == lt.tid))
        .collect()
}

/// Index of the innermost application frame below `anchor`, if any.
pub fn app_frame(rec: &Recording, stack: &[&FrameDef], anchor: usize) -> Option<usize> {
    (0..anchor).find(|&i| frames::origin(rec.str(stack[i].file)) == Origin::App)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::testing::*;

    const ST: &str = "/usr/lib/python3.11";
    const SP: &str = "/venv/lib/python3.11/site-packages";

    fn asyncio_base() -> Vec<crate::recording::RawFrame> {
        vec![
            frame(
                "BaseEventLoop.run_forever",
                &format!("{ST}/asyncio/base_events.py"),
                607,
            ),
            frame("Runner.run", &format!("{ST}/asyncio/runners.py"), 118),
            frame("Server.run", &format!("{SP}/uvicorn/server.py"), 86),
            frame("<module>", "/venv/bin/uvicorn", 8),
        ]
    }

    fn uvloop_base() -> Vec<crate::recording::RawFrame> {
        vec![
            frame("Runner.run", &format!("{ST}/asyncio/runners.py"), 118),
            frame("asyncio_run", &format!("{SP}/uvicorn/_compat.py"), 30),
            frame("Server.run", &format!("{SP}/uvicorn/server.py"), 86),
            frame("<module>", "/venv/bin/uvicorn", 8),
        ]
    }

    fn with(
        top: &[crate::recording::RawFrame],
        base: Vec<crate::recording::RawFrame>,
    ) -> Vec<crate::recording::RawFrame> {
        let mut v = top.to_vec();
        v.extend(base);
        v
    }

    #[test]
    fn finds_both_loop_kinds_and_ignores_workers_and_gunicorn_control_loops() {
        let idle_asyncio = with(
            &[
                frame("EpollSelector.select", &format!("{ST}/selectors.py"), 468),
                frame(
                    "BaseEventLoop._run_once",
                    &format!("{ST}/asyncio/base_events.py"),
                    1884,
                ),
            ],
            asyncio_base(),
        );
        let ctl = with(
            &[frame(
                "EpollSelector.select",
                &format!("{ST}/selectors.py"),
                468,
            )],
            vec![
                frame(
                    "BaseEventLoop.run_forever",
                    &format!("{ST}/asyncio/base_events.py"),
                    607,
                ),
                frame(
                    "ControlSocketServer._run_loop",
                    &format!("{SP}/gunicorn/ctl/server.py"),
                    197,
                ),
            ],
        );
        let worker = vec![frame(
            "_worker",
            &format!("{ST}/concurrent/futures/thread.py"),
            81,
        )];
        let mut b = RecordingBuilder::new(header(1, 100.0));
        for i in 0..4 {
            b.sample(
                1,
                i * 10_000,
                0,
                &[
                    thread(
                        1,
                        "MainThread",
                        'S',
                        "epoll_wait",
                        false,
                        idle_asyncio.clone(),
                    ),
                    thread(
                        2,
                        "Thread-1 (_run_loop)",
                        'S',
                        "epoll_wait",
                        false,
                        ctl.clone(),
                    ),
                    thread(
                        3,
                        "ThreadPoolExecutor-0_0",
                        'S',
                        "futex",
                        false,
                        worker.clone(),
                    ),
                ],
            );
            b.sample(
                5,
                i * 10_000,
                0,
                &[thread(
                    5,
                    "MainThread",
                    'S',
                    "epoll_pwait",
                    false,
                    uvloop_base(),
                )],
            );
        }
        let rec = b.finish(end(40_000, 8));
        let loops = find_loop_threads(&rec);
        assert_eq!(loops.len(), 2, "{loops:?}");
        assert_eq!(
            (loops[0].pid, loops[0].tid, loops[0].kind),
            (1, 1, LoopKind::Asyncio)
        );
        assert_eq!(
            (loops[1].pid, loops[1].tid, loops[1].kind),
            (5, 5, LoopKind::Uvloop)
        );
        for s in &rec.samples {
            let lt = loops.iter().find(|l| l.pid == s.pid).unwrap();
            let t = s.threads.iter().find(|t| t.tid == lt.tid).unwrap();
            assert_eq!(classify(&rec, lt, s, t), LoopState::Idle);
        }
    }

    #[test]
    fn classifies_busy_samples_by_flags_state_and_syscall_not_by_active() {
        let cb = |top: &str| {
            with(
                &[
                    frame(top, "/srv/app/views.py", 12),
                    frame(
                        "RequestResponseCycle.run_asgi",
                        &format!("{SP}/uvicorn/protocols/http/httptools_impl.py"),
                        422,
                    ),
                ],
                uvloop_base(),
            )
        };
        let lt = LoopThread {
            pid: 1,
            tid: 1,
            name: "MainThread".into(),
            kind: LoopKind::Uvloop,
        };
        let cases = [
            (
                thread(1, "MainThread", 'R', "running", true, cb("crunch")),
                LoopState::Busy {
                    activity: Activity::OnCpu,
                    anchor: 2,
                },
            ),
            (
                thread(1, "MainThread", 'R', "running", false, cb("report_sql")),
                LoopState::Busy {
                    activity: Activity::Native,
                    anchor: 2,
                },
            ),
            (
                thread(
                    1,
                    "MainThread",
                    'S',
                    "clock_nanosleep",
                    false,
                    cb("rate_limited"),
                ),
                LoopState::Busy {
                    activity: Activity::Waiting(WaitReason::Sleep),
                    anchor: 2,
                },
            ),
            (
                thread(1, "MainThread", 'S', "wait4", false, cb("convert")),
                LoopState::Busy {
                    activity: Activity::Waiting(WaitReason::ChildProcess),
                    anchor: 2,
                },
            ),
            (
                thread(1, "MainThread", 'D', "fsync", false, cb("export")),
                LoopState::Busy {
                    activity: Activity::Waiting(WaitReason::Disk),
                    anchor: 2,
                },
            ),
            (
                thread(1, "MainThread", 'S', "poll", false, cb("fetch")),
                LoopState::Busy {
                    activity: Activity::Waiting(WaitReason::Socket),
                    anchor: 2,
                },
            ),
            // Idle frames with a futex: waiting to re-take the GIL.
            (
                thread(1, "MainThread", 'S', "futex", false, uvloop_base()),
                LoopState::GilWait,
            ),
        ];
        let mut b = RecordingBuilder::new(header(1, 100.0));
        for (i, (t, _)) in cases.iter().enumerate() {
            b.sample(1, i as u64 * 10_000, 0, std::slice::from_ref(t));
        }
        let rec = b.finish(end(70_000, 7));
        for (s, (_, want)) in rec.samples.iter().zip(cases.iter()) {
            assert_eq!(classify(&rec, &lt, s, &s.threads[0]), *want);
        }
        // A futex wait while another thread holds the GIL is a GIL wait.
        let mut b = RecordingBuilder::new(header(1, 100.0));
        b.sample(
            1,
            0,
            0,
            &[
                thread(1, "MainThread", 'S', "futex", false, cb("handler")),
                thread(
                    9,
                    "cruncher",
                    'R',
                    "running",
                    true,
                    vec![frame("crunch", "/srv/app/jobs.py", 5)],
                ),
            ],
        );
        let rec = b.finish(end(10_000, 1));
        let s = &rec.samples[0];
        assert_eq!(activity(&rec, s, &s.threads[0]), Activity::GilWait);
    }
}
