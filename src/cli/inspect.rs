//! `loopprof inspect`: a recording's overview (processes, threads, states, syscalls, hottest
//! frames), as text or JSON.

use super::args::InspectArgs;
use super::error::CliError;
use super::exit;
use crate::analysis::overview::overview;
use crate::recording;
use crate::render;

/// `loopprof inspect`: returns exit 0.
pub fn run(args: InspectArgs) -> Result<i32, CliError> {
    let rec = recording::load(&args.recording)?;
    let o = overview(&rec);
    for w in &rec.warnings {
        err!("warning: {}", render::text::sanitize(w));
    }
    if args.json {
        out!("{}", render::json::overview_to_string(&o));
    } else {
        out!("{}", render::text::overview(&o).trim_end_matches('\n'));
    }
    Ok(exit::OK)
}
