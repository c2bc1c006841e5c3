//! One recording session: the sampler threads of a process tree, attaching the initial tree,
//! the header, the loop that writes what the samplers send until the recording ends, and the
//! end record. [`super::record`] chooses the target; this module records it.

use super::sampler::{self, Counters, Msg, ProcessSampler, SamplerContext};
use super::{prepare_output, probe, procfs, source, target, CaptureError, Progress, RecordOptions};
use crate::recording::format::time_unit_for;
use crate::recording::frames::{self, Origin};
use crate::recording::{
    CaptureOptionsRecord, End, EndReason, Header, ProbeResult, ProcessEvent, ProcessEventKind,
    ProcessInfo, Record, RecordingWriter, RouteDef, SampleError, Target, TargetKind, FORMAT_NAME,
    FORMAT_VERSION, RECORDING_FILE,
};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The root process being recorded, as the user named it.
pub(super) struct Root {
    /// Its pid.
    pub(super) pid: u32,
    /// How it was named.
    pub(super) how: TargetKind,
    /// The `--name` pattern, when named so.
    pub(super) pattern: Option<String>,
}

/// A sampler thread and whether its process is still being sampled.
struct Tracked {
    handle: std::thread::JoinHandle<()>,
    alive: bool,
}

/// The sampler threads of one recording, one per process, and what became of each process.
struct Samplers {
    ctx: SamplerContext,
    rx: mpsc::Receiver<Msg>,
    tracked: HashMap<u32, Tracked>,
    skipped: HashSet<u32>,
    parents: procfs::ParentScanner,
    root: u32,
    subprocesses: bool,
}

impl Samplers {
    fn new(opts: &RecordOptions, root: u32, start: Instant) -> Samplers {
        let (tx, rx) = mpsc::channel::<Msg>();
        Samplers {
            ctx: SamplerContext {
                start,
                period: Duration::from_secs_f64(1.0 / opts.rate_hz),
                locking: opts.locking,
                max_stop_share: (opts.max_stop_pct / 100.0).clamp(1e-3, 1.0),
                task_interval: opts.task_interval,
                stop: Arc::new(AtomicBool::new(false)),
                counters: Arc::new(Counters::default()),
                tx,
            },
            rx,
            tracked: HashMap::new(),
            skipped: HashSet::new(),
            parents: procfs::ParentScanner::new(),
            root,
            subprocesses: opts.subprocesses,
        }
    }

    /// Starts a sampler thread for `pid`, which attaches (retrying for `patience`) and
    /// sends [`Msg::Attached`] or [`Msg::Skipped`], then samples until stopped.
    fn spawn(&mut self, pid: u32, patience: Duration) {
        let ctx = self.ctx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("sampler-{pid}"))
            .spawn(move || {
                match sampler::attach(pid, ctx.locking == sampler::Locking::None, patience) {
                    Ok(spy) => {
                        // Described after the attach: a started command may have exec'd
                        // (a pyenv shim becomes python) while loopprof waited for it.
                        let mut info = sampler::describe(pid);
                        info.python_version = spy.version.to_string();
                        let _ = ctx.tx.send(Msg::Attached(info));
                        ProcessSampler::new(pid, spy, ctx).run();
                    }
                    Err(error) => {
                        let info = sampler::describe(pid);
                        let _ = ctx.tx.send(Msg::Skipped { info, error });
                    }
                }
            })
            .expect("spawn sampler thread");
        self.tracked.insert(
            pid,
            Tracked {
                handle,
                alive: true,
            },
        );
    }

    /// The root and (with subprocesses) its descendants not yet tracked or skipped.
    fn scan(&mut self) -> Vec<u32> {
        let mut pids = vec![self.root];
        if self.subprocesses {
            pids.extend(procfs::descendants(self.root, self.parents.scan()));
        }
        pids.into_iter()
            .filter(|p| !self.tracked.contains_key(p) && !self.skipped.contains(p))
            .collect()
    }

    /// Starts samplers for new processes that look like Python (the root always); returns
    /// how many were started.
    fn spawn_new(&mut self, patience: Duration) -> usize {
        let mut started = 0;
        for pid in self.scan() {
            if pid != self.root && !procfs::looks_like_python(pid) {
                self.skipped.insert(pid);
                continue;
            }
            self.spawn(pid, patience);
            started += 1;
        }
        started
    }

    fn stop(&self) {
        self.ctx.stop.store(true, Ordering::Relaxed);
    }

    fn any_alive(&self) -> bool {
        self.tracked.values().any(|t| t.alive)
    }

    fn alive_count(&self) -> usize {
        self.tracked.values().filter(|t| t.alive).count()
    }

    fn mark_gone(&mut self, pid: u32) {
        if let Some(t) = self.tracked.get_mut(&pid) {
            t.alive = false;
        }
    }

    /// Stops every sampler and waits for each to finish its tick.
    fn join_all(&mut self) {
        self.stop();
        for (_, t) in self.tracked.drain() {
            let _ = t.handle.join();
        }
    }
}

/// What attaching the initial tree gave.
struct Attached {
    /// The processes attached, by pid.
    processes: Vec<ProcessInfo>,
    /// Messages that arrived meanwhile, written once the header is.
    pending: Vec<Msg>,
}

/// Attaches the initial tree, waiting for each attach result (the header lists them): a
/// started command gets time to load its interpreter; a pid or name must be Python now.
fn attach_initial(
    samplers: &mut Samplers,
    how: TargetKind,
    start: Instant,
) -> Result<Attached, CaptureError> {
    let root = samplers.root;
    let command_mode = how == TargetKind::Command;
    let (patience, wait_limit) = if command_mode {
        (Duration::from_secs(10), Duration::from_secs(15))
    } else {
        (Duration::from_millis(300), Duration::from_secs(5))
    };
    let deadline = start + wait_limit;
    let mut processes: Vec<ProcessInfo> = Vec::new();
    let mut root_error: Option<CaptureError> = None;
    let mut pending: Vec<Msg> = Vec::new();
    let mut outstanding = 0usize;
    loop {
        outstanding += samplers.spawn_new(patience);
        // Collect the attach result of everything started so far.
        while outstanding > 0 {
            match samplers.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Msg::Attached(info)) => {
                    processes.push(info);
                    outstanding -= 1;
                }
                Ok(Msg::Skipped { info, error }) => {
                    outstanding -= 1;
                    samplers.skipped.insert(info.pid);
                    samplers.tracked.remove(&info.pid);
                    if info.pid == root {
                        root_error = Some(error);
                    } else {
                        // Recorded as a `skipped` process event once the header is written.
                        pending.push(Msg::Skipped { info, error });
                    }
                }
                Ok(other) => pending.push(other),
                Err(_) if Instant::now() > deadline => break,
                Err(_) => {}
            }
        }
        if !processes.is_empty() {
            break;
        }
        // Nothing attached. Decide whether waiting longer can help.
        let root_alive = procfs::is_alive(root);
        let give_up = matches!(root_error, Some(CaptureError::PermissionDenied { .. }))
            || !root_alive
            || Instant::now() > deadline
            || !command_mode;
        if give_up {
            samplers.stop();
            return Err(match root_error {
                Some(e @ CaptureError::PermissionDenied { .. }) => e,
                _ if !root_alive => CaptureError::Exited { pid: root },
                _ if command_mode => CaptureError::CommandNotPython {
                    command: procfs::cmdline(root).unwrap_or_default().join(" "),
                    pid: root,
                    secs: wait_limit.as_secs(),
                },
                Some(e) => e,
                None => CaptureError::NotPython {
                    pid: root,
                    cmdline: procfs::cmdline(root).unwrap_or_default().join(" "),
                    detail: "no Python interpreter found".into(),
                },
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(e) = &root_error {
        // The root is not Python (e.g. a shell script) but its children are: say so.
        log::info!("root process is not sampled: {e}");
    }
    processes.sort_by_key(|p| p.pid);
    Ok(Attached { processes, pending })
}

/// The recording file being written, with the source lines already written.
struct Sink {
    writer: RecordingWriter,
    sources: source::SourceCache,
    processes_seen: HashSet<u32>,
    start: Instant,
}

impl Sink {
    /// Writes what a sampler sent; process events update `samplers` (which may be `None`
    /// after the end, when only samples and errors still count).
    fn handle(&mut self, msg: Msg, samplers: Option<&mut Samplers>) -> Result<(), CaptureError> {
        let now_us = || self.start.elapsed().as_micros() as u64;
        let event = match msg {
            Msg::Sample { tick, threads } => {
                let pid = tick.pid;
                let new_frames = self.writer.write_sample(&tick, &threads)?;
                for f in new_frames {
                    self.write_source(pid, &f.file, f.line)?;
                }
                return Ok(());
            }
            Msg::Tasks { snapshot, tasks } => {
                let pid = snapshot.pid;
                let new_frames = self.writer.write_tasks(snapshot, &tasks)?;
                for f in new_frames {
                    self.write_source(pid, &f.file, f.line)?;
                }
                return Ok(());
            }
            Msg::Routes { pid, routes } => {
                for (route, endpoint) in routes {
                    self.writer.write(&Record::Route(RouteDef {
                        pid,
                        route,
                        endpoint,
                    }))?;
                }
                return Ok(());
            }
            Msg::Error {
                pid,
                t_us,
                kind,
                message,
            } => {
                self.writer.write(&Record::SampleError(SampleError {
                    pid,
                    t_us,
                    kind: kind.into(),
                    message,
                }))?;
                return Ok(());
            }
            Msg::Attached(info) => {
                self.processes_seen.insert(info.pid);
                ProcessEvent {
                    t_us: now_us(),
                    event: ProcessEventKind::Started,
                    process: info,
                    detail: None,
                }
            }
            Msg::Skipped { info, error } => {
                if let Some(s) = samplers {
                    s.skipped.insert(info.pid);
                    s.tracked.remove(&info.pid);
                }
                ProcessEvent {
                    t_us: now_us(),
                    event: ProcessEventKind::Skipped,
                    process: info,
                    detail: Some(error.to_string()),
                }
            }
            Msg::Exec { pid, t_us, info } => {
                // The new image may see other files under the same names.
                self.sources.forget(pid);
                if info.is_none() {
                    if let Some(s) = samplers {
                        s.mark_gone(pid);
                    }
                }
                let detail = match &info {
                    Some(i) => format!("execve: now Python {}", i.python_version),
                    None => "execve: the new program is not a Python loopprof can read".into(),
                };
                ProcessEvent {
                    t_us,
                    event: ProcessEventKind::Exec,
                    process: info.unwrap_or_else(|| sampler::describe(pid)),
                    detail: Some(detail),
                }
            }
            Msg::Frozen { pid, t_us, by } => ProcessEvent {
                t_us,
                event: if by.is_some() {
                    ProcessEventKind::Frozen
                } else {
                    ProcessEventKind::Thawed
                },
                process: described_without_version(pid),
                detail: by,
            },
            Msg::Exited { pid, t_us } => {
                if let Some(s) = samplers {
                    s.mark_gone(pid);
                }
                self.sources.forget(pid);
                ProcessEvent {
                    t_us,
                    event: ProcessEventKind::Exited,
                    process: described_without_version(pid),
                    detail: None,
                }
            }
        };
        self.writer.write(&Record::Process(event))?;
        Ok(())
    }

    /// Writes the source line of a new frame, with a few lines of context for application
    /// frames (shown in the report), each line once.
    fn write_source(&mut self, pid: u32, file: &str, line: i32) -> Result<(), CaptureError> {
        let context = if frames::origin(file) == Origin::App {
            source::CONTEXT_LINES
        } else {
            0
        };
        for line in line - context..=line + context {
            if let Some(text) = self.sources.line_once(pid, file, line) {
                self.writer.write_source(file, line, &text)?;
            }
        }
        Ok(())
    }
}

/// What is known of a process that has gone or stopped running code: no Python version.
fn described_without_version(pid: u32) -> ProcessInfo {
    let mut info = sampler::describe(pid);
    info.python_version.clear();
    info
}

/// Records `root` and (with subprocesses) its Python descendants until the duration ends,
/// `stop` is set, the started command exits or every process exits. Returns the recording's
/// path and its end record.
pub(super) fn record_tree(
    opts: &RecordOptions,
    root: &Root,
    stop: Arc<AtomicBool>,
    child: &mut Option<target::Started>,
    on_progress: &mut impl FnMut(&Progress),
) -> Result<(PathBuf, End), CaptureError> {
    let start = Instant::now();
    let started_at = chrono::Utc::now();
    let mut samplers = Samplers::new(opts, root.pid, start);
    let attached = attach_initial(&mut samplers, root.how, start)?;
    let path = opts.output_dir.join(if opts.compress {
        RECORDING_FILE
    } else {
        RECORDING_FILE.trim_end_matches(".gz")
    });
    // Created only now that something attached: a failed attach leaves nothing behind.
    if let Err(e) = prepare_output(&opts.output_dir, opts.output_policy) {
        samplers.stop();
        return Err(e);
    }
    let mut writer = RecordingWriter::create(&path, opts.compress)?;
    writer.write(&Record::Header(header(
        opts,
        root,
        started_at,
        &attached.processes,
    )))?;
    writer.flush()?;
    let mut sink = Sink {
        writer,
        sources: source::SourceCache::default(),
        processes_seen: attached.processes.iter().map(|p| p.pid).collect(),
        start,
    };
    for msg in attached.pending {
        sink.handle(msg, Some(&mut samplers))?;
    }
    // Probes start once the header is written; they stop with the samplers.
    let (probe_tx, probe_rx) = mpsc::channel();
    let probe_threads: Vec<_> = opts
        .probes
        .iter()
        .map(|u| {
            let (u, tx, stop) = (u.clone(), probe_tx.clone(), samplers.ctx.stop.clone());
            let timeout = opts.probe_timeout;
            std::thread::spawn(move || probe::run(u, timeout, start, stop, tx))
        })
        .collect();
    drop(probe_tx);
    let reason = run_until_end(
        opts,
        &mut samplers,
        &mut sink,
        &probe_rx,
        &stop,
        child,
        on_progress,
    )?;
    let duration_us = start.elapsed().as_micros() as u64;
    // Let samplers finish their tick, then drain everything they sent.
    samplers.join_all();
    for t in probe_threads {
        let _ = t.join();
    }
    while let Ok(p) = probe_rx.try_recv() {
        sink.writer.write(&Record::Probe(p))?;
    }
    while let Ok(msg) = samplers.rx.try_recv() {
        // Ignore late attach/exit noise after the end; keep every sample.
        if matches!(
            msg,
            Msg::Sample { .. }
                | Msg::Error { .. }
                | Msg::Routes { .. }
                | Msg::Tasks { .. }
                | Msg::Frozen { .. }
                | Msg::Exec { .. }
        ) {
            sink.handle(msg, None)?;
        }
    }
    let c = &samplers.ctx.counters;
    let end = End {
        duration_us,
        reason,
        samples: c.samples.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        late: c.late.load(Ordering::Relaxed),
        missed: c.missed.load(Ordering::Relaxed),
        processes: sink.processes_seen.len() as u64,
        stopped_us: c.stopped_us.load(Ordering::Relaxed),
        lost_threads: c.lost_threads.load(Ordering::Relaxed),
        truncated: c.truncated.load(Ordering::Relaxed),
        throttled: c.throttled.load(Ordering::Relaxed),
        unstopped: c.unstopped_reads.load(Ordering::Relaxed),
        unchanged: c.unchanged_reads.load(Ordering::Relaxed),
    };
    sink.writer.finish(&end)?;
    Ok((path, end))
}

/// The header record of a recording of `root` whose initial tree is `processes`.
fn header(
    opts: &RecordOptions,
    root: &Root,
    started_at: chrono::DateTime<chrono::Utc>,
    processes: &[ProcessInfo],
) -> Header {
    Header {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        loopprof_version: crate::VERSION.into(),
        py_spy_version: crate::PY_SPY_VERSION.into(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        rate_hz: opts.rate_hz,
        host: super::hostname(),
        target: Target {
            how: root.how,
            pid: root.pid,
            cmdline: procfs::cmdline(root.pid).unwrap_or_default(),
            pattern: root.pattern.clone(),
        },
        options: CaptureOptionsRecord {
            nonblocking: opts.locking == sampler::Locking::None,
            subprocesses: opts.subprocesses,
            locking: opts.locking.name().into(),
            max_stop_pct: Some(opts.max_stop_pct),
            task_interval_ms: opts.task_interval.map(|d| d.as_millis().max(1) as u32),
        },
        processes: processes.to_vec(),
        clock_ticks_per_s: procfs::clock_ticks_per_second(),
        time_unit_us: time_unit_for(opts.rate_hz),
    }
}

/// How long the writer lets samples gather after being woken by one ([`run_until_end`]).
const GATHER: Duration = Duration::from_millis(20);

/// Writes what the samplers and probes send, attaches new subprocesses and reports progress,
/// until the recording ends; returns why it ended.
fn run_until_end(
    opts: &RecordOptions,
    samplers: &mut Samplers,
    sink: &mut Sink,
    probe_rx: &mpsc::Receiver<ProbeResult>,
    stop: &AtomicBool,
    child: &mut Option<target::Started>,
    on_progress: &mut impl FnMut(&Progress),
) -> Result<EndReason, CaptureError> {
    let start = sink.start;
    let mut last_scan = Instant::now();
    let mut last_progress = Instant::now() - Duration::from_secs(1);
    loop {
        while let Ok(p) = probe_rx.try_recv() {
            sink.writer.write(&Record::Probe(p))?;
        }
        match samplers.rx.recv_timeout(Duration::from_millis(50)) {
            Ok(msg) => {
                sink.handle(msg, Some(samplers))?;
                // Let the next samples gather: being woken for each one (a futex wake and a
                // context switch per tick) cost more than writing it. They wait at most
                // `GATHER` here, and the file is flushed less often than that anyway.
                // The drain is bounded in time: a writer slower than the samplers (a huge
                // stack on every tick, a loaded machine) must still see the end come.
                std::thread::sleep(GATHER);
                let drain_until = Instant::now() + GATHER;
                while Instant::now() < drain_until {
                    let Ok(msg) = samplers.rx.try_recv() else {
                        break;
                    };
                    sink.handle(msg, Some(samplers))?;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        let elapsed = start.elapsed();
        if stop.load(Ordering::Relaxed) {
            return Ok(EndReason::Interrupted);
        }
        if opts.duration.is_some_and(|d| elapsed >= d) {
            return Ok(EndReason::Duration);
        }
        if child.as_mut().is_some_and(|c| c.has_exited()) {
            return Ok(EndReason::CommandExited);
        }
        if !samplers.any_alive() && !procfs::is_alive(samplers.root) {
            return Ok(EndReason::TargetExited);
        }
        if opts.subprocesses && last_scan.elapsed() >= Duration::from_millis(250) {
            last_scan = Instant::now();
            samplers.spawn_new(Duration::from_secs(2));
        }
        if last_progress.elapsed() >= Duration::from_millis(200) {
            last_progress = Instant::now();
            let c = &samplers.ctx.counters;
            on_progress(&Progress {
                elapsed,
                duration: opts.duration,
                samples: c.samples.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                processes: samplers.alive_count(),
            });
        }
    }
}
