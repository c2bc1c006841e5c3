//! `loopprof export RECORDING --format FORMAT [-o FILE]`: the recording in a format other
//! tools open (speedscope; folded stacks for flamegraph.pl/inferno; pprof for go tool pprof
//! and Grafana Pyroscope; the Trace Event Format for Perfetto), written to a file or to
//! stdout.

use super::args::{ExportArgs, ExportFormat};
use super::error::CliError;
use super::exit;
use crate::analysis::diagnose::diagnose;
use crate::analysis::{catalog::Catalog, diagnose::Options};
use crate::capture::DirPolicy;
use crate::recording::{self, outdir};
use crate::render;
use crate::render::flamegraph::View;
use crate::render::output::{ChromeTrace, Collapsed, Output, Pprof, ReportInput, Speedscope};
use std::io::Write;

/// `loopprof export`: returns exit 0.
pub fn run(args: ExportArgs) -> Result<i32, CliError> {
    let rec = recording::load(&args.recording)?;
    for w in &rec.warnings {
        err!("warning: {}", render::text::sanitize(w));
    }
    let d = diagnose(&rec, &Catalog::builtin(), &Options::default());
    let input = ReportInput {
        rec: &rec,
        d: &d,
        gates: &[],
        command: None,
        before: None,
    };
    let view = match args.view {
        super::args::ViewArg::Wall => View::Wall,
        super::args::ViewArg::Cpu => View::Cpu,
        super::args::ViewArg::OffCpu => View::OffCpu,
        super::args::ViewArg::LoopBlocked => View::LoopBlocked,
    };
    let collapsed = Collapsed(view);
    let output: &dyn Output<ReportInput<'_>> = match args.format {
        ExportFormat::Speedscope => &Speedscope,
        ExportFormat::Collapsed => &collapsed,
        ExportFormat::Pprof => &Pprof,
        ExportFormat::ChromeTrace => &ChromeTrace,
    };
    if args.format == ExportFormat::Pprof
        && args.output.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(CliError::Usage(
            "pprof is gzip-compressed binary: write it to a file with -o profile.pb.gz, or redirect stdout".into(),
        ));
    }
    let bytes = output.render(&input)?;
    match args.output.as_deref() {
        None => {
            // A closed stdout (`| head`) ends quietly, as everywhere else.
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
                super::output::stdout_error(&e);
            }
            if bytes.is_empty() {
                err!("note: no sample falls in this view, so there is nothing to write");
            }
        }
        Some(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                CliError::Usage(format!("-o {}: not a file name", path.display()))
            })?;
            outdir::prepare_dir(&dir, DirPolicy::Named)?;
            let written = outdir::write_file(&dir, name, &bytes)?;
            err!("{}: {}", output.label(), written.display());
        }
    }
    Ok(exit::OK)
}
