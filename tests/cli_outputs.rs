//! The binary's outputs on hand-made recordings (no Python needed): every file is written
//! even when stdout or stderr is closed (`loopprof report DIR | head -1`), which ends quietly
//! with the normal exit code.

use loopprof::recording::testing::*;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ST: &str = "/usr/lib/python3.11";

/// A MainThread at 100 Hz for 1 s, blocked in `time.sleep` inside `rate_limited` for 0.4 s.
fn blocked_recording(dir: &Path) -> PathBuf {
    const SP: &str = "/srv/venv/lib/python3.11/site-packages";
    let idle = vec![
        frame("Runner.run", &format!("{ST}/asyncio/runners.py"), 118),
        frame("asyncio_run", &format!("{SP}/uvicorn/_compat.py"), 30),
        frame("Server.run", &format!("{SP}/uvicorn/server.py"), 86),
        frame("<module>", "/srv/venv/bin/uvicorn", 8),
    ];
    let mut sleep = vec![
        frame("SocketIO.readinto", &format!("{ST}/socket.py"), 706),
        frame("get", &format!("{SP}/requests/api.py"), 73),
        frame("fetch_quote", "/srv/app/views.py", 12),
    ];
    sleep.extend(fastapi_request_frames("quote", "/srv/app/views.py", SP));
    sleep.extend(idle.iter().cloned());
    let mut b = RecordingBuilder::new(header(100, 100.0));
    for i in 0..100u64 {
        let blocked = (30..70).contains(&i);
        let t = if blocked {
            thread(100, "MainThread", 'S', "poll", false, sleep.clone())
        } else {
            thread(100, "MainThread", 'S', "epoll_pwait", false, idle.clone())
        };
        b.sample(100, i * 10_000, i * 100, &[t]);
    }
    b.source("/srv/app/views.py", 12, "    r = requests.get(URL)");
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("recording.jsonl");
    std::fs::write(&path, b.finish_bytes(end(1_000_000, 100))).unwrap();
    path
}

/// The write end of a pipe whose read end is already closed.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new fds into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are new and owned here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("recording"))
        .collect();
    v.sort();
    v
}

/// Runs loopprof with stdout (and with `both`, stderr) on a closed pipe.
fn run_closed(args: &[&str], both: bool) -> std::process::Output {
    let out = closed_pipe();
    let err: Stdio = if both {
        Stdio::from(out.try_clone().unwrap())
    } else {
        Stdio::piped()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_loopprof"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(err)
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_loses_no_output_file_and_ends_quietly() {
    let base = tempfile::tempdir().unwrap();
    let rec_dir = base.path().join("rec");
    blocked_recording(&rec_dir);
    let rec = rec_dir.to_str().unwrap();

    // Reference: the same command with a normal stdout.
    let normal = base.path().join("normal");
    let ok = Command::new(env!("CARGO_BIN_EXE_loopprof"))
        .args(["report", rec, "-o", normal.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let expected = files(&normal);
    assert!(
        expected.iter().any(|f| f.starts_with("flame-loop-blocked")),
        "a loop-blocked flame graph is expected: {expected:?}\n{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    for (i, both) in [false, true].into_iter().enumerate() {
        let dir = base.path().join(format!("closed{i}"));
        let r = run_closed(&["report", rec, "-o", dir.to_str().unwrap()], both);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(
            r.status.code(),
            Some(0),
            "report, stderr closed {both}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(files(&dir), expected, "every file written");
    }

    // A failing gate keeps its exit code with a closed stdout and stderr.
    let dir = base.path().join("gated");
    let r = run_closed(
        &[
            "report",
            rec,
            "-o",
            dir.to_str().unwrap(),
            "--fail-on",
            "loop_blocked_pct > 1",
        ],
        true,
    );
    assert_eq!(r.status.code(), Some(7));
    assert_eq!(files(&dir), expected);

    let r = run_closed(&["inspect", rec], false);
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let r = run_closed(&["inspect", "--json", rec], true);
    assert_eq!(r.status.code(), Some(0));

    let diff_dir = base.path().join("diff");
    let r = run_closed(&["diff", rec, rec, "-o", diff_dir.to_str().unwrap()], true);
    assert_eq!(r.status.code(), Some(0));
    assert_eq!(files(&diff_dir), ["diff.html", "diff.json", "diff.md"]);
}

#[test]
fn outputs_never_go_through_a_planted_symlink() {
    let base = tempfile::tempdir().unwrap();
    let rec_dir = base.path().join("rec");
    blocked_recording(&rec_dir);
    let elsewhere = base.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let link = base.path().join("out");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_loopprof"))
        .args([
            "report",
            rec_dir.to_str().unwrap(),
            "-o",
            link.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing written"
    );

    // A planted symlink in place of an output file is replaced, not written through.
    let victim = base.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, rec_dir.join("report.html")).unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_loopprof"))
        .args(["report", rec_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(std::fs::read_to_string(rec_dir.join("report.html"))
        .unwrap()
        .contains("<html"));
}

/// `--open` says the report was opened only when a browser took it: on a machine with no
/// graphical session and no `$BROWSER` it says so, an opener that fails is not success, and
/// one that succeeds is reported.
#[test]
fn open_reports_success_only_when_a_browser_took_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let rec = blocked_recording(dir.path());
    let run = |browser: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_loopprof"));
        c.args(["report", rec.to_str().unwrap(), "--open"])
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("BROWSER");
        if let Some(b) = browser {
            c.env("BROWSER", b);
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(None);
    assert!(err.contains("no graphical session"), "{err}");
    assert!(!err.contains("opened"), "{err}");
    let err = run(Some("false"));
    assert!(err.contains("no browser could open the report"), "{err}");
    let err = run(Some("true"));
    assert!(
        err.contains("opened ") && err.contains(" with true"),
        "{err}"
    );
}
