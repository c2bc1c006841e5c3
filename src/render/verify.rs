//! "Verify the fix": the commands a user pastes after deploying a fix, built from what the
//! recording knows. The restart that deploys the fix gives the server a new pid and the
//! BEFORE directory already holds a recording, so the AFTER recording selects the server by
//! a `--name` pattern taken from its command line (or starts the same command again, for a
//! recording made with `-- COMMAND`) and writes to a new directory; then `loopprof diff`
//! compares the two (with `--fail-on regression` for CI). Pure; every word POSIX-quoted.

use crate::recording::frames;
use crate::recording::Recording;
use crate::recording::TargetKind;
use serde::Serialize;

/// The commands of "verify the fix", each ready to paste into a POSIX shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifySteps {
    /// Record the fixed server: `loopprof record --name '...' --duration 30 -o AFTER ...`.
    pub record: String,
    /// Compare: `loopprof diff BEFORE AFTER`.
    pub diff: String,
    /// The same comparison as a CI gate: `... --fail-on regression`.
    pub diff_ci: String,
    /// When no pattern could be taken from the command line: what to fill in.
    pub note: Option<String>,
}

/// POSIX shell quoting: words of safe characters as they are, anything else in single quotes
/// (`'` as `'\''`). Hand-rolled rather than `shlex`, whose double-quoted output doubles every
/// backslash of a regular expression (`"app\\.main:app"`) and reads badly when pasted.
fn quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        // A NUL byte cannot be passed on a command line at all.
        format!("'{}'", s.replace('\0', "").replace('\'', "'\\''"))
    }
}

/// The `--name` pattern for a server: the application's import string (`app.main:app`) when
/// the command line has one, else the script's file name; as a regular expression matching
/// that text literally.
fn pattern_of(cmdline: &[String]) -> Option<String> {
    if let Some((module, attr)) = crate::recording::cmdline::app_import_string(cmdline) {
        return Some(regex::escape(&format!("{module}:{attr}")));
    }
    // `python path/to/server.py ...`: the first argument that is a Python file.
    cmdline
        .iter()
        .skip(1)
        .find(|a| a.ends_with(".py") && !a.starts_with('-'))
        .map(|a| regex::escape(frames::short_file(a).rsplit('/').next().unwrap_or(a)))
}

/// The verify-the-fix commands for a recording whose outputs are in `before_dir`.
pub fn steps(rec: &Recording, before_dir: &str) -> VerifySteps {
    let target = &rec.header.target;
    let secs = rec
        .end
        .as_ref()
        .map(|e| ((e.duration_us as f64 / 1e6).round() as u64).clamp(5, 600))
        .unwrap_or(30);
    let before = before_dir.trim_end_matches('/');
    // A recording file given as BEFORE: the AFTER directory is named after it, not after
    // its extension (`run.jsonl.gz` → `run-after`).
    let stem = [".jsonl.gz", ".jsonl"]
        .iter()
        .find_map(|ext| before.strip_suffix(ext))
        .unwrap_or(before);
    let after = format!("{stem}-after");
    let mut note = None;
    let selector = match target.how {
        TargetKind::Command => format!(
            "-- {}",
            target
                .cmdline
                .iter()
                .map(|a| quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        TargetKind::Name => format!(
            "--name {}",
            quote(target.pattern.as_deref().unwrap_or_default())
        ),
        _ => match pattern_of(&target.cmdline) {
            Some(p) => format!("--name {}", quote(&p)),
            None => {
                note = Some(
                    "No pattern could be taken from the server's command line: replace NEW_PID with the restarted server's pid (pgrep -f ...).".to_owned(),
                );
                "--pid NEW_PID".to_owned()
            }
        },
    };
    let probes: String = {
        let mut urls: Vec<&str> = rec.probes.iter().map(|p| p.url.as_str()).collect();
        urls.sort();
        urls.dedup();
        urls.iter()
            .map(|u| format!(" --probe {}", quote(u)))
            .collect()
    };
    // The command is inserted last: a `-- COMMAND` selector must end the line.
    let (options, tail) = if target.how == TargetKind::Command {
        (String::new(), format!(" {selector}"))
    } else {
        (format!(" {selector}"), String::new())
    };
    let record = format!(
        "loopprof record{options} --duration {secs} -o {}{probes}{tail}",
        quote(&after)
    );
    let diff = format!("loopprof diff {} {}", quote(before), quote(&after));
    VerifySteps {
        diff_ci: format!("{diff} --fail-on regression"),
        record,
        diff,
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::testing::*;

    fn rec(how: &str, cmdline: &[&str], pattern: Option<&str>) -> Recording {
        let mut h = header(7, 100.0);
        h.target.how = serde_json::from_value(serde_json::json!(how)).unwrap();
        h.target.cmdline = cmdline.iter().map(|s| s.to_string()).collect();
        h.target.pattern = pattern.map(Into::into);
        let b = RecordingBuilder::new(h);
        b.finish(end(30_000_000, 3000))
    }

    #[test]
    fn a_pid_target_is_selected_again_by_its_import_string() {
        let r = rec(
            "pid",
            &[
                "/srv/venv/bin/python",
                "/srv/venv/bin/uvicorn",
                "app.main:app",
                "--port",
                "8000",
            ],
            None,
        );
        let s = steps(&r, "loopprof-20261130-101010");
        assert_eq!(
            s.record,
            "loopprof record --name 'app\\.main:app' --duration 30 -o loopprof-20261130-101010-after"
        );
        assert_eq!(
            s.diff,
            "loopprof diff loopprof-20261130-101010 loopprof-20261130-101010-after"
        );
        assert!(s.diff_ci.ends_with(" --fail-on regression"));
        assert_eq!(s.note, None);
    }

    #[test]
    fn names_commands_and_unknown_servers() {
        let s = steps(
            &rec("name", &["gunicorn"], Some("gunicorn.*app:app")),
            "out dir/",
        );
        assert!(
            s.record.starts_with(
                "loopprof record --name 'gunicorn.*app:app' --duration 30 -o 'out dir-after'"
            ),
            "{}",
            s.record
        );
        assert_eq!(s.diff, "loopprof diff 'out dir' 'out dir-after'");
        let s = steps(
            &rec("command", &["uvicorn", "app:app", "--port", "8000"], None),
            "b",
        );
        assert_eq!(
            s.record,
            "loopprof record --duration 30 -o b-after -- uvicorn app:app --port 8000"
        );
        let s = steps(&rec("pid", &["python", "serve.py"], None), "b");
        assert!(s.record.contains("--name 'serve\\.py'"), "{}", s.record);
        let s = steps(&rec("pid", &["python", "-m", "svc"], None), "b");
        assert!(s.record.contains("--pid NEW_PID") && s.note.is_some());
        // A recording file as BEFORE: AFTER is named after it, without its extension.
        let s = steps(
            &rec("pid", &["python", "serve.py"], None),
            "runs/a.jsonl.gz",
        );
        assert!(s.record.ends_with("-o runs/a-after"), "{}", s.record);
        assert_eq!(s.diff, "loopprof diff runs/a.jsonl.gz runs/a-after");
    }

    #[test]
    fn hostile_command_lines_stay_one_shell_word() {
        let s = steps(&rec("pid", &["python", "x;rm -rf ~;.py"], None), "b");
        // One single-quoted word (the regex escapes inside are for loopprof, not the shell).
        assert!(
            s.record.contains(r"--name 'x;rm \-rf \~;\.py' "),
            "{}",
            s.record
        );
        let s = steps(&rec("name", &["x"], Some("it's")), "b");
        assert!(s.record.contains(r"--name 'it'\''s' "), "{}", s.record);
    }
}
