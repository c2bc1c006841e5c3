//! The records of a recording file, as serde types.
//!
//! A recording is JSON Lines: one `{"type": ..., "data": ...}` envelope per line, written in
//! the order described in `docs/recording-format.md`. Strings, frames and stacks are interned:
//! each is defined once by a record carrying an `id`, and later records refer to the id. The
//! types here are the wire contract; bump [`FORMAT_VERSION`] when an existing field changes
//! meaning (adding optional fields does not need a bump).

use serde::{Deserialize, Serialize};

/// The wait target written for a socket not in the socket tables read so far (created since
/// their last read, at most 250 ms ago): not identified yet, rather than a target of its own.
/// Analyses prefer any identified target to it ([`crate::analysis`]'s wait targets).
pub const UNIDENTIFIED_SOCKET: &str = "socket";

/// The value of the header's `format` field.
pub const FORMAT_NAME: &str = "loopprof-recording";

/// The version of the recording format this build writes and reads.
/// Version 3 added the garbage collector's state to `tick` records (`gc`), version 4 the
/// HTTP route each thread was serving (`route`), version 5 the `frozen`/`thawed` process
/// events and what a tick could not read (`lost`, and the end record's `lost_threads`,
/// `truncated`, `throttled`), version 6 the asyncio task snapshots (`tasks`), version 7 which
/// thread samples stopped their thread (`stopped`: before it, every thread sample of the
/// blocking modes did); versions 1 to 6 are still read.
pub const FORMAT_VERSION: u32 = 7;

/// The unit of `tick` times a recording at `rate_hz` uses: a hundredth of the sampling period
/// (100 µs at 100 Hz, 10 µs at 1000 Hz), between 1 µs and 1 ms.
pub fn time_unit_for(rate_hz: f64) -> u32 {
    if rate_hz.is_nan() || rate_hz <= 0.0 {
        return 1;
    }
    ((1e6 / rate_hz / 100.0).floor() as u32).clamp(1, 1000)
}

/// One line of a recording file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Record {
    /// Always the first record.
    Header(Header),
    /// Defines an interned string.
    String(StringDef),
    /// Defines an interned Python frame (function, file, line).
    Frame(FrameDef),
    /// Defines an interned stack: a list of frame ids, innermost first.
    Stack(StackDef),
    /// The text of one source line, once per distinct (file, line) when the file was readable.
    Source(SourceLine),
    /// A process was attached, started, exited or skipped.
    Process(ProcessEvent),
    /// One sampling tick of one process with absolute values (version 1; still read).
    Sample(Sample),
    /// One sampling tick of one process, as differences from the previous tick of the same
    /// process (version 2; what loopprof writes). Readers turn it back into a [`Sample`].
    Tick(Tick),
    /// A sampling tick that failed (the failure is counted, never dropped silently).
    SampleError(SampleError),
    /// One GET of a `--probe` URL made while recording.
    Probe(ProbeResult),
    /// One route of an application's route table, with its endpoint function (version 4).
    Route(RouteDef),
    /// The asyncio tasks of one process at one instant (version 6).
    Tasks(TaskSnapshot),
    /// Always the last record of a complete recording.
    End(End),
}

impl Record {
    /// The `type` of every record this version reads, as written in the file. A record of
    /// one of these types that does not parse is corruption, never an unknown type to skip.
    pub const TYPES: &'static [&'static str] = &[
        "header",
        "string",
        "frame",
        "stack",
        "source",
        "process",
        "sample",
        "tick",
        "sample_error",
        "probe",
        "route",
        "tasks",
        "end",
    ];
}

/// What was recorded, by what, when and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// The format version, see [`FORMAT_VERSION`].
    pub version: u32,
    /// The loopprof version that wrote the file.
    pub loopprof_version: String,
    /// The py-spy crate version used to read stacks.
    pub py_spy_version: String,
    /// Wall-clock start of the recording, RFC 3339 in UTC. All `t_us` fields count from here.
    pub started_at: String,
    /// The requested sampling rate in Hz (the achieved rate comes from the samples).
    pub rate_hz: f64,
    /// Host name of the machine that recorded.
    pub host: String,
    /// How the target was chosen and what it is.
    pub target: Target,
    /// Sampling options in effect.
    pub options: CaptureOptionsRecord,
    /// Processes attached when the recording started (more may follow as `process` records).
    pub processes: Vec<ProcessInfo>,
    /// Kernel clock ticks per second used to convert `/proc/<pid>/stat` CPU times.
    pub clock_ticks_per_s: u64,
    /// The unit, in µs, of the times and scheduler figures of `tick` records
    /// ([`time_unit_for`] the rate; absent in version 1 files, meaning 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub time_unit_us: u32,
}

impl Header {
    /// The unit of `tick` times in µs (at least 1).
    pub fn time_unit(&self) -> u32 {
        self.time_unit_us.max(1)
    }
}

/// How the user named the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// `--pid`.
    Pid,
    /// `--name PATTERN`.
    Name,
    /// `-- COMMAND`, started by loopprof.
    Command,
    /// A spelling this version does not know (a newer writer).
    #[serde(other)]
    Other,
}

/// Why a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// `--duration` elapsed.
    #[default]
    Duration,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Every sampled process exited.
    TargetExited,
    /// The command loopprof started exited.
    CommandExited,
    /// A spelling this version does not know (a newer writer).
    #[serde(other)]
    Other,
}

impl EndReason {
    /// The JSON spelling (`target-exited`).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Duration => "duration",
            EndReason::Interrupted => "interrupted",
            EndReason::TargetExited => "target-exited",
            EndReason::CommandExited => "command-exited",
            EndReason::Other => "other",
        }
    }
}

impl TargetKind {
    /// The JSON spelling (`pid`, `name`, `command`).
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Pid => "pid",
            TargetKind::Name => "name",
            TargetKind::Command => "command",
            TargetKind::Other => "other",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The process the user pointed loopprof at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// `"pid"`, `"name"` or `"command"`.
    pub how: TargetKind,
    /// The root pid sampled (with its Python descendants unless disabled).
    pub pid: u32,
    /// The root process's command line.
    pub cmdline: Vec<String>,
    /// The `--name` pattern, when the target was chosen by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// Sampling options, as recorded in the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureOptionsRecord {
    /// `true` when stacks were read without stopping threads.
    pub nonblocking: bool,
    /// `true` when Python descendants of the target were sampled too.
    pub subprocesses: bool,
    /// What was stopped while reading: `"python-threads"`, `"all-threads"` or `"none"`.
    pub locking: String,
    /// Most of the time the target could be held stopped, percent (`--max-stop-pct`;
    /// version 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stop_pct: Option<f64>,
    /// Milliseconds between two reads of the asyncio tasks (`--task-interval`); `None` when
    /// tasks were not read (`--no-tasks`, or a recording older than version 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_interval_ms: Option<u32>,
}

/// A sampled process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Command line.
    pub cmdline: Vec<String>,
    /// Python version of the interpreter, e.g. `"3.11.7"`.
    pub python_version: String,
    /// Path of the executable.
    #[serde(default)]
    pub exe: String,
}

/// A process lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessEvent {
    /// Microseconds since the start of the recording.
    pub t_us: u64,
    /// What happened.
    pub event: ProcessEventKind,
    /// The process, with what is known of it.
    pub process: ProcessInfo,
    /// Why a process was skipped or how it ended, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Kinds of [`ProcessEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessEventKind {
    /// A Python process appeared after the recording started and is now sampled.
    Started,
    /// A sampled process exited (or could no longer be read).
    Exited,
    /// A descendant was not sampled (not Python, or could not be attached).
    Skipped,
    /// The process was found frozen by its freezer cgroup (`docker pause`); `detail` names
    /// the cgroup (version 5). It cannot run until thawed.
    Frozen,
    /// A frozen process runs again (version 5).
    Thawed,
    /// The process ran `execve` (version 5): its samples from here on are of the new image
    /// (`process` describes it); `detail` says whether it could be read.
    Exec,
}

/// An interned string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StringDef {
    /// Id referred to by other records.
    pub id: u32,
    /// The string.
    pub s: String,
}

/// An interned frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameDef {
    /// Id referred to by stacks.
    pub id: u32,
    /// String id of the function's qualified name (`co_qualname` on 3.11+, `co_name` before).
    pub name: u32,
    /// String id of the absolute file name as the target sees it.
    pub file: u32,
    /// Line number being executed (0 when unknown).
    pub line: i32,
}

/// An interned stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackDef {
    /// Id referred to by samples.
    pub id: u32,
    /// Frame ids, innermost (leaf) first.
    pub frames: Vec<u32>,
}

/// One source line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceLine {
    /// String id of the file name.
    pub file: u32,
    /// 1-based line number.
    pub line: i32,
    /// The line's text, without its trailing newline.
    pub text: String,
}

/// One tick of one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Process id.
    pub pid: u32,
    /// Microseconds since the start of the recording, taken just before the threads were stopped.
    pub t_us: u64,
    /// In blocking mode, how long the target's threads were stopped for this sample; with
    /// `--nonblocking`, how long the whole read took. Microseconds.
    pub read_us: u32,
    /// How far behind its schedule this tick started, in microseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub late_us: u32,
    /// Cumulative user+system CPU time of the whole process, in microseconds
    /// (from `/proc/<pid>/stat`, resolution one clock tick).
    pub cpu_us: u64,
    /// Every Python thread of the process.
    pub threads: Vec<ThreadSample>,
    /// The interpreter's garbage collector at this sample (version 3; CPython 3.9+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<GcSample>,
    /// Python threads whose stack could not be read in this tick (a thread exiting or
    /// starting while it was read), left out of `threads`. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost: u32,
}

/// The garbage collector's state at one sample, read from the interpreter's
/// `PyInterpreterState.gc` (CPython's `struct _gc_runtime_state`) just after the stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GcSample {
    /// A collection was running.
    pub collecting: bool,
    /// Collections so far of generations 0, 1 and 2 (`generation_stats[i].collections`).
    pub collections: [u64; 3],
}

/// The garbage collector in one [`Tick`]: whether a collection was running, and the
/// collections of each generation since the previous tick of the process (the first: so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TickGc {
    /// A collection was running.
    #[serde(default, skip_serializing_if = "is_false")]
    pub on: bool,
    /// Collections of generations 0, 1, 2 since the previous tick (loopprof writes 0 for
    /// generation 0, which is collected on most ticks of a busy process).
    #[serde(default, skip_serializing_if = "is_zeros")]
    pub dn: [u64; 3],
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zeros(v: &[u64; 3]) -> bool {
    *v == [0, 0, 0]
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// One tick of one process, each figure relative to the previous tick of the same process
/// (version 2). Times are in the header's `time_unit_us`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Process id.
    pub pid: u32,
    /// Time since the previous tick of this process (the first: since the start), in time
    /// units; the sample's time is the running sum times the unit.
    pub dt: u64,
    /// How long reading the stacks took, in microseconds (as [`Sample::read_us`]).
    pub read_us: u32,
    /// How far behind its schedule this tick started, in time units.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub late: u32,
    /// Process CPU time used since the previous tick of this process (the first: in total),
    /// in microseconds.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub dcpu_us: i64,
    /// Every Python thread of the process.
    pub threads: Vec<TickThread>,
    /// The garbage collector (version 3), when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<TickGc>,
    /// As [`Sample::lost`]. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost: u32,
}

/// One Python thread in one [`Tick`]: as [`ThreadSample`], with the scheduler times as
/// differences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TickThread {
    /// OS thread id (0 when unknown).
    pub tid: u32,
    /// String id of the thread's name, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<u32>,
    /// As [`ThreadSample::active`].
    pub active: bool,
    /// As [`ThreadSample::gil`].
    pub gil: bool,
    /// As [`ThreadSample::state`].
    pub state: char,
    /// As [`ThreadSample::syscall`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// Stack id.
    pub stack: u32,
    /// `[on CPU, waiting for a CPU]` scheduler times since this thread's previous tick in
    /// time units (the first: the cumulative times); the cumulative times, rounded down to
    /// whole units, are the running sums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsched: Option<[i64; 2]>,
    /// Times the thread was scheduled onto a CPU since its previous tick (the first: the
    /// cumulative count); optional (loopprof 0.1 recordings of version 5 written before it
    /// have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub druns: Option<i64>,
    /// As [`ThreadSample::wait`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u32>,
    /// As [`ThreadSample::route`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<u32>,
    /// As [`ThreadSample::req`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    /// As [`ThreadSample::stopped`] (version 7; absent when false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub stopped: bool,
}

/// One Python thread in one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadSample {
    /// OS thread id (0 when py-spy could not tell it, e.g. Python < 3.11).
    pub tid: u32,
    /// String id of the thread's name (`threading` name), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<u32>,
    /// py-spy's `active` flag (racy: read from /proc before the stop).
    pub active: bool,
    /// py-spy's `owns_gil` flag: this thread was executing Python bytecode.
    pub gil: bool,
    /// OS scheduler state from `/proc/<pid>/task/<tid>/stat`: `R`, `S`, `D`, ... (`?` unknown).
    pub state: char,
    /// Current system call from `/proc/<pid>/task/<tid>/syscall`: a name such as
    /// `clock_nanosleep`, `"running"` when in user space, or absent when unknown. Shared
    /// between the samples that name the same call (a recording holds millions of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<std::sync::Arc<str>>,
    /// Stack id.
    pub stack: u32,
    /// Cumulative scheduler times of the thread in ns, `[on CPU, runnable but waiting for a
    /// CPU]`, from `/proc/<pid>/task/<tid>/schedstat` (absent when unavailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sched: Option<[u64; 2]>,
    /// Cumulative times the thread was scheduled onto a CPU (schedstat's third field): each
    /// wake-up counts one, so an idle event loop's count grows with its timers only, and a
    /// serving one's with every request (absent when not recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<u64>,
    /// String id of what the thread waits on when blocked in a system call on a file
    /// descriptor (`tcp socket to 127.0.0.1:5432`, `pipe from child process 77 (...)`,
    /// `file /var/log/app.log`; version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u32>,
    /// String id of the HTTP route the thread's stack was serving, read from the ASGI
    /// `scope` argument of its innermost ASGI application frame: `GET /orders/{order_id}`,
    /// `WS /feed`, `lifespan` (version 4; see `docs/detection.md`, "Routes").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<u32>,
    /// Request number on this thread: changes when the request being served (the server's
    /// ASGI scope object in the outermost ASGI frame: its address and, on CPython 3.8-3.13,
    /// its dict version tag) changes between samples of the thread; absent when no ASGI
    /// frame was on the stack (version 4). Two samples with different numbers are different
    /// callbacks (or the scope was written to in between); equal numbers may still be two
    /// requests on CPython 3.14+ (an address reused by the allocator, no version tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    /// loopprof stopped this thread (ptrace) to read this sample. False for a thread read
    /// without a stop (in uninterruptible sleep) or not read again (it had not run since its
    /// last read), and with `--nonblocking`. Recordings before version 7 do not say: their
    /// blocking-mode samples load as stopped (as they nearly all were).
    #[serde(default, skip_serializing_if = "is_false")]
    pub stopped: bool,
}

/// One route of a process's ASGI application, read once per router object from
/// `scope["router"].routes` (Starlette and FastAPI; mounts followed): it names the route of
/// work whose stack carries no ASGI frame (a `def` route on a worker thread, a streaming body
/// in its own task) by its endpoint function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDef {
    /// Process id.
    pub pid: u32,
    /// `GET /orders/{order_id}`, `WS /feed` (methods joined by `,`; `?` when unknown).
    pub route: String,
    /// The endpoint function as stacks name it (qualname on 3.11+, name before).
    pub endpoint: String,
}

/// The asyncio tasks of one process at one instant: every live task of every event loop, read
/// from the target's memory without stopping it (`py_spy::tasks`, loopprof patch 13).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// Process id.
    pub pid: u32,
    /// Microseconds since the start of the recording.
    pub t_us: u64,
    /// Microseconds the read took.
    pub read_us: u32,
    /// The tasks.
    pub tasks: Vec<TaskRecord>,
    /// Registry entries that could not be read as tasks (freed or changing during the read).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreadable: u32,
    /// More tasks existed than were read (the limit is 10,000).
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

/// One asyncio task of a [`TaskSnapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task object's address: unique among the tasks of one snapshot; a task keeps it
    /// for its life (with `name`, it follows a task across snapshots).
    pub id: u64,
    /// String id of the task's name (`Task-N` unless the application named it).
    pub name: u32,
    /// The address of the task's event loop.
    #[serde(rename = "loop")]
    pub loop_id: u64,
    /// Where its coroutine is.
    pub state: TaskState,
    /// Stack id of the await chain: the coroutines from the innermost awaited one to the
    /// task's own (innermost first, as thread stacks).
    pub stack: u32,
    /// String id of the type of the future it waits for (`_asyncio.Future`,
    /// `_asyncio.Task`, `_GatheringFuture`), when it waits for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_for: Option<u32>,
    /// Ids of the tasks it awaits (an awaited task, or the children of a `gather`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awaits: Vec<u64>,
    /// String id of the HTTP route the task serves (its chain's ASGI scope), when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<u32>,
}

/// Where a task's coroutine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Scheduled, not started.
    Created,
    /// Suspended in an `await`.
    Suspended,
    /// Running on its loop's thread.
    Running,
}

/// A failed tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleError {
    /// Process id.
    pub pid: u32,
    /// Microseconds since the start of the recording.
    pub t_us: u64,
    /// Short machine-readable kind: `"lock"` (stopping a thread failed) or `"read"` (reading the stacks failed).
    pub kind: String,
    /// The error in words.
    pub message: String,
}

/// One probe request made while recording (`record --probe URL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Microseconds since the start of the recording when the request was sent.
    pub t_us: u64,
    /// The URL probed.
    pub url: String,
    /// Milliseconds until the response (or until the timeout or error).
    pub latency_ms: f64,
    /// HTTP status, absent on timeout or error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What went wrong: `timeout`, or the connection error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The `error` of a probe that got no answer in time.
pub const PROBE_TIMEOUT: &str = "timeout";

/// How a probe request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Answered with this HTTP status.
    Answered(u16),
    /// No answer within the timeout.
    TimedOut,
    /// The connection failed (refused, reset...).
    Failed,
}

impl ProbeResult {
    /// How the request ended.
    pub fn outcome(&self) -> ProbeOutcome {
        match (self.status, self.error.as_deref()) {
            (Some(s), _) => ProbeOutcome::Answered(s),
            (None, Some(PROBE_TIMEOUT)) => ProbeOutcome::TimedOut,
            (None, _) => ProbeOutcome::Failed,
        }
    }
}

/// The last record: how the recording went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct End {
    /// Microseconds from the start to the end of the recording.
    pub duration_us: u64,
    /// Why it ended: `"duration"`, `"interrupted"` (Ctrl-C/SIGTERM), `"target-exited"`,
    /// `"command-exited"`.
    pub reason: EndReason,
    /// Successful samples (process ticks) written.
    pub samples: u64,
    /// Failed ticks (see `sample_error` records).
    pub errors: u64,
    /// Ticks that started more than one sampling period late.
    pub late: u64,
    /// Ticks skipped because the sampler fell more than one period behind.
    pub missed: u64,
    /// Processes sampled at some point.
    pub processes: u64,
    /// Total microseconds the target's threads were stopped for reading (blocking mode).
    pub stopped_us: u64,
    /// Thread samples lost: Python threads left out of a tick because their stack could not
    /// be read (the sum of the ticks' `lost`). Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub lost_threads: u64,
    /// Stacks deeper than loopprof reads (4,096 frames): their innermost frames were kept,
    /// under a [`TRUNCATED_FRAME`] frame. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub truncated: u64,
    /// Ticks put off so that the target is not stopped more than `max_stop_pct` percent of
    /// the time (the duty cycle; see the header's options). Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub throttled: u64,
    /// Thread samples whose stack was read without stopping the thread (in uninterruptible
    /// sleep, checked not to have run during the read). Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub unstopped: u64,
    /// Thread samples whose stack was not read again because the thread had not run since
    /// its last read (same `schedstat` run time and run count, asleep). Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub unchanged: u64,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// The function name of the frame put at the outer end of a stack deeper than loopprof
/// reads (file [`TRUNCATED_FILE`], line 0): the frames below it are the innermost 4,096.
pub const TRUNCATED_FRAME: &str = "[truncated: deeper than 4096 frames]";

/// The file of the [`TRUNCATED_FRAME`] frame.
pub const TRUNCATED_FILE: &str = "<loopprof>";
