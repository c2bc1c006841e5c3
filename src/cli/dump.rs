//! `loopprof dump`: snapshot a (possibly hung) server for a second into a private temporary
//! recording, and print every thread's stack and state and what blocks the loop.

use super::args::DumpArgs;
use super::error::{private_temp_dir, CliError};
use super::exit;
use super::record::install_stop_handler;
use crate::analysis::catalog::Catalog;
use crate::analysis::diagnose::diagnose;
use crate::analysis::dump::{self, Outcome};
use crate::capture::{self, RecordOptions};
use crate::recording;
use crate::render;

/// `loopprof dump`: returns 0 (not blocked), 6 (blocked) or 8 (inconclusive).
pub fn run(args: DumpArgs) -> Result<i32, CliError> {
    let tmp = private_temp_dir("loopprof-dump-")?;
    let opts = RecordOptions::snapshots(
        args.target(),
        args.snapshots,
        args.window,
        !args.no_subprocesses,
        tmp.path().to_path_buf(),
    );
    let outcome = capture::record(&opts, install_stop_handler(), |_| {})?;
    let rec = recording::load(&outcome.path)?;
    let catalog = Catalog::builtin();
    let d = diagnose(&rec, &catalog, &dump::options(opts.rate_hz));
    let snapshot = dump::dump(&rec, &d, &catalog);
    if args.json {
        out!("{}", render::json::dump_to_string(&snapshot));
    } else {
        out!("{}", render::text::dump(&snapshot).trim_end_matches('\n'));
        if let Some(f) = d.findings.first() {
            out!("fix ({}): {}", f.category, f.fix.summary);
        }
    }
    Ok(match dump::outcome(&d, &snapshot) {
        Outcome::Inconclusive => exit::INCONCLUSIVE,
        Outcome::LoopBlocked => exit::LOOP_BLOCKED,
        Outcome::NotBlocked => exit::OK,
    })
}
