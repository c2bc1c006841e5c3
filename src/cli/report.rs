//! `loopprof report` (and the report at the end of `record`): load a recording, diagnose it,
//! write summary.json, report.html, report.md and the flame graphs, print the findings.

use super::args::{Analysis, ReportArgs};
use super::error::CliError;
use super::exit;
use crate::analysis::diagnose::{diagnose, Diagnosis};
use crate::analysis::gates;
use crate::analysis::probes;
use crate::capture::DirPolicy;
use crate::recording::{self, outdir, Recording};
use crate::render;
use crate::render::output::{report_outputs, ReportInput};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `loopprof report`: returns the exit code (0, or 7 when a gate failed).
pub fn run(args: ReportArgs) -> Result<i32, CliError> {
    let analysis = args.analysis.load(gates::Scope::Report)?;
    let resolved = recording::reader::resolve_path(&args.recording);
    let dir = match args.output {
        Some(d) => d,
        None => parent_dir(&resolved),
    };
    let passed = write_report(&resolved, &dir, &analysis, None)?;
    if args.open {
        open_in_browser(&dir.join("report.html"));
    }
    Ok(if passed { exit::OK } else { exit::GATE_FAILED })
}

/// Loads a recording, diagnoses it, writes every output into `dir` and prints the result.
/// Returns whether every `--fail-on` gate passed.
pub fn write_report(
    recording_path: &Path,
    dir: &Path,
    analysis: &Analysis,
    command: Option<String>,
) -> Result<bool, CliError> {
    let rec = recording::load(recording_path)?;
    // What `loopprof diff` is given as BEFORE: the output directory holding the recording,
    // or the recording file itself.
    let uncompressed = recording::RECORDING_FILE.trim_end_matches(".gz");
    let before = match recording_path.file_name().and_then(|n| n.to_str()) {
        Some(name) if name == recording::RECORDING_FILE || name == uncompressed => {
            recording_path.parent().unwrap_or(recording_path)
        }
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
        &gates::facts_of(&d, &probes::summarize(&rec)),
    );
    // Every file is rendered, then written, before anything is printed: a closed stdout
    // loses nothing, and a render failure leaves no half-written output.
    let input = ReportInput {
        rec: &rec,
        d: &d,
        gates: &results,
        command: command.as_deref(),
        before: Some(&before),
    };
    let mut files = Vec::new();
    for o in report_outputs() {
        files.push((o.label(), o.file_name().to_owned(), o.render(&input)?));
    }
    for (name, svg) in flamegraphs(&rec, &d)? {
        files.push(("flamegraph", name, svg.into_bytes()));
    }
    outdir::prepare_dir(dir, DirPolicy::Named)?;
    let mut written = Vec::new();
    for (label, name, bytes) in files {
        written.push((label, outdir::write_file(dir, &name, &bytes)?));
    }
    out!("{}", render::text::diagnosis(&d));
    for (label, path) in written {
        out!("{}", printed(label, &path));
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

/// `label:` and the path, aligned as the printout has always been (`report:    PATH`).
pub fn printed(label: &str, path: &Path) -> String {
    format!("{:<10} {}", format!("{label}:"), path.display())
}

/// Prints the gates' outcome (failures on stderr) and says whether all passed.
pub fn report_gates(results: &[gates::GateResult]) -> bool {
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
pub fn parent_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Every flame-graph file (name, SVG): each view merged over processes, and per process when
/// the loop runs in several (workers), then the await chains of the asyncio tasks
/// (`flame-awaits.svg`) when tasks were read. Views without samples (no stall: no loop-blocked
/// graph) are left out. Which graphs: [`render::flamegraph::targets`].
fn flamegraphs(rec: &Recording, d: &Diagnosis) -> Result<Vec<(String, String)>, CliError> {
    use render::flamegraph::{svg, targets, View};
    let mut out = Vec::new();
    for view in View::ALL {
        for (pid, stem) in targets(d, view) {
            if let Some(svg) = svg(rec, d, view, pid)? {
                out.push((format!("{stem}.svg"), svg));
            }
        }
    }
    // Where requests wait: the await chains of the asyncio tasks (format 6 recordings).
    if let Some(svg) = render::flamegraph::await_svg(rec)? {
        out.push(("flame-awaits.svg".to_owned(), svg));
    }
    Ok(out)
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
        if opened_with(c, path) {
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

/// Whether `opener PATH` took the file: still running after 3 s, or exited 0.
fn opened_with(opener: &str, path: &Path) -> bool {
    let spawned = std::process::Command::new(opener)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = spawned else {
        return false;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}
