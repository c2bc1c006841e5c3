//! One sampler thread per Python process: attach with py-spy, then tick at the requested rate.
//!
//! Each tick reads, in this order: the process's CPU time, then for every known Python thread
//! its OS state and current syscall (before stopping it, since a ptrace stop changes both),
//! then stops only the Python threads with ptrace ([`crate::capture::stop`]: every thread is
//! interrupted before any is waited for; not uvloop's or other native threads), reads every
//! Python thread's frame chain with py-spy (`LockingStrategy::AlreadyLocked`) and resumes
//! them from py-spy's callback (`get_stack_traces_then`) before names, files and line numbers
//! are read from the (immutable) code objects. The stop lasts only as long as the frame-chain
//! read; the locks are released when their guards drop, and if loopprof dies the kernel
//! detaches and resumes the threads. Results go to the writer
//! through a channel; nothing here touches the recording file.

use super::procfs::{self, Syscall};
use super::route::{self, route_label};
use super::syscalls;
use super::CaptureError;
use crate::capture::stop::StoppedThread;
use crate::recording::{GcSample, ProcessInfo, RawFrame, RawThread, TaskState, TickMeta};
use py_spy::config::LockingStrategy;
use py_spy::{Config, PythonSpy};
use remoteprocess::ProcessMemory;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What sampler threads tell the writer.
#[derive(Debug)]
pub enum Msg {
    /// The process is attached and will be sampled.
    Attached(ProcessInfo),
    /// The process will not be sampled.
    Skipped {
        /// What is known of it.
        info: ProcessInfo,
        /// Why, as an error the caller can report (for the root process) or log.
        error: CaptureError,
    },
    /// One successful tick.
    Sample {
        /// What the tick says of itself (process, times, CPU, GC, threads lost), as written.
        tick: TickMeta,
        /// Every Python thread that could be read.
        threads: Vec<RawThread>,
    },
    /// One failed tick.
    Error {
        /// Process id.
        pid: u32,
        /// Microseconds since the recording started.
        t_us: u64,
        /// `"lock"` or `"read"`.
        kind: &'static str,
        /// The error.
        message: String,
    },
    /// The route table of an ASGI router met for the first time: (route, endpoint).
    Routes {
        /// Process id.
        pid: u32,
        /// Each route and the name stacks give its endpoint function.
        routes: Vec<(String, String)>,
    },
    /// One read of the process's asyncio tasks.
    Tasks {
        /// What the read says of itself (`tasks` empty: they are in `tasks` below).
        snapshot: crate::recording::TaskSnapshot,
        /// The tasks.
        tasks: Vec<crate::recording::RawTask>,
    },
    /// The process ran `execve`: its sampler attached to the new image (`info`, with its
    /// Python version), or, with `info: None`, could not (the new image is not Python) and
    /// stopped.
    Exec {
        /// Process id.
        pid: u32,
        /// Microseconds since the recording started.
        t_us: u64,
        /// The process as it is now, when re-attached.
        info: Option<ProcessInfo>,
    },
    /// The process was found frozen (`by`: its freezer cgroup, see
    /// [`procfs::frozen_by`]) or, with `by: None`, running again after that.
    Frozen {
        /// Process id.
        pid: u32,
        /// Microseconds since the recording started.
        t_us: u64,
        /// What froze it; `None` when it was thawed.
        by: Option<String>,
    },
    /// The process exited or can no longer be read; its sampler has stopped.
    Exited {
        /// Process id.
        pid: u32,
        /// Microseconds since the recording started.
        t_us: u64,
    },
}

/// A task read taking `d` puts the next one at least `d * TASK_READ_SHARE` after it.
const TASK_READ_SHARE: u32 = 20;

/// A py-spy frame as the recording writer takes it.
fn raw_frame(f: &py_spy::Frame) -> RawFrame {
    RawFrame {
        name: f.name.clone(),
        file: f.filename.clone(),
        line: f.line,
    }
}

/// Counters shared by every sampler, read by the progress display and the end record.
#[derive(Debug, Default)]
pub struct Counters {
    /// Successful ticks.
    pub samples: AtomicU64,
    /// Failed ticks.
    pub errors: AtomicU64,
    /// Ticks started more than one period late.
    pub late: AtomicU64,
    /// Ticks skipped because the sampler fell behind.
    pub missed: AtomicU64,
    /// Total microseconds threads were stopped.
    pub stopped_us: AtomicU64,
    /// Python threads left out of a tick because their stack could not be read.
    pub lost_threads: AtomicU64,
    /// Stacks truncated at py-spy's frame limit.
    pub truncated: AtomicU64,
    /// Ticks put off by the duty cycle.
    pub throttled: AtomicU64,
    /// Thread stacks read without stopping the thread (in uninterruptible sleep, checked not
    /// to have run during the read).
    pub unstopped_reads: AtomicU64,
    /// Thread samples whose stack was not read again: the thread had not run since its
    /// last verified read ([`ProcessSampler::unchanged`]).
    pub unchanged_reads: AtomicU64,
}

/// What every sampler shares.
#[derive(Clone)]
pub struct SamplerContext {
    /// The recording's time origin.
    pub start: Instant,
    /// Sampling period.
    pub period: Duration,
    /// What to stop while reading.
    pub locking: Locking,
    /// Most of the time a target may be held stopped (0 to 1): a tick that held it `d`
    /// puts the next one off to at least `d / max_stop_share` after its start.
    pub max_stop_share: f64,
    /// Time between two reads of the asyncio tasks (`None`: not read).
    pub task_interval: Option<Duration>,
    /// Set to stop every sampler.
    pub stop: Arc<AtomicBool>,
    /// Shared counters.
    pub counters: Arc<Counters>,
    /// Where results go.
    pub tx: Sender<Msg>,
}

/// What a sampler stops while it reads stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locking {
    /// Stop only the Python threads, with loopprof's own ptrace locks (the default).
    PythonThreads,
    /// Stop every OS thread of the process, as py-spy does by default. Also used for the
    /// first tick, and when the Python threads' OS ids cannot be found.
    AllThreads,
    /// Stop nothing (`--nonblocking`): no pause, but reads can fail or tear.
    None,
}

impl Locking {
    /// The name written in the recording header.
    pub fn name(self) -> &'static str {
        match self {
            Locking::PythonThreads => "python-threads",
            Locking::AllThreads => "all-threads",
            Locking::None => "none",
        }
    }
}

/// What is known of a process before attaching.
pub fn describe(pid: u32) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: procfs::process_stat(pid).map(|s| s.ppid).unwrap_or(0),
        cmdline: procfs::cmdline(pid).unwrap_or_default(),
        python_version: String::new(),
        exe: procfs::exe(pid),
    }
}

/// Whether an error is a permission error: anywhere in its chain, an `EPERM`/`EACCES` from
/// the OS (as `std::io::Error`, `nix::Errno` or remoteprocess's error wrapping either).
fn denied(err: &anyhow::Error) -> bool {
    use nix::errno::Errno;
    let errno_denied = |e: Errno| matches!(e, Errno::EPERM | Errno::EACCES);
    let io_denied = |e: &std::io::Error| {
        e.kind() == std::io::ErrorKind::PermissionDenied
            || matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
    };
    err.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            io_denied(e)
        } else if let Some(e) = cause.downcast_ref::<Errno>() {
            errno_denied(*e)
        } else if let Some(e) = cause.downcast_ref::<remoteprocess::Error>() {
            match e {
                remoteprocess::Error::IOError(e) => io_denied(e),
                remoteprocess::Error::NixError(e) => errno_denied(*e),
                _ => false,
            }
        } else {
            false
        }
    })
}

/// Turns a py-spy attach error into a [`CaptureError`] that says how to fix it, classified
/// by the types in its chain (not by its text).
pub fn classify_attach_error(pid: u32, err: &anyhow::Error) -> CaptureError {
    let text = format!("{err:#}");
    if !procfs::is_alive(pid) {
        return CaptureError::Exited { pid };
    }
    if denied(err) {
        // py-spy's own context ("check if it is running") misleads for a running process.
        let detail = text
            .replace("Failed to open process - check if it is running.: ", "")
            .replace(" - check if it is running.", "");
        return CaptureError::PermissionDenied {
            pid,
            detail,
            help: super::permission_help(pid),
        };
    }
    if err.chain().any(|c| c.is::<py_spy::UnsupportedVersion>()) {
        return CaptureError::UnsupportedPython { pid, detail: text };
    }
    CaptureError::NotPython {
        pid,
        cmdline: procfs::cmdline(pid).unwrap_or_default().join(" "),
        detail: text,
    }
}

/// Attaches py-spy to `pid`, retrying until `patience` has passed (a just-started process may
/// not have loaded its interpreter yet).
pub fn attach(pid: u32, nonblocking: bool, patience: Duration) -> Result<PythonSpy, CaptureError> {
    let config = Config {
        blocking: if nonblocking {
            LockingStrategy::NonBlocking
        } else {
            LockingStrategy::AlreadyLocked
        },
        collect_thread_names: true,
        // The sampler reads every thread's state itself before stopping it.
        thread_activity: false,
        ..Config::default()
    };
    // A traced process cannot be stopped by us: every tick would fail. Say who holds it.
    // (A hold of a moment, such as another sampler's stop, is waited out.)
    if !nonblocking {
        let until = Instant::now() + Duration::from_millis(100);
        while let Some((tracer, comm)) = procfs::tracer_of(pid) {
            if Instant::now() >= until {
                return Err(CaptureError::AlreadyTraced { pid, tracer, comm });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let deadline = Instant::now() + patience;
    loop {
        // py-spy probes memory it does not know yet while attaching; a panic there is one
        // more failed attempt, never a dead sampler.
        let attempt = std::panic::catch_unwind(|| PythonSpy::new(pid as py_spy::Pid, &config))
            .unwrap_or_else(|p| Err(anyhow::anyhow!("py-spy panicked: {}", panic_text(&p))));
        let err = match attempt {
            Ok(spy) => {
                // py-spy also reads 2.7 and 3.3-3.7 (and attaches to free-threaded builds
                // it cannot read): loopprof's analyses cover 3.8-3.15 with the GIL.
                return match super::doctor::unsupported_python(pid, &spy.version) {
                    None => Ok(spy),
                    Some(why) => Err(CaptureError::UnsupportedPython { pid, detail: why }),
                };
            }
            Err(e) => classify_attach_error(pid, &e),
        };
        let retry = matches!(err, CaptureError::NotPython { .. }) && Instant::now() < deadline;
        if !retry {
            return Err(err);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The message of a caught panic.
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Maps py-spy's Python thread ids (`pthread_t`, the address of glibc's `struct pthread`) to
/// OS thread ids for Python < 3.11, where py-spy without libunwind cannot. The offset of the
/// `tid` field inside `struct pthread` is found once per process by looking for the process's
/// own thread ids in each thread's struct.
#[derive(Default)]
struct TidMapper {
    offset: Option<usize>,
    cache: HashMap<u64, u32>,
}

const PTHREAD_SCAN_BYTES: usize = 2048;

impl TidMapper {
    /// The thread id stored in each `pthread_t` among `tids`, the process's thread ids as its
    /// own pid namespace numbers them (what glibc stores).
    fn map(
        &mut self,
        spy: &PythonSpy,
        tids: &HashSet<u32>,
        pthread_ids: &[u64],
    ) -> HashMap<u64, u32> {
        let mut out = HashMap::new();
        if self.offset.is_none() {
            let mut votes: HashMap<usize, usize> = HashMap::new();
            for &p in pthread_ids {
                let Ok(bytes) = spy.process.copy(p as usize, PTHREAD_SCAN_BYTES) else {
                    continue;
                };
                for off in (0..PTHREAD_SCAN_BYTES - 4).step_by(4) {
                    let v = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap());
                    if tids.contains(&v) {
                        *votes.entry(off).or_default() += 1;
                    }
                }
            }
            // The offset at which every thread holds one of the process's tids.
            self.offset = votes
                .into_iter()
                .filter(|(_, n)| *n == pthread_ids.len())
                .map(|(off, _)| off)
                .min();
        }
        let Some(off) = self.offset else {
            return out;
        };
        for &p in pthread_ids {
            if let Some(t) = self.cache.get(&p).filter(|t| tids.contains(t)) {
                out.insert(p, *t);
                continue;
            }
            let mut buf = [0u8; 4];
            if spy.process.read(p as usize + off, &mut buf).is_ok() {
                let t = u32::from_ne_bytes(buf);
                if tids.contains(&t) {
                    self.cache.insert(p, t);
                    out.insert(p, t);
                }
            }
        }
        out
    }
}

/// The thread ids the interpreter reports, in the target's own pid namespace, turned into
/// loopprof's. In a nested pid namespace (a container seen from the host) the interpreter's
/// ids are the container's (1, 2, 3, ...), which in loopprof's namespace name unrelated
/// processes; they are translated through `NSpid` of every thread in `/proc/PID/task`, so
/// an id with no thread of the target behind it maps to nothing and is never stopped.
struct ThreadIdSpace {
    nested: bool,
    /// Own-namespace id → loopprof's id, for every thread of the target (nested only).
    map: HashMap<u32, u32>,
}

impl ThreadIdSpace {
    fn new(pid: u32) -> Self {
        ThreadIdSpace {
            nested: procfs::in_nested_pid_namespace(pid),
            map: HashMap::new(),
        }
    }

    fn refresh(&mut self, pid: u32) {
        if let Ok(m) = procfs::thread_ids_by_own_namespace(pid) {
            self.map = m;
        }
    }

    /// The target's thread ids as it numbers them itself.
    fn own_ids(&mut self, pid: u32) -> HashSet<u32> {
        if !self.nested {
            return procfs::thread_ids(pid)
                .unwrap_or_default()
                .into_iter()
                .collect();
        }
        self.refresh(pid);
        self.map.keys().copied().collect()
    }

    /// loopprof's id of each own-namespace id (0 stays 0: unknown; so does an id that no
    /// thread of the target carries).
    fn translate(&mut self, pid: u32, own: &[u32]) -> Vec<u32> {
        if !self.nested {
            return own.to_vec();
        }
        if own.iter().any(|t| *t != 0 && !self.map.contains_key(t)) {
            self.refresh(pid);
        }
        own.iter()
            .map(|t| self.map.get(t).copied().unwrap_or(0))
            .collect()
    }
}

/// One read of every stack: the stacks, how long the threads were stopped, and the threads
/// read without a stop (see [`ProcessSampler::read_stacks`]).
type StackRead = (Vec<py_spy::StackTrace>, Duration, HashSet<u32>);

/// Threads stopped for one read, and those that were not (see [`lock_threads`]).
type Locks = (Vec<StoppedThread>, Vec<u32>);

/// Stops the given threads of `pid` with ptrace ([`StoppedThread::stop_all`]); they resume
/// when the returned guards drop. Threads that exited meanwhile are skipped; an id that is not
/// a thread of `pid` is never stopped and fails the tick. Also returns the threads that did
/// not stop in time (in uninterruptible sleep): read without a stop.
fn lock_threads(pid: u32, tids: &[u32]) -> Result<Locks, String> {
    crate::capture::stop::release_left_seized(false);
    StoppedThread::stop_all(pid, tids)
}

/// Stops every thread of `pid` but those in `skip`, again until no new thread appeared
/// meanwhile.
fn lock_all_threads(pid: u32, skip: &HashSet<u32>) -> Result<Locks, String> {
    let mut locks: Locks = (Vec::new(), Vec::new());
    let mut done: HashSet<u32> = skip.clone();
    for _ in 0..10 {
        let tids: Vec<u32> = procfs::thread_ids(pid)
            .map_err(|e| format!("listing threads of {pid}: {e}"))?
            .into_iter()
            .filter(|t| !done.contains(t))
            .collect();
        if tids.is_empty() {
            return Ok(locks);
        }
        done.extend(tids.iter().copied());
        let (stopped, late) = lock_threads(pid, &tids)?;
        locks.0.extend(stopped);
        locks.1.extend(late);
    }
    Ok(locks)
}

fn syscall_name(s: Syscall) -> Option<String> {
    match s {
        Syscall::Running => Some("running".to_owned()),
        Syscall::Nr(nr) => Some(syscalls::name(nr)),
        Syscall::Unknown => None,
    }
}

/// What the OS says about a thread, read just before it is stopped.
#[derive(Debug, Clone)]
struct ThreadOs {
    state: char,
    syscall: Option<String>,
    /// The syscall's arguments (those of the call being restarted after our own stop).
    args: Option<[u64; 6]>,
    /// `[on CPU ns, waiting for a CPU ns]`.
    sched: Option<[u64; 2]>,
    /// `[on CPU ns, times run on a CPU]`: unchanged between two reads means the thread did
    /// not run in between.
    runs: Option<[u64; 2]>,
}

/// The duty cycle's burst: stopped time a sampler may spend at once before ticks are put
/// off, seconds.
const STOP_BURST_S: f64 = 0.05;

/// A thread's stack as last read without it having run during the read, and its run time
/// and run count (`schedstat`) then: while both are unchanged the thread has not been on a
/// CPU since, so its Python stack is the same (only a thread changes its own frames).
struct Held {
    runs: [u64; 2],
    trace: py_spy::StackTrace,
}

/// What a tick read: the stacks, their OS thread ids, the threads' OS state before the read,
/// the threads that ran while read without a stop (torn), and those not stopped (read
/// without a stop, or not read again).
struct Read {
    traces: Vec<py_spy::StackTrace>,
    tids: Vec<u32>,
    before: HashMap<u32, ThreadOs>,
    torn: HashSet<u32>,
    not_stopped: HashSet<u32>,
}

/// The first read of a tick that needs a second one ([`ProcessSampler::tick`]).
struct Pass {
    read: Read,
    t_us: u64,
    /// The thread list could not be followed to its end: the second read reads every thread.
    cut: bool,
}

/// A tick's two reads merged: the first read of every thread not read again, then the
/// second read.
fn merge(first: Read, second: Read, redo: &HashSet<u32>) -> Read {
    let mut before = first.before;
    before.extend(second.before);
    let mut torn: HashSet<u32> = first
        .torn
        .into_iter()
        .filter(|t| !redo.contains(t))
        .collect();
    torn.extend(second.torn);
    let mut not_stopped: HashSet<u32> = first
        .not_stopped
        .into_iter()
        .filter(|t| !redo.contains(t))
        .collect();
    not_stopped.extend(second.not_stopped);
    let (mut traces, mut tids): (Vec<_>, Vec<_>) = first
        .traces
        .into_iter()
        .zip(first.tids)
        .filter(|(_, tid)| !redo.contains(tid))
        .unzip();
    traces.extend(second.traces);
    tids.extend(second.tids);
    Read {
        traces,
        tids,
        before,
        torn,
        not_stopped,
    }
}

/// How a tick ended.
enum Tick {
    /// Sampled, or failed and counted: go on.
    Done,
    /// The process is gone.
    Gone,
    /// The process runs a new image (`execve`): attach again.
    Exec,
}

/// The per-process sampling loop. Runs until `ctx.stop` is set or the process goes away.
pub struct ProcessSampler {
    pid: u32,
    spy: PythonSpy,
    ctx: SamplerContext,
    locking: Locking,
    /// OS ids of the Python threads seen in the last tick.
    python_tids: Vec<u32>,
    tid_mapper: TidMapper,
    id_space: ThreadIdSpace,
    clock_tick_us: u64,
    /// Per thread, the last syscall read that was not `restart_syscall`, with its arguments.
    last_syscall: HashMap<u32, (String, Option<[u64; 6]>)>,
    /// What waiting threads wait on.
    waits: super::waits::WaitTargets,
    /// The `/proc` files read every tick, kept open.
    proc_files: procfs::ProcFiles,
    /// Router objects whose route table was read (they live as long as the application).
    routers: HashSet<usize>,
    /// The application's import string from the command line, until its route table was
    /// read (or given up on), and when to try next.
    app_import: Option<(String, String)>,
    app_routes_next: Instant,
    app_routes_tries: u32,
    /// (route, endpoint) pairs already sent.
    routes_sent: HashSet<(String, String)>,
    /// The process is frozen (by its freezer cgroup), as last said.
    frozen: bool,
    /// How long the last tick held threads stopped.
    last_stopped: Duration,
    /// The duty cycle's budget of stopped time, seconds (negative: in debt), as of
    /// `budget_at`.
    stop_budget: f64,
    budget_at: Instant,
    /// The image the process runs (`startstack`, see [`procfs::Stat::startstack`]).
    image: u64,
    /// When the freezer may be looked at again (at most once a second).
    frozen_next_check: Instant,
    /// When the asyncio tasks are read next.
    tasks_next: Instant,
    /// Per Python thread (OS id), its last stack read while it could not run
    /// ([`Held`]); used instead of a read while the thread has not run since.
    held: HashMap<u32, Held>,
    /// The garbage collector's state as last read.
    last_gc: Option<GcSample>,
    /// Per thread, its run time and run count, syscall and arguments at its last
    /// [`Self::thread_state`]: while the first are unchanged and it sleeps, so is the rest.
    last_wait: HashMap<u32, LastWait>,
}

/// A thread's run time and run count, syscall and its arguments, as last read.
type LastWait = ([u64; 2], Option<String>, Option<[u64; 6]>);

impl ProcessSampler {
    /// A sampler for an attached process.
    pub fn new(pid: u32, spy: PythonSpy, ctx: SamplerContext) -> Self {
        let locking = ctx.locking;
        ProcessSampler {
            pid,
            spy,
            ctx,
            locking,
            python_tids: Vec::new(),
            tid_mapper: TidMapper::default(),
            id_space: ThreadIdSpace::new(pid),
            last_syscall: HashMap::new(),
            waits: super::waits::WaitTargets::new(pid),
            proc_files: procfs::ProcFiles::new(pid),
            routers: HashSet::new(),
            app_import: crate::recording::cmdline::app_import_string(
                &procfs::cmdline(pid).unwrap_or_default(),
            ),
            app_routes_next: Instant::now(),
            app_routes_tries: 0,
            routes_sent: HashSet::new(),
            frozen: false,
            last_stopped: Duration::ZERO,
            stop_budget: STOP_BURST_S,
            budget_at: Instant::now(),
            image: procfs::process_stat(pid).map(|s| s.startstack).unwrap_or(0),
            frozen_next_check: Instant::now(),
            tasks_next: Instant::now(),
            held: HashMap::new(),
            last_gc: None,
            last_wait: HashMap::new(),
            clock_tick_us: 1_000_000 / procfs::clock_ticks_per_second().max(1),
        }
    }

    fn now_us(&self) -> u64 {
        self.ctx.start.elapsed().as_micros() as u64
    }

    /// Samples until told to stop or the process exits.
    pub fn run(self) {
        self.sample_until_stopped();
        // Threads that did not stop in time are still seized: let them go before leaving.
        crate::capture::stop::release_left_seized(true);
    }

    /// One read without a stop, before the first tick, whose stacks are dropped: it fills the
    /// code cache, so that the first samples already know where each ASGI frame keeps its
    /// `scope` (a cold read cannot tell the request a stack serves, and the stall analysis
    /// then merges that sample with the next request's; see `asgi_scopes_known`). Stops
    /// nothing; a torn read only costs a cache entry.
    fn warm_code_cache(&mut self) {
        self.spy.config.blocking = LockingStrategy::NonBlocking;
        let spy = &mut self.spy;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            spy.get_stack_traces_then(&mut || {})
        }));
    }

    fn sample_until_stopped(mut self) {
        // (`self` is replaced when the process execs.)
        self.warm_code_cache();
        let period = self.ctx.period;
        let mut next = Instant::now();
        loop {
            // Wait for the tick in short naps so a stop request is honoured quickly.
            loop {
                if self.ctx.stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                if now >= next {
                    break;
                }
                std::thread::sleep((next - now).min(Duration::from_millis(50)));
            }
            let started = Instant::now();
            let late = started - next;
            if late > period {
                self.ctx.counters.late.fetch_add(1, Ordering::Relaxed);
                let missed = (late.as_nanos() / period.as_nanos().max(1)) as u64;
                self.ctx
                    .counters
                    .missed
                    .fetch_add(missed, Ordering::Relaxed);
                next = started;
            }
            next += period;
            let outcome = self.tick(late.as_micros().min(u32::MAX as u128) as u32);
            // The duty cycle, as a token bucket: stopping time is earned at max_stop_share of
            // the time that passes (up to a burst of 50 ms) and spent by each tick's stops. A
            // lone slow stop (a thread waiting for a CPU) is absorbed; long stops tick after
            // tick (thousands of threads, very deep stacks) put the next tick off until the
            // budget is back, so the target runs at least 1 - max_stop_share of the time.
            let now = Instant::now();
            let share = self.ctx.max_stop_share;
            self.stop_budget = (self.stop_budget + (now - self.budget_at).as_secs_f64() * share)
                .min(STOP_BURST_S)
                - self.last_stopped.as_secs_f64();
            self.budget_at = now;
            if self.stop_budget < 0.0 {
                let earliest = now + Duration::from_secs_f64(-self.stop_budget / share);
                if earliest > next {
                    next = earliest;
                    self.ctx.counters.throttled.fetch_add(1, Ordering::Relaxed);
                }
            }
            match outcome {
                Tick::Done => self.read_tasks(),
                Tick::Gone => {
                    let _ = self.ctx.tx.send(Msg::Exited {
                        pid: self.pid,
                        t_us: self.now_us(),
                    });
                    return;
                }
                Tick::Exec => {
                    // A new image: everything known of the old one is void. Attach again
                    // (the new interpreter may take a moment to load).
                    let (pid, ctx) = (self.pid, self.ctx.clone());
                    let t_us = self.now_us();
                    let nonblocking = ctx.locking == Locking::None;
                    match attach(pid, nonblocking, Duration::from_secs(3)) {
                        Ok(spy) => {
                            let mut info = describe(pid);
                            info.python_version = spy.version.to_string();
                            let _ = ctx.tx.send(Msg::Exec {
                                pid,
                                t_us,
                                info: Some(info),
                            });
                            crate::capture::stop::release_left_seized(true);
                            self = ProcessSampler::new(pid, spy, ctx);
                            self.warm_code_cache();
                            next = Instant::now();
                        }
                        Err(_) => {
                            let _ = ctx.tx.send(Msg::Exec {
                                pid,
                                t_us,
                                info: None,
                            });
                            return;
                        }
                    }
                }
            }
        }
    }

    /// One tick.
    fn tick(&mut self, late_us: u32) -> Tick {
        let pid = self.pid;
        self.last_stopped = Duration::ZERO;
        let cpu_us = match self.proc_files.process_stat() {
            Ok(st) if st.state != 'Z' && st.state != 'X' => {
                (st.utime + st.stime) * self.clock_tick_us
            }
            _ => return Tick::Gone,
        };
        // Up to two reads. The first reads every Python thread that ran since its last read
        // (a thread that did not keeps that read: `unchanged`); those in uninterruptible sleep
        // are read without a stop, the others stopped. The second, only when needed, reads
        // again, stopped, the threads that appeared since the last tick (not stopped the
        // first time), or every thread after a thread list that could not be followed; the
        // others keep their first read.
        let mut first: Option<Pass> = None;
        let mut redo: HashSet<u32> = HashSet::new();
        let mut read_total = Duration::ZERO;
        let (
            Read {
                traces,
                tids,
                before,
                torn,
                not_stopped,
            },
            t_us,
        ) = loop {
            let second = first.is_some();
            let before: HashMap<u32, ThreadOs> = self
                .pass_targets(second, &redo)
                .into_iter()
                .map(|tid| (tid, self.thread_state(tid)))
                .collect();
            if !second {
                self.watch_freezer(&before);
            }
            // Decided from what was read before any stack is: a thread is stopped, read
            // without a stop, or not read at all by what it was doing at this moment, never by
            // what happens during the read (which would sample some threads later than others).
            let unchanged = if second {
                HashSet::new()
            } else {
                self.unchanged(&before)
            };
            let asleep = self.asleep(&before, &unchanged, second);
            let t_us = self.now_us();
            // A second read after a first that could not follow the whole thread list reads
            // (and stops) everything, as `redo` then lists every thread.
            let stop_only: Option<Vec<u32>> = second.then(|| redo.iter().copied().collect());
            if let Some(f) = first.as_ref().filter(|f| !f.cut) {
                self.spy.only_threads = Some(
                    f.read
                        .tids
                        .iter()
                        .zip(&f.read.traces)
                        .filter(|(tid, _)| redo.contains(tid))
                        .map(|(_, t)| t.thread_id)
                        .collect(),
                );
            }
            self.spy.skip_threads = unchanged
                .iter()
                .filter_map(|tid| self.held.get(tid))
                .map(|h| h.trace.thread_id)
                .collect();
            // Every known Python thread unchanged: unless a thread state was added since the
            // last read (the list's head moved), there is nothing to read at all.
            let all_unchanged = !unchanged.is_empty()
                && before.keys().all(|t| unchanged.contains(t))
                && self.spy.thread_list_head != 0;
            self.spy.quick_head = all_unchanged.then_some(self.spy.thread_list_head);
            let read = self.read_stacks(&asleep, &unchanged, stop_only.as_deref());
            self.spy.only_threads = None;
            self.spy.skip_threads.clear();
            self.spy.quick_head = None;
            let (traces, read, unstopped) = match read {
                Ok(t) => t,
                Err((kind, message)) => return self.read_failed(t_us, kind, message),
            };
            read_total += read;
            if self.locking != Locking::None {
                self.last_stopped += read;
                self.ctx
                    .counters
                    .stopped_us
                    .fetch_add(read.as_micros() as u64, Ordering::Relaxed);
            }
            let (mut traces, mut tids) = self.thread_ids_of(traces);
            let torn = self.torn(&unstopped, &before);
            self.hold_unstopped(&traces, &tids, &unstopped, &torn, &before);
            if !unchanged.is_empty() {
                self.add_unchanged(&unchanged, &mut traces, &mut tids);
            }
            let cut = !second && self.list_cut(&tids);
            let mut not_stopped = unstopped;
            not_stopped.extend(unchanged);
            let read = Read {
                traces,
                tids,
                before,
                torn,
                not_stopped,
            };
            if let Some(f) = first.take() {
                break (merge(f.read, read, &redo), f.t_us);
            }
            self.learn_threads(&read.tids, cut);
            redo = self.rereads(&read, cut);
            if redo.is_empty() {
                break (read, t_us);
            }
            first = Some(Pass { read, t_us, cut });
        };
        // The threads read while asleep (stopped, or without a stop but not held: a cold read,
        // see `hold_unstopped`): read them once more, now, without a stop, so that the next
        // ticks can leave them alone until they run.
        let verify: Vec<(u32, u64)> = tids
            .iter()
            .zip(&traces)
            .filter(|(tid, _)| {
                before.get(tid).is_some_and(|os| os.state == 'S')
                    && !torn.contains(tid)
                    && self
                        .held
                        .get(tid)
                        .is_none_or(|h| Some(h.runs) != before.get(tid).and_then(|os| os.runs))
            })
            .map(|(tid, t)| (*tid, t.thread_id))
            .collect();
        self.send_sample(
            Read {
                traces,
                tids,
                before,
                torn,
                not_stopped,
            },
            TickMeta {
                lost: 0,
                gc: None,
                pid,
                t_us,
                read_us: read_total.as_micros().min(u32::MAX as u128) as u32,
                late_us,
                cpu_us,
            },
        );
        if self.locking == Locking::PythonThreads && !verify.is_empty() {
            self.hold_verified(&verify);
        }
        Tick::Done
    }

    /// The Python threads whose last held stack ([`Held`]) is still theirs: not running or
    /// runnable now (`S` or `D` as read in `before`) and with the same run time and run count
    /// as when that stack was read. Only when stopping just the Python threads (the other
    /// modes keep their meaning: every thread stopped, or nothing).
    fn unchanged(&self, before: &HashMap<u32, ThreadOs>) -> HashSet<u32> {
        if self.locking != Locking::PythonThreads {
            return HashSet::new();
        }
        before
            .iter()
            .filter(|(tid, os)| {
                (os.state == 'S' || os.state == 'D')
                    && os.runs.is_some()
                    && self.held.get(tid).map(|h| h.runs) == os.runs
            })
            .map(|(tid, _)| *tid)
            .collect()
    }

    /// Puts the held stacks of the `unchanged` threads into a read (replacing a thread state
    /// of the same OS id that has no frames: one not started yet, see
    /// [`Self::thread_ids_of`]), and counts them.
    fn add_unchanged(
        &mut self,
        unchanged: &HashSet<u32>,
        traces: &mut Vec<py_spy::StackTrace>,
        tids: &mut Vec<u32>,
    ) {
        let mut i = 0;
        while i < tids.len() {
            if unchanged.contains(&tids[i]) {
                tids.remove(i);
                traces.remove(i);
            } else {
                i += 1;
            }
        }
        let mut n = 0;
        for tid in unchanged {
            if let Some(h) = self.held.get(tid) {
                traces.push(h.trace.clone());
                tids.push(*tid);
                n += 1;
            }
        }
        self.ctx
            .counters
            .unchanged_reads
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Holds the stacks read without a stop that were checked not to have run during the
    /// read ([`Self::torn`]): they stay right until the thread runs again.
    fn hold_unstopped(
        &mut self,
        traces: &[py_spy::StackTrace],
        tids: &[u32],
        unstopped: &HashSet<u32>,
        torn: &HashSet<u32>,
        before: &HashMap<u32, ThreadOs>,
    ) {
        if self.locking != Locking::PythonThreads {
            return;
        }
        for (t, tid) in traces.iter().zip(tids) {
            // A stack read with a cold code cache may serve a request without saying which
            // (`asgi_scopes_known`): held, it would stand for the thread until it runs, so a
            // stall could not be told from the request after it. Not held, it is read again
            // (with the cache warm) by this tick's verifying read or the next tick.
            if unstopped.contains(tid) && !torn.contains(tid) && t.asgi_scopes_known {
                if let Some(runs) = before.get(tid).and_then(|os| os.runs) {
                    self.held.insert(
                        *tid,
                        Held {
                            runs,
                            trace: t.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Reads `threads` (OS id, Python thread id) again without stopping them, after the tick
    /// that read them (stopped, or unstopped but not held), and holds the stacks of those
    /// that did not run during the read: run time and run count (`schedstat`) read before
    /// their state, both before the stack and unchanged after it, the state not runnable,
    /// every frame's code known (`asgi_scopes_known`). A thread that ran is read again at
    /// its next tick. This read is never a sample; it only lets the next ticks leave a thread
    /// alone until it runs.
    fn hold_verified(&mut self, threads: &[(u32, u64)]) {
        let mut runs: HashMap<u32, [u64; 2]> = HashMap::new();
        for (tid, _) in threads {
            let r = self.proc_files.thread_schedstat(*tid).map(|s| [s[0], s[2]]);
            let state = self.proc_files.thread_stat(*tid).map(|s| s.state);
            if let (Some(r), Ok('S' | 'D')) = (r, state) {
                runs.insert(*tid, r);
            }
        }
        if runs.is_empty() {
            return;
        }
        self.spy.only_threads = Some(
            threads
                .iter()
                .filter(|(tid, _)| runs.contains_key(tid))
                .map(|(_, id)| *id)
                .collect(),
        );
        self.spy.config.blocking = LockingStrategy::NonBlocking;
        let spy = &mut self.spy;
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            spy.get_stack_traces_then(&mut || {})
        }));
        self.spy.only_threads = None;
        let Ok(Ok(traces)) = read else {
            return;
        };
        let (traces, tids) = self.thread_ids_of(traces);
        for (trace, tid) in traces.into_iter().zip(tids) {
            let Some(r) = runs.get(&tid).copied() else {
                continue;
            };
            let after = self.proc_files.thread_schedstat(tid).map(|s| [s[0], s[2]]);
            let state = self.proc_files.thread_stat(tid).map(|s| s.state);
            if after == Some(r) && matches!(state, Ok('S' | 'D')) && trace.asgi_scopes_known {
                self.held.insert(tid, Held { runs: r, trace });
            }
        }
    }

    /// The threads whose OS state a read takes first: the second read's; before the first
    /// stop (Python threads not known yet) every thread, so that no state or syscall is ever
    /// read after one of our stops; else the Python threads of the last tick.
    fn pass_targets(&self, second: bool, redo: &HashSet<u32>) -> Vec<u32> {
        if second {
            redo.iter().copied().collect()
        } else if self.python_tids.is_empty() {
            procfs::thread_ids(self.pid).unwrap_or_default()
        } else {
            self.python_tids.clone()
        }
    }

    /// The threads read without a stop: a thread asleep in the kernel (`S`, or `D`:
    /// uninterruptible, where a stop would wait for it to wake) cannot change its Python stack
    /// until it wakes (those `unchanged` are not read at all). Each is checked after the read
    /// not to have run ([`Self::torn`]); in the first read of a tick one that ran is read
    /// again at once, stopped ([`Self::rereads`]). A second read (`second`) leaves only `D`
    /// threads unstopped, so that a thread read again is stopped; so does
    /// `--stop-all-threads`, which asks for every thread that can be stopped to be.
    fn asleep(
        &self,
        before: &HashMap<u32, ThreadOs>,
        unchanged: &HashSet<u32>,
        second: bool,
    ) -> HashSet<u32> {
        if self.locking == Locking::None {
            return HashSet::new();
        }
        before
            .iter()
            .filter(|(tid, os)| {
                os.runs.is_some()
                    && (os.state == 'D'
                        || (os.state == 'S' && !second && self.locking == Locking::PythonThreads))
                    && !unchanged.contains(tid)
            })
            .map(|(tid, _)| *tid)
            .collect()
    }

    /// A failed read: the process is gone, runs a new image (`execve`), or the tick failed
    /// (counted and sent as an error).
    fn read_failed(&mut self, t_us: u64, kind: &'static str, message: String) -> Tick {
        let pid = self.pid;
        if !procfs::is_alive(pid) {
            return Tick::Gone;
        }
        let image = procfs::process_stat(pid).map(|s| s.startstack).unwrap_or(0);
        if image != 0 && self.image != 0 && image != self.image {
            return Tick::Exec;
        }
        self.ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
        let _ = self.ctx.tx.send(Msg::Error {
            pid,
            t_us,
            kind,
            message,
        });
        Tick::Done
    }

    /// The threads read without a stop that ran meanwhile (their stacks could be torn): run
    /// time and run count (`schedstat`) changed since read before, or running/runnable now.
    /// (A stack was read before this check, so a thread that wakes after it changed nothing
    /// that was read.)
    fn torn(&mut self, unstopped: &HashSet<u32>, before: &HashMap<u32, ThreadOs>) -> HashSet<u32> {
        let torn: HashSet<u32> = unstopped
            .iter()
            .copied()
            .filter(|tid| {
                let ran_before = before.get(tid).and_then(|os| os.runs);
                let state = self.proc_files.thread_stat(*tid).map(|s| s.state);
                let ran_now = self.proc_files.thread_schedstat(*tid).map(|s| [s[0], s[2]]);
                ran_before.is_none() || ran_now != ran_before || state.ok() == Some('R')
            })
            .collect();
        self.ctx
            .counters
            .unstopped_reads
            .fetch_add((unstopped.len() - torn.len()) as u64, Ordering::Relaxed);
        torn
    }

    /// Whether a first read could not follow the interpreter's whole thread list (it changed
    /// under a read that did not stop the threads changing it), or missed a Python thread
    /// known from the last tick and still alive (the walk may end early without an error).
    fn list_cut(&self, tids: &[u32]) -> bool {
        self.spy.unreadable_threads.iter().any(|(id, _)| *id == 0)
            || self
                .python_tids
                .iter()
                .any(|t| !tids.contains(t) && crate::capture::stop::is_thread_of(self.pid, *t))
    }

    /// Learns the Python threads from a first read (a partial list adds to those known),
    /// keeps open only their files, and falls back to stopping every thread when an OS
    /// thread id is unknown.
    fn learn_threads(&mut self, tids: &[u32], cut: bool) {
        let seen = tids.iter().copied().filter(|t| *t != 0);
        if cut {
            for t in seen {
                if !self.python_tids.contains(&t) {
                    self.python_tids.push(t);
                }
            }
        } else {
            self.python_tids = seen.collect();
        }
        let keep: HashSet<u32> = self.python_tids.iter().copied().collect();
        self.proc_files.retain_threads(&keep);
        self.held.retain(|t, _| keep.contains(t));
        self.last_wait.retain(|t, _| keep.contains(t));
        // Without every OS thread id we cannot stop just the Python threads.
        if tids.contains(&0) && self.locking == Locking::PythonThreads {
            self.locking = Locking::AllThreads;
        }
    }

    /// What a first read leaves to read again, stopped: every thread after a cut list, and,
    /// when only the known Python threads were stopped, threads that appeared and threads
    /// read without a stop that ran during the read (torn). Such a thread is sampled a read's
    /// length later than the others (about 0.1-0.3 ms, a few ms on a loaded machine), with
    /// its state of that moment; dropping it instead would hide exactly the moments when
    /// threads wake.
    fn rereads(&mut self, read: &Read, cut: bool) -> HashSet<u32> {
        let mut redo: HashSet<u32> = HashSet::new();
        if cut && self.locking == Locking::PythonThreads {
            redo.extend(self.python_tids.iter().copied());
        }
        if self.locking == Locking::PythonThreads {
            redo.extend(
                read.tids
                    .iter()
                    .copied()
                    .filter(|t| *t != 0 && !read.before.contains_key(t)),
            );
            // Read without a stop but ran meanwhile (woke during the read): its stack may
            // be torn; read it again now, stopped, with its state of that moment.
            redo.extend(read.torn.iter().copied());
        }
        redo
    }

    /// Sends the sample of a tick's read: every thread not torn, with its OS state, what it
    /// waits on and the route it serves; torn and unreadable threads are counted as lost.
    /// The interpreter's GC state is read here, after the threads resumed (a collection lasts
    /// milliseconds, the gap from the stack read is a few microseconds).
    fn send_sample(&mut self, read: Read, mut meta: TickMeta) {
        let Read {
            traces,
            tids,
            before,
            torn,
            not_stopped,
        } = read;
        let mut threads = Vec::with_capacity(traces.len());
        let mut lost = self.spy.unreadable_threads.len() as u32;
        for (t, tid) in traces.into_iter().zip(tids) {
            if torn.contains(&tid) {
                lost += 1;
                continue;
            }
            let os = match before.get(&tid) {
                Some(s) => s.clone(),
                None if tid != 0 => self.thread_state(tid),
                None => ThreadOs {
                    state: '?',
                    syscall: None,
                    args: None,
                    sched: None,
                    runs: None,
                },
            };
            let stopped = self.locking != Locking::None && !not_stopped.contains(&tid);
            threads.push(self.raw_thread(t, tid, os, stopped));
        }
        meta.lost = lost;
        // No thread ran since the last read: the collector (which runs on a thread holding
        // the GIL) cannot have either.
        if !self.spy.quick_hit {
            self.last_gc = self.spy.gc_state().ok().flatten().map(|g| GcSample {
                collecting: g.collecting,
                collections: g.collections,
            });
        }
        meta.gc = self.last_gc;
        self.ctx.counters.samples.fetch_add(1, Ordering::Relaxed);
        self.ctx
            .counters
            .lost_threads
            .fetch_add(u64::from(lost), Ordering::Relaxed);
        let pid = meta.pid;
        let _ = self.ctx.tx.send(Msg::Sample {
            tick: meta,
            threads,
        });
        self.read_app_routes(pid);
    }

    /// One thread of a sample: its stack (truncated ones marked), OS state, what it waits on
    /// (cached while unchanged) and the route of the innermost ASGI scope.
    fn raw_thread(
        &mut self,
        t: py_spy::StackTrace,
        tid: u32,
        os: ThreadOs,
        stopped: bool,
    ) -> RawThread {
        let ThreadOs {
            state,
            syscall,
            args,
            sched,
            runs,
        } = os;
        let wait = match (&syscall, args) {
            (Some(sc), Some(a)) if state == 'S' || state == 'D' => {
                self.waits.describe(sc, &a, &self.spy.process)
            }
            _ => None,
        };
        let route = self.route_of(&t.asgi_scopes, &t.frames);
        RawThread {
            stopped,
            route,
            // The scope's address and its dict version tag: an address the allocator hands to the
            // next request's scope comes with another tag (3.8-3.13; see py-spy's
            // `asgi_request_version`), so back-to-back requests are not one callback.
            request: (t.asgi_request != 0)
                .then_some((t.asgi_request as u64, t.asgi_request_version)),
            tid,
            name: t.thread_name,
            // py-spy's own `active` reads /proc after our stop (always "stopped"); use the
            // same definition it uses, from our pre-stop read.
            active: if tid != 0 { state == 'R' } else { t.active },
            gil: t.owns_gil,
            state,
            syscall,
            sched,
            // Read before our stop, so our own stops of earlier ticks are in it, not this one.
            runs: runs.map(|r| r[1]),
            wait,
            frames: t
                .frames
                .iter()
                .map(raw_frame)
                .chain(t.truncated.then(|| {
                    self.ctx.counters.truncated.fetch_add(1, Ordering::Relaxed);
                    RawFrame {
                        name: crate::recording::TRUNCATED_FRAME.to_owned(),
                        file: crate::recording::TRUNCATED_FILE.to_owned(),
                        line: 0,
                    }
                }))
                .collect(),
        }
    }

    /// Reads the asyncio tasks when their interval has passed, without stopping anything, and
    /// sends them. A process without asyncio (or on a Python whose tasks are not read) is
    /// asked again ten intervals later; a failed read is dropped (it is retried next time); a
    /// slow read (thousands of tasks) spaces the next one ([`TASK_READ_SHARE`]).
    fn read_tasks(&mut self) {
        let Some(every) = self.ctx.task_interval else {
            return;
        };
        let started = Instant::now();
        if started < self.tasks_next {
            return;
        }
        self.tasks_next = started + every;
        let t_us = self.now_us();
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.spy.async_tasks(py_spy::tasks::TaskLimits::default())
        }));
        let snap = match read {
            Ok(Ok(Some(snap))) => snap,
            Ok(Ok(None)) => {
                self.tasks_next = started + every * 10;
                return;
            }
            _ => return,
        };
        let took = started.elapsed();
        let read_us = took.as_micros().min(u32::MAX as u128) as u32;
        // Reads run between ticks: one that takes long (thousands of tasks) spaces the next
        // so task reads take at most 1/TASK_READ_SHARE of the sampler's time.
        self.tasks_next = started + every.max(took * TASK_READ_SHARE);
        let tasks = snap
            .tasks
            .iter()
            .map(|t| crate::recording::RawTask {
                id: t.addr as u64,
                name: t.name.clone(),
                loop_id: t.loop_addr as u64,
                state: match t.state {
                    py_spy::tasks::TaskState::Created => TaskState::Created,
                    py_spy::tasks::TaskState::Suspended => TaskState::Suspended,
                    py_spy::tasks::TaskState::Running => TaskState::Running,
                },
                frames: t.frames.iter().map(raw_frame).collect(),
                waits_for: t.waiting_for.clone(),
                awaits: t.awaits.iter().map(|a| *a as u64).collect(),
                route: self.route_of(&t.asgi_scopes, &t.frames),
            })
            .collect();
        let _ = self.ctx.tx.send(Msg::Tasks {
            snapshot: crate::recording::TaskSnapshot {
                pid: self.pid,
                t_us,
                read_us,
                tasks: Vec::new(),
                unreadable: snap.unreadable.min(u32::MAX as usize) as u32,
                truncated: snap.truncated,
            },
            tasks,
        });
    }

    /// The route a stack serves (a thread's, or a task's await chain): the innermost frame's
    /// ASGI scope that reads as one (read after the resume; the scope dict lives as long as
    /// its request), marked when it runs a response's background task. A router met for the
    /// first time sends its route table.
    fn route_of(&mut self, scopes: &[usize], frames: &[py_spy::Frame]) -> Option<String> {
        let pid = self.pid;
        let route = scopes.iter().find_map(|&addr| {
            let scope = self.spy.asgi_scope(addr).ok().flatten()?;
            if scope.router != 0 && self.routers.len() < 64 && self.routers.insert(scope.router) {
                let routes: Vec<(String, String)> = self
                    .spy
                    .asgi_routes(scope.router)
                    .into_iter()
                    .map(|r| (r.route, r.endpoint))
                    .collect();
                self.send_routes(pid, routes);
            }
            route_label(&scope)
        })?;
        // Starlette runs a response's background tasks after the response, inside the
        // request's own ASGI call: say so (the work is not the request's handling).
        Some(
            if frames
                .iter()
                .any(|f| route::is_background_task(&f.filename))
            {
                format!("{route} (background task)")
            } else {
                route
            },
        )
    }

    /// The OS thread id of each stack (0 when unknown), in loopprof's pid namespace; a
    /// thread state that duplicates another's id is dropped (see below).
    fn thread_ids_of(
        &mut self,
        traces: Vec<py_spy::StackTrace>,
    ) -> (Vec<py_spy::StackTrace>, Vec<u32>) {
        let pid = self.pid;
        let pthread_ids: Vec<u64> = traces
            .iter()
            .filter(|t| t.os_thread_id.is_none())
            .map(|t| t.thread_id)
            .collect();
        let mapped = if pthread_ids.is_empty() {
            HashMap::new()
        } else {
            let own = self.id_space.own_ids(pid);
            self.tid_mapper.map(&self.spy, &own, &pthread_ids)
        };
        // The interpreter's ids are its own pid namespace's; translate them to ours.
        let own_tids: Vec<u32> = traces
            .iter()
            .map(|t| match t.os_thread_id {
                Some(id) => u32::try_from(id).unwrap_or(0),
                None => mapped.get(&t.thread_id).copied().unwrap_or(0),
            })
            .collect();
        let tids = self.id_space.translate(pid, &own_tids);
        // A thread state created for a thread not started yet carries its creator's OS id
        // until the new thread binds it (CPython 3.11+ `init_threadstate`), so one OS thread
        // can appear twice. Keep the state with frames (the creator's); the other is a thread
        // with nothing to show yet.
        let mut keep = vec![true; tids.len()];
        let mut first_of: HashMap<u32, usize> = HashMap::with_capacity(tids.len());
        for (i, &tid) in tids.iter().enumerate() {
            if tid == 0 {
                continue;
            }
            match first_of.entry(tid) {
                Entry::Vacant(v) => {
                    v.insert(i);
                }
                Entry::Occupied(mut o) => {
                    let j = *o.get();
                    if traces[j].frames.is_empty() && !traces[i].frames.is_empty() {
                        keep[j] = false;
                        o.insert(i);
                    } else {
                        keep[i] = false;
                    }
                }
            }
        }
        traces
            .into_iter()
            .zip(tids)
            .zip(keep)
            .filter_map(|(pair, k)| k.then_some(pair))
            .unzip()
    }

    /// Says when the process is frozen by its freezer cgroup (every thread in
    /// uninterruptible sleep is what a frozen process looks like; the cgroup is read then, at
    /// most once a second) and when it runs again.
    fn watch_freezer(&mut self, before: &HashMap<u32, ThreadOs>) {
        let all_asleep = !before.is_empty() && before.values().all(|os| os.state == 'D');
        let by = if all_asleep && !self.frozen && Instant::now() >= self.frozen_next_check {
            self.frozen_next_check = Instant::now() + Duration::from_secs(1);
            procfs::frozen_by(self.pid)
        } else {
            None
        };
        if by.is_some() || (self.frozen && !all_asleep) {
            self.frozen = by.is_some();
            let _ = self.ctx.tx.send(Msg::Frozen {
                pid: self.pid,
                t_us: self.now_us(),
                by,
            });
        }
    }

    /// Reads the route table of the application named on the command line, while the
    /// process runs (not stopped): at the first tick, then every 2 s until its module is
    /// imported (a server started by `record -- CMD`), at most 15 times.
    fn read_app_routes(&mut self, pid: u32) {
        let Some((module, attr)) = &self.app_import else {
            return;
        };
        if Instant::now() < self.app_routes_next {
            return;
        }
        let routes: Vec<(String, String)> = self
            .spy
            .asgi_app_routes(module, attr)
            .into_iter()
            .map(|r| (r.route, r.endpoint))
            .collect();
        self.app_routes_tries += 1;
        if !routes.is_empty() || self.app_routes_tries >= 15 {
            self.app_import = None;
        } else {
            self.app_routes_next = Instant::now() + Duration::from_secs(2);
        }
        self.send_routes(pid, routes);
    }

    /// Sends the routes not sent before.
    fn send_routes(&mut self, pid: u32, routes: Vec<(String, String)>) {
        let routes: Vec<(String, String)> = routes
            .into_iter()
            .filter(|r| self.routes_sent.len() < 4096 && self.routes_sent.insert(r.clone()))
            .collect();
        if !routes.is_empty() {
            let _ = self.ctx.tx.send(Msg::Routes { pid, routes });
        }
    }

    /// A thread's OS state and syscall. Our own ptrace stop interrupts a blocking call, which
    /// the kernel then resumes as `restart_syscall`; since every stop of this thread was
    /// preceded by a read of its syscall, the call being restarted is the last one read, and
    /// that is what gets recorded; without an earlier read, the call the thread's kernel wait
    /// channel names ([`procfs::syscall_of_wchan`]), else `restart_syscall` as read.
    fn thread_state(&mut self, tid: u32) -> ThreadOs {
        // State first, then run time and count: a thread asleep then whose run count is
        // unchanged since its last read has not been on a CPU from that read to this one
        // (the count grows when the thread is scheduled in), so it has not returned from its
        // system call, and that call and its arguments are the ones read then (not read
        // again). In the other order a thread could run and fall asleep elsewhere between
        // the two reads and be taken for unchanged.
        let state = self
            .proc_files
            .thread_stat(tid)
            .map(|s| s.state)
            .unwrap_or('?');
        let sched = self.proc_files.thread_schedstat(tid);
        let runs = sched.map(|s| [s[0], s[2]]);
        if let (Some(r), 'S' | 'D') = (runs, state) {
            if let Some((last_runs, syscall, args)) = self.last_wait.get(&tid) {
                if *last_runs == r {
                    return ThreadOs {
                        state,
                        syscall: syscall.clone(),
                        args: *args,
                        sched: sched.map(|s| [s[0], s[1]]),
                        runs,
                    };
                }
            }
        }
        let (raw, mut args) = self.proc_files.thread_syscall_args(tid);
        let mut syscall = syscall_name(raw);
        // A sleeping thread whose syscall file says "running" is one whose wait was
        // restarted after our stop (seen with timed futex waits): treat it as a restart.
        let restarted = match syscall.as_deref() {
            Some("restart_syscall") => true,
            Some("running") => state == 'S' || state == 'D',
            _ => false,
        };
        match syscall.as_deref() {
            // Without an earlier read (the wait began before this recording, or the thread
            // was running when its state was read and entered the call before our stop),
            // the wait channel names the call, else `restart_syscall` stays as read.
            _ if restarted => match self.last_syscall.get(&tid) {
                Some((prev, prev_args)) => {
                    syscall = Some(prev.clone());
                    args = *prev_args;
                }
                // The kernel's wait channel still names the call (its arguments are lost).
                None => {
                    syscall = self
                        .proc_files
                        .thread_wchan_syscall(tid)
                        .map(str::to_owned)
                        .or(syscall.filter(|s| s == "restart_syscall"));
                    args = None;
                }
            },
            Some("running") => {}
            Some(name) => {
                self.last_syscall.insert(tid, (name.to_owned(), args));
            }
            None => {}
        }
        match runs {
            Some(r) if state == 'S' || state == 'D' => {
                self.last_wait.insert(tid, (r, syscall.clone(), args));
            }
            _ => {
                self.last_wait.remove(&tid);
            }
        }
        ThreadOs {
            state,
            syscall,
            args,
            sched: sched.map(|s| [s[0], s[1]]),
            runs,
        }
    }

    /// Stops the threads as the locking mode says (with `only`, in the Python-threads mode,
    /// just those), reads every Python stack (or those `spy.only_threads` names), resumes.
    /// Returns the stacks, how long the threads were stopped (zero when none was; with
    /// `--nonblocking`, how long the read took), and the Python threads read without a stop:
    /// those in `asleep` (asleep in the kernel at the last look: they are not stopped) and
    /// those that did not stop in time. Threads in `unchanged` are neither stopped nor read
    /// (`spy.skip_threads` names them). The threads are resumed as soon as their frame
    /// chains are read; names, files and lines come from immutable code objects, read after.
    fn read_stacks(
        &mut self,
        asleep: &HashSet<u32>,
        unchanged: &HashSet<u32>,
        only: Option<&[u32]>,
    ) -> Result<StackRead, (&'static str, String)> {
        let start = Instant::now();
        let mut unstopped: HashSet<u32> = asleep.clone();
        // Every stop is our own (`StoppedThread`); py-spy only reads.
        let mut locks = match self.locking {
            Locking::None => {
                self.spy.config.blocking = LockingStrategy::NonBlocking;
                None
            }
            Locking::PythonThreads if !self.python_tids.is_empty() => {
                self.spy.config.blocking = LockingStrategy::AlreadyLocked;
                let tids: Vec<u32> = only
                    .unwrap_or(&self.python_tids)
                    .iter()
                    .copied()
                    .filter(|t| !asleep.contains(t) && !unchanged.contains(t))
                    .collect();
                let (stopped, late) = lock_threads(self.pid, &tids).map_err(|e| ("lock", e))?;
                unstopped.extend(late);
                Some(stopped)
            }
            // First tick (Python threads not known yet) or unknown OS ids: stop everything.
            _ => {
                self.spy.config.blocking = LockingStrategy::AlreadyLocked;
                let (stopped, late) =
                    lock_all_threads(self.pid, asleep).map_err(|e| ("lock", e))?;
                unstopped.extend(late);
                Some(stopped)
            }
        };
        // Nothing stopped (every thread asleep): nothing was held.
        let nothing_held = locks.as_ref().is_some_and(|l| l.is_empty());
        let stopped = locks.is_some();
        let mut resumed_at = None;
        let mut resume = || {
            if stopped && resumed_at.is_none() {
                locks = None;
                resumed_at = Some(start.elapsed());
            }
        };
        let spy = &mut self.spy;
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            spy.get_stack_traces_then(&mut resume)
        }));
        // On an error before py-spy resumed them, the threads resume here.
        resume();
        let held = match resumed_at {
            _ if nothing_held => Duration::ZERO,
            Some(d) => d,
            None => start.elapsed(),
        };
        match read {
            Ok(r) => r
                .map(|traces| (traces, held, unstopped))
                .map_err(|e| ("read", format!("{e:#}"))),
            // A panic reading racing memory is one failed tick (counted), not a dead sampler.
            Err(p) => Err(("read", format!("py-spy panicked: {}", panic_text(&p)))),
        }
    }
}
