//! The diagnosis on every CPython this machine has: pyenv's 3.8 to 3.13 and Debian's own
//! `/usr/bin/python3` (a distro build), with a stdlib-only asyncio server
//! (`tests/python/plain_server.py`) loaded by the stdlib load generator: a `time.sleep` on the
//! loop must give `loop-blocked` / `blocking-sleep` at its line, and `asyncio.sleep` (the
//! control) no finding. The FastAPI suites run on the pinned 3.11-3.13 venvs; this one checks
//! that what loopprof reads on top of py-spy (thread ids, loop detection, syscalls, GC state,
//! source lines) works on each interpreter build.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn load(python: &Path, port: u16, path: &str) -> Proc {
    Proc::spawn(
        "load",
        Command::new(python)
            .arg(root().join("tests/python/load.py"))
            .args(["--url", &format!("http://127.0.0.1:{port}{path}")])
            .args(["--concurrency", "1", "--duration", "8", "--think-ms", "100"])
            .args(["--timeout", "10", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

fn record(pid: u32, name: &str) -> Value {
    let dir = out_dir(name);
    let out = record_output(pid, 2.5, &dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn a_blocking_sleep_is_found_on_every_python_present() {
    let src = std::fs::read_to_string(root().join("tests/python/plain_server.py")).unwrap();
    let line = src
        .lines()
        .position(|l| l.contains("time.sleep(ms"))
        .expect("the blocking line") as i64
        + 1;
    let mut checked = Vec::new();
    for (i, python) in python_interpreters().iter().enumerate() {
        let port = free_port();
        let server = spawn_script(python, "plain_server.py", &[&port.to_string()], "listening");
        let who = python.display().to_string();

        let _load = load(python, port, "/block?ms=150");
        std::thread::sleep(Duration::from_millis(500));
        let s = record(server.pid(), &format!("pythons-block-{i}"));
        assert_eq!(
            s["verdict"]["kind"], "loop-blocked",
            "{who}: {:#}",
            s["verdict"]
        );
        let f = &s["findings"][0];
        assert_eq!(f["category"], "blocking-sleep", "{who}: {f:#}");
        assert_eq!(f["call_site"]["function"], "rate_limited", "{who}");
        assert_eq!(f["call_site"]["line"], line, "{who}");
        assert!(
            f["call_site"]["source"]
                .as_str()
                .is_some_and(|s| s.contains("time.sleep")),
            "{who}: the source line is read: {f:#}"
        );
        drop(_load);

        let _load = load(python, port, "/wait?ms=150");
        std::thread::sleep(Duration::from_millis(500));
        let s = record(server.pid(), &format!("pythons-wait-{i}"));
        assert!(
            s["findings"].as_array().unwrap().is_empty(),
            "{who}: the control has no finding: {:#}",
            s["findings"]
        );
        checked.push(format!(
            "{who} ({})",
            s["recording"]["processes"][0]["python_version"]
        ));
    }
    eprintln!("checked on: {}", checked.join(", "));
}

/// Captures of the PyPI `py-spy record` (0.4.3, `--idle --full-filenames`) in its speedscope
/// and raw formats
/// are reported: the blocking line is named, the flame graphs drawn, and the report says the
/// capture lacks states and timing instead of giving a verdict.
#[test]
fn py_spy_captures_are_imported_by_report() {
    let python = venv("3.11").join("bin/python");
    let port = free_port();
    let server = spawn_script(
        &python,
        "plain_server.py",
        &[&port.to_string()],
        "listening",
    );
    let _load = load(&python, port, "/block?ms=150");
    std::thread::sleep(Duration::from_millis(500));
    let dir = out_dir("pythons-py-spy");
    std::fs::create_dir_all(&dir).unwrap();
    for (format, file) in [("speedscope", "capture.json"), ("raw", "capture.txt")] {
        let capture = dir.join(file);
        let st = Command::new(venv("3.11").join("bin/py-spy"))
            .args(["record", "--idle", "--full-filenames", "--format", format])
            .args(["--duration", "3", "--pid"])
            .arg(server.pid().to_string())
            .arg("-o")
            .arg(&capture)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "py-spy record --format {format}");
        let out_dir = dir.join(format!("report-{format}"));
        let out = run_loopprof(
            &[
                "report",
                capture.to_str().unwrap(),
                "-o",
                out_dir.to_str().unwrap(),
            ],
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let s: Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(
            s["verdict"]["kind"], "inconclusive",
            "{format}: {:#}",
            s["verdict"]
        );
        assert!(
            s["verdict"]["summary"]
                .as_str()
                .unwrap()
                .contains("imported from a py-spy"),
            "{format}"
        );
        assert!(s["quality"]["imported"].is_string(), "{format}");
        assert_eq!(
            s["findings"][0]["call_site"]["function"], "rate_limited",
            "{format}: {:#}",
            s["findings"]
        );
        assert!(out_dir.join("flame-wall.svg").exists(), "{format}");
        assert!(out_dir.join("report.html").exists(), "{format}");
    }
}

/// CPython older than 3.8 (pyenv's 2.7, 3.6 and 3.7 here): py-spy attaches, but loopprof
/// refuses with exit 3 and says which versions it reads, instead of a report of an
/// interpreter its analyses do not cover.
#[test]
fn pythons_older_than_3_8_are_refused_with_a_clear_error() {
    let old: Vec<std::path::PathBuf> = std::fs::read_dir("/root/.pyenv/versions")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy().into_owned();
                    n.starts_with("2.") || n.starts_with("3.6.") || n.starts_with("3.7.")
                })
                .map(|p| p.join("bin/python"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !old.is_empty(),
        "no pyenv Python older than 3.8 on this machine"
    );
    for python in &old {
        let target = Proc::spawn(
            "old-python",
            Command::new(python)
                .args(["-c", "import time; time.sleep(60)"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        std::thread::sleep(Duration::from_millis(400));
        let dir = out_dir(&format!(
            "pythons-old-{}",
            python
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
        ));
        let out = record_output(target.pid(), 0.5, &dir, &[]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}: {}",
            python.display(),
            text(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is older than 3.8") && err.contains("loopprof reads CPython 3.8-3.15"),
            "{err}"
        );
    }
}
