//! `loopprof doctor [--pid PID]`: the pre-flight check a user runs before an incident. The
//! host and target checks come from [`crate::capture::doctor`]; with a target that can be
//! attached, a half-second recording then says whether its event loop and workers are found
//! and whether its source files can be read. Exit 4 when ptrace would be refused, 3 when the
//! target cannot be recorded, 0 otherwise (warnings included).

use super::args::DoctorArgs;
use super::error::{private_temp_dir, CliError};
use super::exit;
use super::record::install_stop_handler;
use crate::analysis::loops;
use crate::capture::doctor::{self, Check, FailKind, Status};
use crate::capture::{self, RecordOptions, TargetSpec};
use crate::recording::frames::{self, Origin};
use crate::recording::{self, Recording};
use crate::render::text::sanitize;
use std::collections::BTreeSet;

/// `loopprof doctor`: prints every check; returns 0, 3 or 4.
pub fn run(args: DoctorArgs) -> Result<i32, CliError> {
    let mut checks = doctor::host_checks();
    if let Some(pid) = args.pid {
        let target = doctor::target_checks(pid);
        let attached = target.iter().all(|c| c.status != Status::Fail);
        checks.extend(target);
        if attached {
            checks.extend(recording_checks(pid)?);
        }
    }
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&checks).expect("checks serialise")
        );
    } else {
        for c in &checks {
            let mark = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out!("{mark}  {}: {}", c.name, sanitize(&c.detail));
            if let Some(fix) = &c.fix {
                for (i, line) in fix.lines().enumerate() {
                    let lead = if i == 0 { "fix:" } else { "    " };
                    out!("      {lead} {}", sanitize(line.trim()));
                }
            }
        }
    }
    let fails: Vec<FailKind> = checks.iter().filter_map(|c| c.fails).collect();
    Ok(if fails.contains(&FailKind::Permission) {
        exit::PERMISSION
    } else if fails.contains(&FailKind::Target) {
        exit::TARGET
    } else {
        exit::OK
    })
}

/// Records the target for half a second (a private temporary directory) and checks what the
/// recording shows.
fn recording_checks(pid: u32) -> Result<Vec<Check>, CliError> {
    let tmp = private_temp_dir("loopprof-doctor-")?;
    let opts = RecordOptions::snapshots(
        TargetSpec::Pid(pid),
        50,
        0.5,
        true,
        tmp.path().to_path_buf(),
    );
    let outcome = capture::record(&opts, install_stop_handler(), |_| {})?;
    let rec = recording::load(&outcome.path)?;
    Ok(vec![loop_check(&rec), source_check(&rec)])
}

/// The event loops found, per process, and the Python processes (workers) recorded.
fn loop_check(rec: &Recording) -> Check {
    let found = loops::find_loop_threads(rec);
    let processes = rec.processes.len();
    let with_loop: BTreeSet<u32> = found.iter().map(|l| l.pid).collect();
    let kinds: BTreeSet<String> = found
        .iter()
        .map(|l| format!("{:?}", l.kind).to_lowercase())
        .collect();
    if found.is_empty() {
        Check {
            name: "event loop",
            status: Status::Warn,
            detail: format!(
                "no asyncio/uvloop event loop seen in {processes} Python process{} over 0.5 s",
                if processes == 1 { "" } else { "es" }
            ),
            fix: Some("pass the pid of the uvicorn process, or of the gunicorn master (its uvicorn workers are found and recorded too); a server still starting has no loop yet".into()),
            fails: None,
        }
    } else {
        Check {
            name: "event loop",
            status: Status::Ok,
            detail: format!(
                "{} loop{} ({}) in {} of {processes} Python process{}",
                found.len(),
                if found.len() == 1 { "" } else { "s" },
                kinds.into_iter().collect::<Vec<_>>().join(", "),
                with_loop.len(),
                if processes == 1 { "" } else { "es" }
            ),
            fix: None,
            fails: None,
        }
    }
}

/// Whether the source lines of the application frames seen could be read (with the
/// target's own rights: docs/permissions.md).
fn source_check(rec: &Recording) -> Check {
    let app: BTreeSet<(u32, i32)> = rec
        .frames
        .iter()
        .filter(|f| frames::origin(rec.str(f.file)) == Origin::App)
        .map(|f| (f.file, f.line))
        .collect();
    let read = app
        .iter()
        .filter(|(file, line)| rec.sources.contains_key(&(*file, *line)))
        .count();
    if app.is_empty() {
        Check {
            name: "sources",
            status: Status::Ok,
            detail: "no application frame seen in 0.5 s (an idle server runs server code only)"
                .into(),
            fix: None,
            fails: None,
        }
    } else if read == 0 {
        Check {
            name: "sources",
            status: Status::Warn,
            detail: format!("none of the {} application lines seen could be read", app.len()),
            fix: Some("reports will show no source lines: the files are read with the target's own rights, inside its root; check that they exist there and that the target's user may read them".into()),
            fails: None,
        }
    } else {
        Check {
            name: "sources",
            status: Status::Ok,
            detail: format!("{read} of {} application lines seen were read", app.len()),
            fix: None,
            fails: None,
        }
    }
}
