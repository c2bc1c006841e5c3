//! The command line: clap types ([`args`]), one module per subcommand, one error type
//! ([`error::CliError`]) with one mapping to the documented exit codes ([`exit`]).
//!
//! clap types stop in [`args`]: each subcommand's arguments become the stage's options struct
//! ([`crate::capture::RecordOptions`], [`crate::analysis::diagnose::Options`]) before any work
//! starts. Each subcommand returns the exit code it earned or a [`error::CliError`]; [`main`]
//! prints the error once and maps it.

#[macro_use]
pub mod output;
pub mod args;
pub mod diff;
pub mod doctor;
pub mod dump;
pub mod error;
pub mod export;
pub mod inspect;
pub mod record;
pub mod report;

pub use output::print_line;

use args::{Cli, Command};
use clap::Parser;

/// Exit codes (documented in README.md and docs/cli.md).
pub mod exit {
    /// Success; the recording is complete.
    pub const OK: i32 = 0;
    /// An unexpected error (a bug: an output that could not be rendered).
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
    let result = match cli.command {
        Command::Record(args) => record::run(args),
        Command::Report(args) => report::run(args),
        Command::Dump(args) => dump::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Export(args) => export::run(args),
    };
    match result {
        Ok(_) if output::stdout_failed() => exit::IO,
        Ok(code) => code,
        Err(e) => {
            err!("error: {e}");
            e.exit_code()
        }
    }
}
