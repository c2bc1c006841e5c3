//! The clap types of every subcommand and their conversion into the stages' plain option
//! structs. clap types stop here: range checks are clap value parsers (so a bad value is
//! reported like any clap usage error, exit 2), and what depends on several arguments or on a
//! file (`--catalog`, `--fail-on`) is checked by [`AnalysisArgs::load`] before any work.

use super::error::CliError;
use crate::analysis::catalog::Catalog;
use crate::analysis::diagnose::Options as DiagnoseOptions;
use crate::analysis::gates::{self, Gate, Scope};
use crate::capture::sampler::Locking;
use crate::capture::{self, DirPolicy, RecordOptions, TargetSpec};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// loopprof: find what blocks the asyncio event loop of a running uvicorn/gunicorn server.
#[derive(Debug, Parser)]
#[command(name = "loopprof", version, about, long_about = None)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Check before an incident that recording will work: ptrace permission (root,
    /// CAP_SYS_PTRACE, ptrace_scope, seccomp) and, with --pid, the target's Python, its event
    /// loop and workers, its source files. Exit 4 or 3 when recording would fail.
    Doctor(DoctorArgs),
    /// Write a recording in a format other tools open: speedscope's JSON, or folded stacks
    /// (flamegraph.pl, inferno) of one view.
    Export(ExportArgs),
}

/// A value parser for a float in `(min, max]` (`min` excluded), `what` naming the unit.
fn float_in(
    min: f64,
    max: f64,
    what: &'static str,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if v > min && v <= max && v.is_finite() {
            Ok(v)
        } else if max.is_finite() {
            Err(format!("use more than {min} and at most {max} {what}"))
        } else {
            Err(format!("use a positive number of {what}"))
        }
    }
}

/// A percentage, 0–100 inclusive.
fn percentage(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err("use a percentage (0-100)".into())
    }
}

/// Options of the diagnosis, shared by `record`, `report` and `diff`.
#[derive(Debug, Args)]
pub struct AnalysisArgs {
    /// A busy stretch of the event loop at least this long is a stall.
    #[arg(long, default_value_t = DiagnoseOptions::default().threshold_ms, value_name = "MS",
          value_parser = float_in(0.0, f64::INFINITY, "milliseconds"))]
    pub threshold_ms: f64,
    /// Short blocks at one call site adding up to this share of the window are a finding.
    #[arg(long, default_value_t = DiagnoseOptions::default().min_share_pct, value_name = "PCT",
          value_parser = percentage)]
    pub min_share: f64,
    /// Extra catalog entries (JSON, see docs/detection.md), for in-house wrappers; repeatable.
    #[arg(long, value_name = "FILE")]
    pub catalog: Vec<PathBuf>,
    /// Exit 7 when this holds, e.g. 'loop_blocked_pct > 5', 'max_stall_ms > 200',
    /// 'category == executor-shutdown-wait' (`diff`: also 'regression'); repeatable, any
    /// failing gate fails. Every output is still written. Metrics: docs/cli.md.
    #[arg(long, value_name = "EXPR")]
    pub fail_on: Vec<String>,
}

/// Everything the analysis needs, checked before any work starts.
pub struct Analysis {
    /// Built-in catalog with the user's in front.
    pub catalog: Catalog,
    /// Diagnosis options.
    pub options: DiagnoseOptions,
    /// Parsed `--fail-on` gates.
    pub gates: Vec<Gate>,
}

impl AnalysisArgs {
    /// Reads the catalogs and parses the gates for `scope`: a usage error when either is bad.
    pub fn load(&self, scope: Scope) -> Result<Analysis, CliError> {
        let catalog = load_catalog(&self.catalog)?;
        let ids: Vec<String> = catalog.entries().map(|e| e.id.clone()).collect();
        let gates = gates::parse_all(&self.fail_on, scope, &ids)
            .map_err(|e| CliError::Usage(e.to_string()))?;
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

/// Reads user catalog files and loads them in front of the built-in one.
fn load_catalog(paths: &[PathBuf]) -> Result<Catalog, CliError> {
    let mut files = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|e| {
            CliError::Usage(format!(
                "cannot read catalog {}: {e}. Check the path given to --catalog.",
                p.display()
            ))
        })?;
        files.push((p.display().to_string(), text));
    }
    Catalog::with_user(&files).map_err(|e| CliError::Usage(e.to_string()))
}

/// `loopprof diff`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct DiffArgs {
    /// The BEFORE recording (file or output directory of `loopprof record`).
    pub before: PathBuf,
    /// The AFTER recording.
    pub after: PathBuf,
    /// Where to write diff.html, diff.md, diff.json (default: the AFTER recording's directory).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Diagnosis options.
    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

/// `loopprof report`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct ReportArgs {
    /// A recording file, or an output directory of `loopprof record`.
    pub recording: PathBuf,
    /// Where to write the report files (default: the recording's directory).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Open report.html in a browser (xdg-open, sensible-browser or $BROWSER) when there is one.
    #[arg(long)]
    pub open: bool,
    /// Diagnosis options.
    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

/// `loopprof record`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").args(["pid", "name", "command"]).required(true))]
#[command(allow_negative_numbers = true)]
pub struct RecordArgs {
    /// Pid of the uvicorn/gunicorn process (its Python child processes are recorded too).
    #[arg(long, short = 'p')]
    pub pid: Option<u32>,
    /// Regular expression matched against full command lines, like `pgrep -f`; the root of
    /// the matching process tree is recorded.
    #[arg(long, short = 'n', value_name = "PATTERN")]
    pub name: Option<String>,
    /// Seconds to record (default: until Ctrl-C or the target exits).
    #[arg(long, short = 'd', value_name = "SECS",
          value_parser = float_in(0.0, 31_536_000.0, "seconds"))]
    pub duration: Option<f64>,
    /// Samples per second per process.
    #[arg(long, short = 'r', default_value_t = capture::DEFAULT_RATE_HZ, value_name = "HZ",
          value_parser = float_in(0.0, 5000.0, "samples per second"))]
    pub rate: f64,
    /// Output directory (default: loopprof-YYYYmmdd-HHMMSS in the current directory).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Read stacks without stopping any thread (no pause of the target; some samples fail
    /// or come out torn).
    #[arg(long, conflicts_with = "stop_all_threads")]
    pub nonblocking: bool,
    /// Stop every OS thread of the process while reading, as py-spy does by default, instead
    /// of only the Python threads (for comparisons).
    #[arg(long)]
    pub stop_all_threads: bool,
    /// Record only the given process, not its Python child processes (workers).
    #[arg(long)]
    pub no_subprocesses: bool,
    /// With `-- COMMAND`: leave the command running when the recording ends.
    #[arg(long, conflicts_with_all = ["pid", "name"])]
    pub keep_running: bool,
    /// Write the recording as plain JSON Lines instead of gzip.
    #[arg(long)]
    pub uncompressed: bool,
    /// While recording, GET this http:// URL every 200 ms (like `curl -m 5 .../health`);
    /// latencies and timeouts go into the recording and the report. Repeatable.
    #[arg(long, value_name = "URL", value_parser = crate::capture::probe::parse)]
    pub probe: Vec<crate::capture::probe::ProbeUrl>,
    /// Timeout of each probe request, seconds.
    #[arg(long, default_value_t = capture::DEFAULT_PROBE_TIMEOUT_S, value_name = "SECS",
          value_parser = float_in(0.0, 600.0, "seconds"))]
    pub probe_timeout: f64,
    /// Most of the time the target may be held stopped, percent: a tick whose read stopped
    /// it longer puts the next tick off (the rate drops, and the report says so).
    #[arg(long, default_value_t = capture::DEFAULT_MAX_STOP_PCT, value_name = "PCT",
          value_parser = float_in(0.0, 100.0, "percent"))]
    pub max_stop_pct: f64,
    /// Milliseconds between two reads of the asyncio tasks (where requests wait). Tasks are
    /// read without stopping the target.
    #[arg(long, default_value_t = capture::DEFAULT_TASK_INTERVAL_MS, value_name = "MS",
          value_parser = float_in(10.0, 60_000.0, "milliseconds"))]
    pub task_interval: f64,
    /// Do not read asyncio tasks.
    #[arg(long)]
    pub no_tasks: bool,
    /// Start this command and record it (`loopprof record -- uvicorn app:app`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Diagnosis options.
    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

/// `loopprof dump`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").args(["pid", "name"]).required(true))]
#[command(allow_negative_numbers = true)]
pub struct DumpArgs {
    /// Pid of the uvicorn/gunicorn process (its Python child processes are dumped too).
    #[arg(long, short = 'p')]
    pub pid: Option<u32>,
    /// Regular expression matched against full command lines, like `pgrep -f`.
    #[arg(long, short = 'n', value_name = "PATTERN")]
    pub name: Option<String>,
    /// Snapshots to take.
    #[arg(long, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub snapshots: u32,
    /// Seconds the snapshots are spread over.
    #[arg(long, default_value_t = 1.0, value_name = "SECS",
          value_parser = float_in(0.0, 60.0, "seconds"))]
    pub window: f64,
    /// Only the given process, not its Python child processes.
    #[arg(long)]
    pub no_subprocesses: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Formats of `loopprof export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// speedscope's JSON: one profile per thread, wall-time weights (opens in speedscope).
    Speedscope,
    /// Folded stacks, `root;...;leaf count` (flamegraph.pl, inferno).
    Collapsed,
    /// pprof's gzipped profile.proto with labels (go tool pprof, Grafana Pyroscope).
    Pprof,
    /// The Trace Event Format: per-thread state slices, probes, findings, CPU (Perfetto UI,
    /// chrome://tracing).
    ChromeTrace,
}

/// The flame-graph views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewArg {
    /// Every sample.
    Wall,
    /// On CPU (GIL held, or native code running).
    Cpu,
    /// Off CPU (waiting, GIL wait).
    OffCpu,
    /// The event loop's samples inside stalls.
    LoopBlocked,
}

/// `loopprof export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A recording file, or an output directory of `loopprof record`.
    pub recording: PathBuf,
    /// The format.
    #[arg(long, short = 'f', value_enum)]
    pub format: ExportFormat,
    /// With `--format collapsed`: the view (speedscope holds every sample of every thread).
    #[arg(long, value_enum, default_value = "wall")]
    pub view: ViewArg,
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `loopprof doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also check this process: attach, Python version and build, event loop, sources.
    #[arg(long, short = 'p')]
    pub pid: Option<u32>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `loopprof inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A recording file, or an output directory of `loopprof record`.
    pub recording: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl RecordArgs {
    /// Converts the parsed arguments into the capture stage's options.
    pub fn into_options(self) -> RecordOptions {
        // clap's "target" group makes exactly one of the three present.
        let target = match (self.pid, self.name) {
            (Some(pid), _) => TargetSpec::Pid(pid),
            (None, Some(name)) => TargetSpec::Name(name),
            (None, None) => TargetSpec::Command(self.command),
        };
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
        RecordOptions {
            target,
            duration: self.duration.map(Duration::from_secs_f64),
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
            probes: self.probe,
            probe_timeout: Duration::from_secs_f64(self.probe_timeout),
            max_stop_pct: self.max_stop_pct,
            task_interval: (!self.no_tasks)
                .then(|| Duration::from_secs_f64(self.task_interval / 1000.0)),
        }
    }
}

impl DumpArgs {
    /// The target named on the command line (clap's group makes exactly one present).
    pub fn target(&self) -> TargetSpec {
        match (self.pid, &self.name) {
            (Some(p), _) => TargetSpec::Pid(p),
            (None, Some(n)) => TargetSpec::Name(n.clone()),
            (None, None) => unreachable!("clap requires --pid or --name"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("loopprof").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_librarys() {
        let Command::Report(r) = parse(&["report", "x"]).unwrap().command else {
            panic!()
        };
        let d = DiagnoseOptions::default();
        assert_eq!(r.analysis.threshold_ms, d.threshold_ms);
        assert_eq!(r.analysis.min_share, d.min_share_pct);
        let Command::Record(r) = parse(&["record", "-p", "1"]).unwrap().command else {
            panic!()
        };
        let o = r.into_options();
        assert_eq!(o.rate_hz, capture::DEFAULT_RATE_HZ);
        assert_eq!(o.max_stop_pct, capture::DEFAULT_MAX_STOP_PCT);
        assert_eq!(
            o.probe_timeout.as_secs_f64(),
            capture::DEFAULT_PROBE_TIMEOUT_S
        );
        // `dump` records with the same duty cycle.
        let d = RecordOptions::snapshots(TargetSpec::Pid(1), 10, 1.0, true, "x".into());
        assert_eq!(d.max_stop_pct, o.max_stop_pct);
        assert_eq!(d.locking, o.locking);
        assert_eq!(o.locking, Locking::PythonThreads);
        assert!(o.subprocesses && o.compress && !o.keep_running);
        assert_eq!(o.duration, None);
        assert_eq!(o.output_policy, DirPolicy::New);
    }

    #[test]
    fn out_of_range_values_are_usage_errors() {
        for args in [
            &["record", "-p", "1", "--rate", "0"][..],
            &["record", "-p", "1", "--rate", "5001"],
            &["record", "-p", "1", "--duration", "-1"],
            &["record", "-p", "1", "--duration", "inf"],
            &["record", "-p", "1", "--max-stop-pct", "0"],
            &["record", "-p", "1", "--probe-timeout", "601"],
            &["record", "-p", "1", "--probe", "https://x/"],
            &["record", "-p", "1", "--keep-running"],
            &["record", "-p", "1", "-n", "uvicorn"],
            &["record"],
            &["report", "x", "--threshold-ms", "0"],
            &["report", "x", "--min-share", "101"],
            &["dump", "-p", "1", "--snapshots", "1"],
            &["dump", "-p", "1", "--window", "61"],
            &["dump"],
            &["doctor", "--pid", "x"],
            &["record", "-p", "1", "--duration", "1e20"],
            &["record", "-p", "1", "--duration", "-1"],
            &["report", "x", "--min-share", "-1"],
        ] {
            let e = parse(args).expect_err(&format!("{args:?} parses"));
            assert!(e.use_stderr(), "{args:?}: {e}");
        }
        let e = parse(&["record", "-p", "1", "--rate", "0"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("use more than 0 and at most 5000 samples per second"),
            "{e}"
        );
    }

    #[test]
    fn targets_and_options_convert() {
        let Command::Record(r) = parse(&[
            "record",
            "-n",
            "uvicorn",
            "-d",
            "2.5",
            "-r",
            "250",
            "-o",
            "out",
            "--nonblocking",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        let o = r.into_options();
        assert!(matches!(o.target, TargetSpec::Name(ref n) if n == "uvicorn"));
        assert_eq!(o.duration, Some(Duration::from_millis(2500)));
        assert_eq!(o.rate_hz, 250.0);
        assert_eq!(o.output_policy, DirPolicy::Named);
        assert_eq!(o.locking, Locking::None);
        let Command::Record(r) = parse(&["record", "--keep-running", "--", "uvicorn", "app:app"])
            .unwrap()
            .command
        else {
            panic!()
        };
        let o = r.into_options();
        assert!(matches!(o.target, TargetSpec::Command(ref c) if c.len() == 2));
        assert!(o.keep_running);
    }
}
