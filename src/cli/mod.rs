//! The command line: clap types, their conversion to plain option structs, exit codes.
//!
//! clap derive types stop here: each subcommand's arguments become the stage's options struct
//! ([`crate::capture::RecordOptions`]) before any work starts, and every error is mapped to a
//! documented exit code ([`exit`]).

use crate::analysis::catalog::Catalog;
use crate::analysis::diagnose::{diagnose, Options as DiagnoseOptions};
use crate::analysis::gates::{self, Gate, Scope};
use crate::analysis::overview::overview;
use crate::capture::sampler::Locking;
use crate::capture::{self, CaptureError, DirPolicy, RecordOptions, TargetSpec};
use crate::recording::{self, outdir, RecordingError};
use crate::render;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Prints one line on stdout. A closed stdout (`loopprof report DIR | head -1`) is a normal
/// end, as in ripgrep: later output is dropped quietly and the exit code stays the one the
/// command earned (every file is written before anything is printed).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::print_line(format_args!($($arg)*))
    };
}

/// Prints one line on stderr, ignoring errors (a closed stderr must not panic).
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `args` and a newline to stdout; see [`out!`]. Other write errors are reported once
/// on stderr.
pub fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let r = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = r {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = writeln!(std::io::stderr(), "loopprof: cannot write to stdout: {e}");
        }
    }
}

/// Exit codes (documented in README.md and docs/cli.md).
pub mod exit {
    /// Success; the recording is complete.
    pub const OK: i32 = 0;
    /// An unexpected error.
    pub const ERROR: i32 = 1;
    /// Bad command-line usage.
    pub const USAGE: i32 = 2;
    /// The target cannot be recorded: no such process, no match, not Python, unsupported
    /// Python version, exited before attach, command could not start.
    pub const TARGET: i32 = 3;
    /// Permission denied (ptrace).
    pub const PERMISSION: i32 = 4;
    /// Output cannot be written, or an input recording cannot be read.
    pub const IO: i32 = 5;
    /// `dump`: the event loop is blocked.
    pub const LOOP_BLOCKED: i32 = 6;
    /// A `--fail-on` gate failed (every output was still written).
    pub const GATE_FAILED: i32 = 7;
    /// `dump`: the snapshots cannot be trusted (the target is frozen, or most reads
    /// failed), so whether the loop is blocked is not known.
    pub const INCONCLUSIVE: i32 = 8;
}

/// loopprof: find what blocks the asyncio event loop of a running uvicorn/gunicorn server.
#[derive(Debug, Parser)]
#[command(name = "loopprof", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attach to a running server (or start one) and record every Python thread.
    Record(RecordArgs),
    /// Diagnose a saved recording offline: write summary.json and print the findings.
    Report(ReportArgs),
    /// Snapshot a (possibly hung) server for a second: every thread's stack and state, and
    /// what blocks the event loop. Exit 6 when it is blocked, 0 when not.
    Dump(DumpArgs),
    /// Compare two recordings (before/after a fix): write diff.html, diff.md and diff.json.
    Diff(DiffArgs),
    /// Summarise a recording: processes, threads, states, syscalls, hottest frames.
    Inspect(InspectArgs),
}

/// Options of the diagnosis, shared by `record` and `report`.
#[derive(Debug, Args)]
struct AnalysisArgs {
    /// A busy stretch of the event loop at least this long is a stall.
    #[arg(long, default_value_t = 50.0, value_name = "MS")]
    threshold_ms: f64,
    /// Short blocks at one call site adding up to this share of the window are a finding.
    #[arg(long, default_value_t = 2.0, value_name = "PCT")]
    min_share: f64,
    /// Extra catalog entries (JSON, see docs/detection.md), for in-house wrappers; repeatable.
    #[arg(long, value_name = "FILE")]
    catalog: Vec<PathBuf>,
    /// Exit 7 when this holds, e.g. 'loop_blocked_pct > 5', 'max_stall_ms > 200',
    /// 'category == executor-shutdown-wait' (`diff`: also 'regression'); repeatable, any
    /// failing gate fails. Every output is still written. Metrics: docs/cli.md.
    #[arg(long, value_name = "EXPR")]
    fail_on: Vec<String>,
}

/// Everything the analysis needs, checked before any work starts.
struct Analysis {
    catalog: Catalog,
    options: DiagnoseOptions,
    gates: Vec<Gate>,
}

/// Reads user catalog files and loads them in front of the built-in one.
fn load_catalog(paths: &[PathBuf]) -> Result<Catalog, String> {
    let mut files = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read catalog {}: {e}", p.display()))?;
        files.push((p.display().to_string(), text));
    }
    Catalog::with_user(&files).map_err(|e| e.to_string())
}

impl AnalysisArgs {
    fn load(&self, scope: Scope) -> Result<Analysis, String> {
        if !(self.threshold_ms > 0.0 && self.threshold_ms.is_finite()) {
            return Err(format!(
                "--threshold-ms {} must be a positive number",
                self.threshold_ms
            ));
        }
        if !(0.0..=100.0).contains(&self.min_share) {
            return Err(format!(
                "--min-share {} must be a percentage (0-100)",
                self.min_share
            ));
        }
        let catalog = load_catalog(&self.catalog)?;
        let ids: Vec<String> = catalog.entries().map(|e| e.id.clone()).collect();
        let gates = gates::parse_all(&self.fail_on, scope, &ids).map_err(|e| e.to_string())?;
        Ok(Analysis {
            catalog,
            options: DiagnoseOptions {
                threshold_ms: self.threshold_ms,
                min_share_pct: self.min_share,
            },
            gates,
        })
    }
}

#[derive(Debug, Args)]
struct DiffArgs {
    /// The BEFORE recording (file or output directory of `loopprof record`).
    before: PathBuf,
    /// The AFTER recording.
    after: PathBuf,
    /// Where to write diff.html, diff.md, diff.json (default: the AFTER recording's directory).
    #[arg(long, short = 'o', value_name = "DIR")]
    output: Option<PathBuf>,
    #[command(flatten)]
    analysis: AnalysisArgs,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// A recording file, or an output directory of `loopprof record`.
    recording: PathBuf,
    /// Where to write the report files (default: the recording's directory).
    #[arg(long, short = 'o', value_name = "DIR")]
    output: Option<PathBuf>,
    /// Open report.html in a browser (xdg-open, sensible-browser or $BROWSER) when there is one.
    #[arg(long)]
    open: bool,
    #[command(flatten)]
    analysis: AnalysisArgs,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").args(["pid", "name", "command"]).required(true))]
struct RecordArgs {
    /// Pid of the uvicorn/gunicorn process (its Python child processes are recorded too).
    #[arg(long, short = 'p')]
    pid: Option<u32>,
    /// Regular expression matched against full command lines, like `pgrep -f`; the root of
    /// the matching process tree is recorded.
    #[arg(long, short = 'n', value_name = "PATTERN")]
    name: Option<String>,
    /// Seconds to record (default: until Ctrl-C or the target exits).
    #[arg(long, short = 'd', value_name = "SECS")]
    duration: Option<f64>,
    /// Samples per second per process.
    #[arg(long, short = 'r', default_value_t = 100.0, value_name = "HZ")]
    rate: f64,
    /// Output directory (default: loopprof-YYYYmmdd-HHMMSS in the current directory).
    #[arg(long, short = 'o', value_name = "DIR")]
    output: Option<PathBuf>,
    /// Read stacks without stopping any thread (no pause of the target; some samples fail
    /// or come out torn).
    #[arg(long, conflicts_with = "stop_all_threads")]
    nonblocking: bool,
    /// Stop every OS thread of the process while reading, as py-spy does by default, instead
    /// of only the Python threads (for comparisons).
    #[arg(long)]
    stop_all_threads: bool,
    /// Record only the given process, not its Python child processes (workers).
    #[arg(long)]
    no_subprocesses: bool,
    /// With `-- COMMAND`: leave the command running when the recording ends.
    #[arg(long)]
    keep_running: bool,
    /// Write the recording as plain JSON Lines instead of gzip.
    #[arg(long)]
    uncompressed: bool,
    /// While recording, GET this http:// URL every 200 ms (like `curl -m 5 .../health`);
    /// latencies and timeouts go into the recording and the report. Repeatable.
    #[arg(long, value_name = "URL")]
    probe: Vec<String>,
    /// Timeout of each probe request, seconds.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    probe_timeout: f64,
    /// Most of the time the target may be held stopped, percent: a tick whose read stopped
    /// it longer puts the next tick off (the rate drops, and the report says so).
    #[arg(long, default_value_t = 10.0, value_name = "PCT")]
    max_stop_pct: f64,
    /// Start this command and record it (`loopprof record -- uvicorn app:app`).
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
    #[command(flatten)]
    analysis: AnalysisArgs,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").args(["pid", "name"]).required(true))]
struct DumpArgs {
    /// Pid of the uvicorn/gunicorn process (its Python child processes are dumped too).
    #[arg(long, short = 'p')]
    pid: Option<u32>,
    /// Regular expression matched against full command lines, like `pgrep -f`.
    #[arg(long, short = 'n', value_name = "PATTERN")]
    name: Option<String>,
    /// Snapshots to take.
    #[arg(long, default_value_t = 10, value_name = "N")]
    snapshots: u32,
    /// Seconds the snapshots are spread over.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    window: f64,
    /// Only the given process, not its Python child processes.
    #[arg(long)]
    no_subprocesses: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// A recording file, or an output directory of `loopprof record`.
    recording: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl RecordArgs {
    /// Converts the parsed arguments into the capture stage's options.
    fn into_options(self) -> Result<RecordOptions, String> {
        let target = match (self.pid, self.name, self.command.is_empty()) {
            (Some(pid), None, true) => TargetSpec::Pid(pid),
            (None, Some(name), true) => TargetSpec::Name(name),
            (None, None, false) => TargetSpec::Command(self.command),
            _ => return Err("choose the target once: --pid, --name or -- COMMAND".into()),
        };
        if !(self.rate > 0.0 && self.rate <= 5000.0) {
            return Err(format!(
                "--rate {} is out of range: use more than 0 and at most 5000 samples per second",
                self.rate
            ));
        }
        let duration = match self.duration {
            Some(d) if d > 0.0 && d.is_finite() => Some(Duration::from_secs_f64(d)),
            Some(d) => {
                return Err(format!(
                    "--duration {d} must be a positive number of seconds"
                ))
            }
            None => None,
        };
        if self.keep_running && !matches!(target, TargetSpec::Command(_)) {
            return Err("--keep-running only applies to `-- COMMAND`".into());
        }
        let probes = self
            .probe
            .iter()
            .map(|u| crate::capture::probe::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        if !(self.max_stop_pct > 0.0 && self.max_stop_pct <= 100.0) {
            return Err(format!(
                "--max-stop-pct {} must be more than 0 and at most 100",
                self.max_stop_pct
            ));
        }
        if !(self.probe_timeout > 0.0 && self.probe_timeout <= 600.0) {
            return Err(format!(
                "--probe-timeout {} must be more than 0 and at most 600 seconds",
                self.probe_timeout
            ));
        }
        let (output_dir, output_policy) = match self.output {
            Some(dir) => (dir, DirPolicy::Named),
            None => (
                PathBuf::from(format!(
                    "loopprof-{}",
                    chrono::Local::now().format("%Y%m%d-%H%M%S")
                )),
                DirPolicy::New,
            ),
        };
        Ok(RecordOptions {
            target,
            duration,
            rate_hz: self.rate,
            output_dir,
            output_policy,
            locking: if self.nonblocking {
                Locking::None
            } else if self.stop_all_threads {
                Locking::AllThreads
            } else {
                Locking::PythonThreads
            },
            subprocesses: !self.no_subprocesses,
            keep_running: self.keep_running,
            compress: !self.uncompressed,
            probes,
            probe_timeout: Duration::from_secs_f64(self.probe_timeout),
            max_stop_pct: self.max_stop_pct,
        })
    }
}

/// The exit code for a capture error.
pub fn capture_exit_code(e: &CaptureError) -> i32 {
    match e {
        CaptureError::PermissionDenied { .. } | CaptureError::AlreadyTraced { .. } => {
            exit::PERMISSION
        }
        CaptureError::Output { .. } | CaptureError::Recording(_) => exit::IO,
        CaptureError::BadPattern { .. } | CaptureError::EmptyCommand => exit::USAGE,
        _ => exit::TARGET,
    }
}

/// Parses the command line, runs it, and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    match cli.command {
        Command::Record(args) => {
            let analysis = match args.analysis.load(Scope::Report) {
                Ok(a) => a,
                Err(msg) => {
                    err!("error: {msg}");
                    return exit::USAGE;
                }
            };
            match args.into_options() {
                Ok(opts) => run_record(opts, analysis),
                Err(msg) => {
                    err!("error: {msg}");
                    exit::USAGE
                }
            }
        }
        Command::Report(args) => {
            let analysis = match args.analysis.load(Scope::Report) {
                Ok(a) => a,
                Err(msg) => {
                    err!("error: {msg}");
                    return exit::USAGE;
                }
            };
            match run_report(&args.recording, args.output.as_deref(), analysis) {
                Ok((dir, passed)) => {
                    if args.open {
                        open_in_browser(&dir.join("report.html"));
                    }
                    if passed {
                        exit::OK
                    } else {
                        exit::GATE_FAILED
                    }
                }
                Err(e) => {
                    err!("error: {e:#}");
                    exit::IO
                }
            }
        }
        Command::Dump(args) => run_dump(args),
        Command::Diff(args) => {
            let analysis = match args.analysis.load(Scope::Diff) {
                Ok(a) => a,
                Err(msg) => {
                    err!("error: {msg}");
                    return exit::USAGE;
                }
            };
            match run_diff(&args, &analysis) {
                Ok(true) => exit::OK,
                Ok(false) => exit::GATE_FAILED,
                Err(e) => {
                    err!("error: {e:#}");
                    exit::IO
                }
            }
        }
        Command::Inspect(args) => match run_inspect(args) {
            Ok(()) => exit::OK,
            Err(e) => {
                err!("error: {e:#}");
                match e.downcast_ref::<RecordingError>() {
                    Some(_) => exit::IO,
                    None => exit::ERROR,
                }
            }
        },
    }
}

fn install_stop_handler() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let presses = Arc::new(AtomicUsize::new(0));
    let s = stop.clone();
    let _ = ctrlc::set_handler(move || {
        s.store(true, Ordering::SeqCst);
        if presses.fetch_add(1, Ordering::SeqCst) >= 2 {
            // Third press: the user insists. The kernel resumes any thread still stopped.
            std::process::exit(130);
        }
    });
    stop
}

fn run_record(opts: RecordOptions, analysis: Analysis) -> i32 {
    let stop = install_stop_handler();
    let bar = indicatif::ProgressBar::with_draw_target(
        None,
        if std::io::stderr().is_terminal() {
            indicatif::ProgressDrawTarget::stderr_with_hz(5)
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    // A start line (what, how long, where), then, without a terminal (CI logs, `nohup`), a
    // progress line every 10 s: a long recording never looks hung.
    let tty = std::io::stderr().is_terminal();
    let what = match &opts.target {
        capture::target::TargetSpec::Pid(pid) => format!("pid {pid}"),
        capture::target::TargetSpec::Name(p) => format!("the process matching {p:?}"),
        capture::target::TargetSpec::Command(c) => format!("{:?}", c.join(" ")),
    };
    let mut started = false;
    let mut last_line = std::time::Instant::now();
    let result = capture::record(&opts, stop, |p| {
        if !started {
            started = true;
            err!(
                "recording {} ({} process{}) {} at {} Hz; outputs go to {} when it ends{}",
                render::text::sanitize(&what),
                p.processes,
                if p.processes == 1 { "" } else { "es" },
                p.duration
                    .map(|d| format!("for {:.0} s", d.as_secs_f64()))
                    .unwrap_or_else(|| "until Ctrl-C".into()),
                opts.rate_hz,
                opts.output_dir.display(),
                if p.duration.is_some() {
                    " (Ctrl-C ends it early)"
                } else {
                    ""
                }
            );
        }
        if !tty && last_line.elapsed() >= std::time::Duration::from_secs(10) {
            last_line = std::time::Instant::now();
            err!(
                "recording: {:.0} s{} · {} samples · {} process{} · {} errors",
                p.elapsed.as_secs_f64(),
                p.duration
                    .map(|d| format!(" of {:.0} s", d.as_secs_f64()))
                    .unwrap_or_default(),
                p.samples,
                p.processes,
                if p.processes == 1 { "" } else { "es" },
                p.errors
            );
        }
        let secs = p.elapsed.as_secs_f64();
        let of = p
            .duration
            .map(|d| format!(" / {:.0} s", d.as_secs_f64()))
            .unwrap_or_else(|| " (Ctrl-C to stop)".into());
        bar.set_message(format!(
            "recording {secs:.1} s{of} · {} samples ({:.0}/s) · {} process{} · {} errors",
            p.samples,
            if secs > 0.0 {
                p.samples as f64 / secs
            } else {
                0.0
            },
            p.processes,
            if p.processes == 1 { "" } else { "es" },
            p.errors
        ));
        bar.tick();
    });
    bar.finish_and_clear();
    match result {
        Ok(outcome) => {
            for n in &outcome.notes {
                err!("note: {}", render::text::sanitize(n));
            }
            out!("recording: {}", outcome.path.display());
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            match write_report(&outcome.path, &opts.output_dir, &analysis, Some(command)) {
                Ok(true) => exit::OK,
                Ok(false) => exit::GATE_FAILED,
                Err(e) => {
                    err!("error: the recording is saved but could not be analysed: {e:#}");
                    exit::IO
                }
            }
        }
        Err(e) => {
            err!("error: {e}");
            capture_exit_code(&e)
        }
    }
}

/// Loads a recording, diagnoses it, writes every output into `dir` and prints the result.
/// Returns whether every `--fail-on` gate passed.
fn write_report(
    recording_path: &Path,
    dir: &Path,
    analysis: &Analysis,
    command: Option<String>,
) -> anyhow::Result<bool> {
    let rec = recording::load(recording_path)?;
    // What `loopprof diff` is given as BEFORE: the output directory holding the recording,
    // or the recording file itself.
    let before = match recording_path.file_name().and_then(|n| n.to_str()) {
        Some(recording::RECORDING_FILE) => recording_path.parent().unwrap_or(recording_path),
        _ => recording_path,
    }
    .to_string_lossy()
    .into_owned();
    for w in &rec.warnings {
        err!("warning: {}", render::text::sanitize(w));
    }
    let d = diagnose(&rec, &analysis.catalog, &analysis.options);
    let results = gates::evaluate(
        &analysis.gates,
        &gates::facts_of(&d, &crate::analysis::probes::summarize(&rec)),
    );
    outdir::prepare_dir(dir, DirPolicy::Named)?;
    // Every file is written before anything is printed: a closed stdout loses nothing.
    let summary = outdir::write_file(
        dir,
        "summary.json",
        render::json::to_string(&rec, &d, &results).as_bytes(),
    )?;
    let page = render::html::render(
        &rec,
        &d,
        &render::html::HtmlOptions {
            command: command.clone(),
            gates: results.clone(),
            before: Some(before.clone()),
        },
    )
    .context("rendering report.html")?;
    let html = outdir::write_file(dir, "report.html", page.as_bytes())?;
    let md = outdir::write_file(
        dir,
        "report.md",
        render::markdown::render(&rec, &d, command.as_deref(), &results, Some(&before)).as_bytes(),
    )?;
    let flamegraphs = write_flamegraphs(&rec, &d, dir)?;
    out!("{}", render::text::diagnosis(&d));
    out!("report:    {}", html.display());
    out!("markdown:  {}", md.display());
    out!("summary:   {}", summary.display());
    for path in flamegraphs {
        out!("flamegraph: {}", path.display());
    }
    if !d.findings.is_empty() {
        let v = render::verify::steps(&rec, &before);
        out!("\nverify the fix (after deploying it, under the same load):");
        out!("  {}", render::text::sanitize(&v.record));
        out!("  {}", render::text::sanitize(&v.diff));
        if let Some(n) = &v.note {
            out!("  ({})", render::text::sanitize(n));
        }
    }
    Ok(report_gates(&results))
}

/// Prints the gates' outcome (failures on stderr) and says whether all passed.
fn report_gates(results: &[gates::GateResult]) -> bool {
    let text = render::text::gates(results);
    if gates::any_failed(results) {
        err!("{}", text.trim_end_matches('\n'));
        let failed = results.iter().filter(|r| r.failed).count();
        err!(
            "error: {failed} of {} --fail-on gate{} failed (exit {})",
            results.len(),
            if results.len() == 1 { "" } else { "s" },
            exit::GATE_FAILED
        );
        false
    } else {
        if !text.is_empty() {
            out!("{}", text.trim_end_matches('\n'));
        }
        true
    }
}

/// The directory a recording path lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// `loopprof diff`: diagnoses both recordings with the same settings, compares them, writes
/// diff.html, diff.md and diff.json. Returns whether every gate passed.
fn run_diff(args: &DiffArgs, analysis: &Analysis) -> anyhow::Result<bool> {
    let bpath = recording::reader::resolve_path(&args.before);
    let apath = recording::reader::resolve_path(&args.after);
    let load = |label: &str, p: &Path| -> anyhow::Result<recording::Recording> {
        let rec =
            recording::load(p).with_context(|| format!("loading {label} ({})", p.display()))?;
        for w in &rec.warnings {
            err!("warning ({label}): {}", render::text::sanitize(w));
        }
        Ok(rec)
    };
    let brec = load("BEFORE", &bpath)?;
    let arec = load("AFTER", &apath)?;
    let bd = diagnose(&brec, &analysis.catalog, &analysis.options);
    let ad = diagnose(&arec, &analysis.catalog, &analysis.options);
    let diff = crate::analysis::diff::diff(
        (&args.before.display().to_string(), &brec, &bd),
        (&args.after.display().to_string(), &arec, &ad),
        &crate::analysis::diff::Thresholds::default(),
    );
    let results = gates::evaluate(
        &analysis.gates,
        &crate::analysis::diff::facts(&diff, &ad, &crate::analysis::probes::summarize(&arec)),
    );
    let dir = args.output.clone().unwrap_or_else(|| parent_dir(&apath));
    outdir::prepare_dir(&dir, DirPolicy::Named)?;
    let json = outdir::write_file(
        &dir,
        "diff.json",
        render::json::diff_to_string(
            &diff,
            render::json::DiffAnalysis {
                threshold_ms: analysis.options.threshold_ms,
                min_share_pct: analysis.options.min_share_pct,
            },
            &results,
        )
        .as_bytes(),
    )?;
    let page = render::html::render_diff(
        &render::html::DiffInput {
            before: (&brec, &bd),
            after: (&arec, &ad),
        },
        &diff,
        &results,
    )
    .context("rendering diff.html")?;
    let html = outdir::write_file(&dir, "diff.html", page.as_bytes())?;
    let md = outdir::write_file(
        &dir,
        "diff.md",
        render::markdown::diff(&diff, &results).as_bytes(),
    )?;
    out!("{}", render::text::diff(&diff));
    out!("diff:      {}", html.display());
    out!("markdown:  {}", md.display());
    out!("json:      {}", json.display());
    Ok(report_gates(&results))
}

/// Writes every flame-graph view, merged over processes, and per process when the loop runs
/// in several (workers). Views without samples (no stall: no loop-blocked graph) are skipped.
fn write_flamegraphs(
    rec: &recording::Recording,
    d: &crate::analysis::diagnose::Diagnosis,
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    use render::flamegraph::{svg, View};
    let mut pids: Vec<u32> = d.loops.iter().map(|l| l.pid).collect();
    pids.dedup();
    let mut written = Vec::new();
    for view in View::ALL {
        let mut targets: Vec<(Option<u32>, String)> = vec![(None, view.stem().to_owned())];
        if pids.len() > 1 {
            targets.extend(
                pids.iter()
                    .map(|p| (Some(*p), format!("{}-{p}", view.stem()))),
            );
        }
        for (pid, stem) in targets {
            if let Some(svg) = svg(rec, d, view, pid) {
                written.push(outdir::write_file(
                    dir,
                    &format!("{stem}.svg"),
                    svg.as_bytes(),
                )?);
            }
        }
    }
    Ok(written)
}

/// Opens a file with the desktop's browser; says so (and how to open it) when there is none.
/// Without a graphical session (`DISPLAY`/`WAYLAND_DISPLAY`) only `$BROWSER` is tried (a
/// headless server's `xdg-open` exists but opens nothing). An opener that exits with an error
/// within 3 s did not open it; one still running (a browser in the foreground) or exiting 0 did.
fn open_in_browser(path: &Path) {
    let mut candidates: Vec<String> = std::env::var("BROWSER")
        .map(|b| b.split(':').map(String::from).collect())
        .unwrap_or_default();
    let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    if graphical {
        candidates.extend(["xdg-open", "sensible-browser"].map(String::from));
    }
    for c in candidates.iter().filter(|c| !c.is_empty()) {
        let spawned = std::process::Command::new(c)
            .arg(path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(mut child) = spawned else {
            continue;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let opened = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status.success(),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        if opened {
            err!("opened {} with {c}", path.display());
            return;
        }
    }
    err!(
        "note: no browser could open the report ({}); open {} yourself, or copy it to a machine with one",
        if graphical {
            "tried $BROWSER, xdg-open, sensible-browser"
        } else {
            "no graphical session: DISPLAY and WAYLAND_DISPLAY are unset, and $BROWSER is not set"
        },
        path.display()
    );
}

/// `loopprof report`: returns the output directory and whether every gate passed.
fn run_report(
    recording_path: &Path,
    output: Option<&Path>,
    analysis: Analysis,
) -> anyhow::Result<(PathBuf, bool)> {
    let resolved = recording::reader::resolve_path(recording_path);
    let dir = match output {
        Some(d) => d.to_path_buf(),
        None => parent_dir(&resolved),
    };
    let passed = write_report(&resolved, &dir, &analysis, None)?;
    Ok((dir, passed))
}

fn run_dump(args: DumpArgs) -> i32 {
    if args.snapshots < 2 || args.snapshots > 1000 || !(args.window > 0.0 && args.window <= 60.0) {
        err!("error: --snapshots must be 2-1000 and --window more than 0 and at most 60 s");
        return exit::USAGE;
    }
    let target = match (args.pid, args.name) {
        (Some(p), None) => TargetSpec::Pid(p),
        (None, Some(n)) => TargetSpec::Name(n),
        _ => {
            err!("error: choose the target once: --pid or --name");
            return exit::USAGE;
        }
    };
    // A private, unpredictable temporary directory (mkdtemp), removed when dropped.
    let tmp = match tempfile::Builder::new().prefix("loopprof-dump-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            err!(
                "error: cannot create a temporary directory in {}: {e}. Set TMPDIR to a writable directory.",
                std::env::temp_dir().display()
            );
            return exit::IO;
        }
    };
    let dir = tmp.path().to_path_buf();
    let rate = args.snapshots as f64 / args.window;
    let opts = RecordOptions {
        target,
        // Ticks are taken at 0, 1/rate, ...: ending half an interval before the window's end
        // takes exactly `--snapshots` of them.
        duration: Some(Duration::from_secs_f64(args.window - 0.5 / rate)),
        rate_hz: rate,
        output_dir: dir.clone(),
        output_policy: DirPolicy::Named,
        locking: Locking::PythonThreads,
        subprocesses: !args.no_subprocesses,
        keep_running: false,
        compress: false,
        probes: Vec::new(),
        probe_timeout: Duration::from_secs(5),
        max_stop_pct: 10.0,
    };
    let result = capture::record(&opts, install_stop_handler(), |_| {});
    let code = match result {
        Ok(outcome) => match recording::load(&outcome.path) {
            Ok(rec) => {
                // A stall must span several snapshots: one busy snapshot is any short callback.
                let interval_ms = 1000.0 / rate;
                let dopts = DiagnoseOptions {
                    threshold_ms: (2.5 * interval_ms).max(50.0),
                    min_share_pct: 100.0,
                };
                let d = diagnose(&rec, &Catalog::builtin(), &dopts);
                let dump = crate::analysis::dump::dump(&rec, &d);
                if args.json {
                    out!(
                        "{}",
                        serde_json::to_string_pretty(&dump).expect("dump serialises")
                    );
                } else {
                    out!("{}", render::text::dump(&dump).trim_end_matches('\n'));
                    if let Some(f) = d.findings.first() {
                        out!("fix ({}): {}", f.category, f.fix.summary);
                    }
                }
                if !d.quality.trusted {
                    exit::INCONCLUSIVE
                } else if dump.loop_blocked {
                    exit::LOOP_BLOCKED
                } else {
                    exit::OK
                }
            }
            Err(e) => {
                err!("error: {e}");
                exit::IO
            }
        },
        Err(e) => {
            err!("error: {e}");
            capture_exit_code(&e)
        }
    };
    drop(tmp);
    code
}

fn run_inspect(args: InspectArgs) -> anyhow::Result<()> {
    let rec = recording::load(&args.recording)?;
    let o = overview(&rec);
    for w in &rec.warnings {
        err!("warning: {}", render::text::sanitize(w));
    }
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&o).context("serialising the overview")?
        );
    } else {
        out!("{}", render::text::overview(&o).trim_end_matches('\n'));
    }
    Ok(())
}
