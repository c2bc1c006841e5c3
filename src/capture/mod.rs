//! Capture: a live process tree → a recording file.
//!
//! [`record`] chooses the target ([`target`]), attaches one [`sampler`] thread per Python
//! process (the target and, by default, its Python descendants, re-scanned every 250 ms so
//! restarted gunicorn workers are picked up), and writes what they send into the recording
//! with the source line of every new frame ([`source`]). It ends on the requested duration,
//! on the stop flag (Ctrl-C), or when the target exits, and always writes the end record.

pub mod doctor;
pub mod probe;
pub mod procfs;
pub mod route;
pub mod sampler;
mod session;
pub mod source;
pub mod stop;
pub mod syscalls;
pub mod target;
pub mod waits;

pub use crate::recording::outdir::DirPolicy;
use crate::recording::{End, RecordingError, TargetKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
pub use target::TargetSpec;

/// Errors of the capture stage, each saying how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// `--pid` names no running process.
    #[error("no process with pid {pid} is running. Check the pid with `ps aux | grep uvicorn` (inside a container, use the pid as seen from where loopprof runs).")]
    NoSuchProcess {
        /// The pid.
        pid: u32,
    },
    /// `--name` matched nothing.
    #[error("no process command line matches {pattern:?} (matched like `pgrep -f`). Check with `pgrep -af {pattern:?}`, or pass --pid.")]
    NoMatch {
        /// The pattern.
        pattern: String,
    },
    /// `--name` matched unrelated process trees.
    #[error(
        "{pattern:?} matches several unrelated processes; choose one with --pid:\n{candidates}"
    )]
    AmbiguousName {
        /// The pattern.
        pattern: String,
        /// One line per candidate.
        candidates: String,
    },
    /// `--name` is not a valid regular expression.
    #[error("--name {pattern:?} is not a valid regular expression: {why}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        why: String,
    },
    /// The target runs no Python interpreter (and has no Python descendant).
    #[error("process {pid} ({cmdline}) is not a Python process, and has no Python child process. Pass the pid of the uvicorn/gunicorn process (or its master). (py-spy said: {detail})")]
    NotPython {
        /// The pid.
        pid: u32,
        /// Its command line.
        cmdline: String,
        /// py-spy's error.
        detail: String,
    },
    /// The interpreter is not one loopprof reads (a version py-spy cannot read, one older
    /// than 3.8, or a free-threaded build).
    #[error("process {pid} runs a Python loopprof does not read ({detail}). loopprof reads CPython 3.8-3.15, not free-threaded builds; for an older Python use py-spy {} itself (`py-spy dump --pid {pid}`).", crate::PY_SPY_VERSION)]
    UnsupportedPython {
        /// The pid.
        pid: u32,
        /// py-spy's error.
        detail: String,
    },
    /// ptrace / process_vm_readv was refused.
    #[error("permission denied reading process {pid} ({detail}).\n{help}")]
    PermissionDenied {
        /// The pid.
        pid: u32,
        /// The OS error.
        detail: String,
        /// How to fix it, for who loopprof runs as and what holds the target
        /// ([`permission_help`]).
        help: String,
    },
    /// Another tracer (a debugger, strace, py-spy, another loopprof) holds the target: its
    /// threads cannot be stopped for a consistent read.
    #[error("process {pid} is already traced by process {tracer} ({comm}): a debugger, strace, py-spy --blocking or another loopprof. A process has one tracer at a time, and loopprof stops threads to read consistent stacks: stop that tracer first, or record without stopping anything: --nonblocking (stacks may then be torn)")]
    AlreadyTraced {
        /// The target.
        pid: u32,
        /// The tracer's pid.
        tracer: u32,
        /// The tracer's name.
        comm: String,
    },
    /// The target exited before it could be attached.
    #[error("process {pid} exited before loopprof could attach to it")]
    Exited {
        /// The pid.
        pid: u32,
    },
    /// `--` was given without a command.
    #[error("no command given after `--`; example: loopprof record -- uvicorn app:app")]
    EmptyCommand,
    /// The command could not be started.
    #[error("cannot start `{command}`: {source}. Check the program exists and is on PATH.")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The started command ran no Python in time.
    #[error("`{command}` started (pid {pid}) but no Python interpreter appeared in it or its children within {secs} s")]
    CommandNotPython {
        /// The command line.
        command: String,
        /// Its pid.
        pid: u32,
        /// How long loopprof waited.
        secs: u64,
    },
    /// The output directory cannot be used.
    #[error("cannot write to output directory {path}: {why}. Choose another with -o DIR.")]
    Output {
        /// The directory.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Writing the recording failed.
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

fn yama_scope() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// What to do about a refused ptrace of `pid`, for the user loopprof runs as: the tracer
/// already attached (`TracerPid`), root refused (another namespace, a security module,
/// ptrace disabled), or an unprivileged user (sudo, the capability, or, for their own
/// processes, Yama's `ptrace_scope`). Only what applies is said.
pub fn permission_help(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
    };
    let mut help = Vec::new();
    if let Some((t, comm)) = procfs::tracer_of(pid) {
        help.push(format!(
            "process {pid} is already traced by process {t} ({comm}): a debugger, py-spy or another loopprof. A process has one tracer at a time: stop that one first."
        ));
    }
    let scope = yama_scope();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        if scope == Some(3) {
            help.push("kernel.yama.ptrace_scope is 3: ptrace is disabled for everyone, root included, until the next boot.".into());
        }
        help.push("loopprof runs as root and was still refused: the target is probably in a container or user namespace this root does not own, or a security module (SELinux, AppArmor, seccomp) forbids ptrace. Run loopprof inside the target's container with the capability: docker run --cap-add SYS_PTRACE (docker-compose: cap_add: [SYS_PTRACE]; Kubernetes: securityContext.capabilities.add: [\"SYS_PTRACE\"], or kubectl debug --profile=general).".into());
    } else {
        let own = field("Uid:").and_then(|u| u.parse::<u32>().ok()) == Some(euid);
        help.push("loopprof reads another process's memory, which needs ptrace permission: run it as root (sudo loopprof ...), or give the binary the capability: sudo setcap cap_sys_ptrace+ep \"$(command -v loopprof)\"".into());
        if own && scope == Some(1) {
            help.push("or, since the process is yours, allow ptrace of your own processes: sudo sysctl kernel.yama.ptrace_scope=0 (now 1)".into());
        } else if !own {
            help.push(
                "the process belongs to another user: only root (or CAP_SYS_PTRACE) may read it"
                    .into(),
            );
        }
    }
    help.iter()
        .map(|h| format!("  - {h}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Options of [`record`]: a plain struct, independent of the command-line parser.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// What to record.
    pub target: TargetSpec,
    /// How long; `None` = until the stop flag is set or the target exits.
    pub duration: Option<Duration>,
    /// Samples per second per process.
    pub rate_hz: f64,
    /// Directory the recording is written into (created if missing).
    pub output_dir: PathBuf,
    /// Whether `output_dir` may exist already (a name the user gave) or not (loopprof's).
    pub output_policy: DirPolicy,
    /// What to stop while reading stacks.
    pub locking: sampler::Locking,
    /// Also sample Python descendants of the target.
    pub subprocesses: bool,
    /// Leave a started command running at the end.
    pub keep_running: bool,
    /// gzip the recording.
    pub compress: bool,
    /// URLs to GET every 200 ms while recording (`--probe`).
    pub probes: Vec<probe::ProbeUrl>,
    /// Timeout of each probe request.
    pub probe_timeout: Duration,
    /// Most of the time a target may be held stopped, percent (the duty cycle): a tick that
    /// stopped it longer puts the next one off.
    pub max_stop_pct: f64,
    /// Time between two reads of the asyncio tasks; `None`: tasks are not read.
    pub task_interval: Option<Duration>,
}

/// The default sampling rate, samples per second per process.
pub const DEFAULT_RATE_HZ: f64 = 100.0;
/// The default duty cycle: most of the time a target may be held stopped, percent.
pub const DEFAULT_MAX_STOP_PCT: f64 = 10.0;
/// The default time between two reads of the asyncio tasks, milliseconds.
pub const DEFAULT_TASK_INTERVAL_MS: f64 = 250.0;
/// The default timeout of a `--probe` request, seconds.
pub const DEFAULT_PROBE_TIMEOUT_S: f64 = 5.0;

impl RecordOptions {
    /// The options of `loopprof dump`: `snapshots` ticks spread evenly over `window_s`
    /// seconds, Python threads stopped while read, uncompressed into `dir`.
    pub fn snapshots(
        target: TargetSpec,
        snapshots: u32,
        window_s: f64,
        subprocesses: bool,
        dir: PathBuf,
    ) -> RecordOptions {
        let rate = snapshots as f64 / window_s;
        RecordOptions {
            target,
            // Ticks are taken at 0, 1/rate, ...: ending half an interval before the window's
            // end takes exactly `snapshots` of them.
            duration: Some(Duration::from_secs_f64(window_s - 0.5 / rate)),
            rate_hz: rate,
            output_dir: dir,
            output_policy: DirPolicy::Named,
            locking: sampler::Locking::PythonThreads,
            subprocesses,
            keep_running: false,
            compress: false,
            probes: Vec::new(),
            probe_timeout: Duration::from_secs_f64(DEFAULT_PROBE_TIMEOUT_S),
            max_stop_pct: DEFAULT_MAX_STOP_PCT,
            // Every snapshot reads the tasks too (a hung server's task tree).
            task_interval: Some(Duration::from_secs_f64(1.0 / rate)),
        }
    }
}

/// How a recording went, for the caller to report.
#[derive(Debug, Clone)]
pub struct RecordOutcome {
    /// Path of the recording file.
    pub path: PathBuf,
    /// The end record written.
    pub end: End,
    /// The root pid.
    pub pid: u32,
    /// A note about the target choice (e.g. which pid a name matched), if any.
    pub notes: Vec<String>,
}

/// Live figures for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Time since the start.
    pub elapsed: Duration,
    /// Requested duration.
    pub duration: Option<Duration>,
    /// Successful samples.
    pub samples: u64,
    /// Failed samples.
    pub errors: u64,
    /// Processes being sampled now.
    pub processes: usize,
}

/// Checks the output directory without creating it ([`crate::recording::outdir::check_dir`])
/// and refuses one that already holds a recording: run before attaching, so a bad `-o` fails
/// first and a failed attach leaves no empty directory behind.
pub fn check_output(dir: &Path, policy: DirPolicy) -> Result<(), CaptureError> {
    crate::recording::outdir::check_dir(dir, policy)
        .map_err(|e| CaptureError::Recording(e.into()))?;
    refuse_recording(dir)
}

/// Prepares the output directory ([`crate::recording::outdir::prepare_dir`]: created private,
/// never through a symlink, an existing one only when the user named it and owns it) and
/// refuses one that already holds a recording.
pub fn prepare_output(dir: &Path, policy: DirPolicy) -> Result<(), CaptureError> {
    crate::recording::outdir::prepare_dir(dir, policy)
        .map_err(|e| CaptureError::Recording(e.into()))?;
    refuse_recording(dir)
}

fn refuse_recording(dir: &Path) -> Result<(), CaptureError> {
    for name in [
        crate::recording::RECORDING_FILE,
        crate::recording::RECORDING_FILE.trim_end_matches(".gz"),
    ] {
        if std::fs::symlink_metadata(dir.join(name)).is_ok() {
            return Err(CaptureError::Output {
                path: dir.to_path_buf(),
                why: format!(
                    "it already holds a recording ({name}); loopprof never overwrites one"
                ),
            });
        }
    }
    Ok(())
}

/// Records the target until the duration ends, `stop` is set, or the target exits.
/// `on_progress` is called about five times a second.
pub fn record(
    opts: &RecordOptions,
    stop: Arc<AtomicBool>,
    mut on_progress: impl FnMut(&Progress),
) -> Result<RecordOutcome, CaptureError> {
    if !(opts.rate_hz > 0.0 && opts.rate_hz <= 10_000.0) {
        return Err(CaptureError::Output {
            path: opts.output_dir.clone(),
            why: "internal: rate must be in (0, 10000]".into(),
        });
    }
    check_output(&opts.output_dir, opts.output_policy)?;
    let mut notes = Vec::new();
    let mut child = None;
    let (root, how, pattern) = match &opts.target {
        TargetSpec::Pid(pid) => {
            target::check_pid(*pid)?;
            (*pid, TargetKind::Pid, None)
        }
        TargetSpec::Name(p) => {
            let m = target::find_by_name(p)?;
            let cmd = procfs::cmdline(m.pid).unwrap_or_default().join(" ");
            notes.push(if m.matched.len() > 1 {
                format!(
                    "{p:?} matched {} processes; recording the root of their tree, pid {} ({cmd}), and its Python children",
                    m.matched.len(),
                    m.pid
                )
            } else {
                format!("{p:?} matched pid {} ({cmd})", m.pid)
            });
            (m.pid, TargetKind::Name, Some(p.clone()))
        }
        TargetSpec::Command(cmd) => {
            let c = target::Started::new(target::spawn(cmd)?);
            let pid = c.id();
            child = Some(c);
            (pid, TargetKind::Command, None)
        }
    };
    let root = session::Root {
        pid: root,
        how,
        pattern,
    };
    let result = session::record_tree(opts, &root, stop, &mut child, &mut on_progress);
    if let Some(mut c) = child {
        if opts.keep_running {
            notes.push(format!("left the command running (pid {})", c.id()));
        } else {
            c.terminate(Duration::from_secs(5));
        }
    }
    result.map(|(path, end)| RecordOutcome {
        path,
        end,
        pid: root.pid,
        notes,
    })
}

/// The machine's host name, for the header.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
