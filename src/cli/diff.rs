//! `loopprof diff`: diagnose two recordings with the same settings, compare them, write
//! diff.html, diff.md and diff.json.

use super::args::DiffArgs;
use super::error::CliError;
use super::exit;
use super::report::{parent_dir, printed, report_gates};
use crate::analysis::diagnose::diagnose;
use crate::analysis::diff::{self, Thresholds};
use crate::analysis::gates::{self, Scope};
use crate::analysis::probes;
use crate::capture::DirPolicy;
use crate::recording::{self, outdir, Recording};
use crate::render;
use crate::render::output::{diff_outputs, DiffInput};
use std::path::Path;

/// Loads one side, printing its reading warnings.
fn load(label: &'static str, p: &Path) -> Result<Recording, CliError> {
    let rec = recording::load(p).map_err(|source| CliError::InputOf {
        label,
        path: p.display().to_string(),
        source,
    })?;
    for w in &rec.warnings {
        err!("warning ({label}): {}", render::text::sanitize(w));
    }
    Ok(rec)
}

/// `loopprof diff`: returns the exit code (0, or 7 when a gate failed).
pub fn run(args: DiffArgs) -> Result<i32, CliError> {
    let analysis = args.analysis.load(Scope::Diff)?;
    let bpath = recording::reader::resolve_path(&args.before);
    let apath = recording::reader::resolve_path(&args.after);
    let brec = load("BEFORE", &bpath)?;
    let arec = load("AFTER", &apath)?;
    let bd = diagnose(&brec, &analysis.catalog, &analysis.options);
    let ad = diagnose(&arec, &analysis.catalog, &analysis.options);
    let diff = diff::diff(
        (&args.before.display().to_string(), &brec, &bd),
        (&args.after.display().to_string(), &arec, &ad),
        &Thresholds::default(),
    );
    let results = gates::evaluate(
        &analysis.gates,
        &diff::facts(&diff, &ad, &probes::summarize(&arec)),
    );
    let input = DiffInput {
        before: (&brec, &bd),
        after: (&arec, &ad),
        diff: &diff,
        threshold_ms: analysis.options.threshold_ms,
        min_share_pct: analysis.options.min_share_pct,
        gates: &results,
    };
    let mut files = Vec::new();
    for o in diff_outputs() {
        files.push((o.label(), o.file_name(), o.render(&input)?));
    }
    let dir = args.output.clone().unwrap_or_else(|| parent_dir(&apath));
    outdir::prepare_dir(&dir, DirPolicy::Named)?;
    let mut written = Vec::new();
    for (label, name, bytes) in files {
        written.push((label, outdir::write_file(&dir, name, &bytes)?));
    }
    out!("{}", render::text::diff(&diff));
    for (label, path) in written {
        out!("{}", printed(label, &path));
    }
    Ok(if report_gates(&results) {
        exit::OK
    } else {
        exit::GATE_FAILED
    })
}
