//! `loopprof record`: record a live target with a progress line, then write the report.

use super::args::RecordArgs;
use super::error::CliError;
use super::{exit, report};
use crate::analysis::gates::Scope;
use crate::capture::{self, Progress, RecordOptions, TargetSpec};
use crate::render;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `loopprof record`: returns the exit code (0, or 7 when a gate failed).
pub fn run(args: RecordArgs) -> Result<i32, CliError> {
    // Catalogs and gates are checked before the target is touched.
    let analysis = args.analysis.load(Scope::Report)?;
    let opts = args.into_options();
    let outcome = {
        let mut progress = ProgressPrinter::new(&opts);
        let result = capture::record(&opts, install_stop_handler(), |p| progress.update(p));
        progress.finish();
        result?
    };
    for n in &outcome.notes {
        err!("note: {}", render::text::sanitize(n));
    }
    out!("recording: {}", outcome.path.display());
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    match report::write_report(&outcome.path, &opts.output_dir, &analysis, Some(command)) {
        Ok(true) => Ok(exit::OK),
        Ok(false) => Ok(exit::GATE_FAILED),
        Err(e) => Err(CliError::Unanalysed(Box::new(e))),
    }
}

/// Ctrl-C sets the returned flag (the recording ends cleanly and is reported); a third press
/// exits at once with 130 (the kernel resumes any thread still stopped).
pub fn install_stop_handler() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let presses = Arc::new(AtomicUsize::new(0));
    let s = stop.clone();
    let _ = ctrlc::set_handler(move || {
        s.store(true, Ordering::SeqCst);
        if presses.fetch_add(1, Ordering::SeqCst) >= 2 {
            std::process::exit(130);
        }
    });
    stop
}

/// What is printed while recording: a start line (what, how long, where), a spinner on a
/// terminal, and without one (CI logs, `nohup`) a progress line every 10 s, so that a long
/// recording never looks hung.
struct ProgressPrinter<'o> {
    opts: &'o RecordOptions,
    bar: indicatif::ProgressBar,
    tty: bool,
    started: bool,
    last_line: Instant,
}

/// `process` or `processes`.
fn processes(n: usize) -> String {
    format!("{n} process{}", if n == 1 { "" } else { "es" })
}

impl<'o> ProgressPrinter<'o> {
    fn new(opts: &'o RecordOptions) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = indicatif::ProgressBar::with_draw_target(
            None,
            if tty {
                indicatif::ProgressDrawTarget::stderr_with_hz(5)
            } else {
                indicatif::ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        ProgressPrinter {
            opts,
            bar,
            tty,
            started: false,
            last_line: Instant::now(),
        }
    }

    fn update(&mut self, p: &Progress) {
        if !self.started {
            self.started = true;
            self.start_line(p);
        }
        if !self.tty && self.last_line.elapsed() >= Duration::from_secs(10) {
            self.last_line = Instant::now();
            err!(
                "recording: {:.0} s{} · {} samples · {} · {} errors",
                p.elapsed.as_secs_f64(),
                p.duration
                    .map(|d| format!(" of {:.0} s", d.as_secs_f64()))
                    .unwrap_or_default(),
                p.samples,
                processes(p.processes),
                p.errors
            );
        }
        let secs = p.elapsed.as_secs_f64();
        let of = p
            .duration
            .map(|d| format!(" / {:.0} s", d.as_secs_f64()))
            .unwrap_or_else(|| " (Ctrl-C to stop)".into());
        self.bar.set_message(format!(
            "recording {secs:.1} s{of} · {} samples ({:.0}/s) · {} · {} errors",
            p.samples,
            if secs > 0.0 {
                p.samples as f64 / secs
            } else {
                0.0
            },
            processes(p.processes),
            p.errors
        ));
        self.bar.tick();
    }

    fn start_line(&self, p: &Progress) {
        let what = match &self.opts.target {
            TargetSpec::Pid(pid) => format!("pid {pid}"),
            TargetSpec::Name(p) => format!("the process matching {p:?}"),
            TargetSpec::Command(c) => format!("{:?}", c.join(" ")),
        };
        err!(
            "recording {} ({}) {} at {} Hz; outputs go to {} when it ends{}",
            render::text::sanitize(&what),
            processes(p.processes),
            p.duration
                .map(|d| format!("for {:.0} s", d.as_secs_f64()))
                .unwrap_or_else(|| "until Ctrl-C".into()),
            self.opts.rate_hz,
            self.opts.output_dir.display(),
            if p.duration.is_some() {
                " (Ctrl-C ends it early)"
            } else {
                ""
            }
        );
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
