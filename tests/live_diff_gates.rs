//! Live tests of `loopprof diff` and `--fail-on` gates on real servers under loopback load:
//! a before/after pair (a blocking endpoint, then its fixed version) where `diff` reports the
//! finding fixed and a reversed pair that the `regression` gate fails; the demo's own
//! before/after (`NEWSAPP_FIXED=1`); gates passing and failing on `record` and `report`; and
//! bad gate expressions rejected before any sampling.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn findings_with(v: &Value, status: &str) -> Vec<Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == status)
        .cloned()
        .collect()
}

#[test]
fn diff_shows_a_fix_and_the_regression_gate_catches_the_reverse() {
    let app = start_app(Server::UvicornAsyncio, "3.11", None);
    let pid = app.proc.pid();
    let before = out_dir("diff-fix/before");
    let after = out_dir("diff-fix/after");

    // BEFORE: `/sleep` calls time.sleep on the loop. 100 Hz, 4 s.
    let load = start_load_think(&app, &["/sleep?ms=150"], 1, 7.0, 100);
    std::thread::sleep(Duration::from_millis(500));
    record_pid(pid, 4.0, &before, &[]);
    drop(load);
    std::thread::sleep(Duration::from_millis(400));

    // AFTER: the same work through asyncio.to_thread. Recorded at another rate and length,
    // so the comparison must normalise.
    let load = start_load_think(&app, &["/ctl/to-thread?ms=150"], 1, 8.0, 100);
    std::thread::sleep(Duration::from_millis(500));
    record_pid(pid, 5.0, &after, &["--rate", "50"]);
    drop(load);

    let out_fwd = out_dir("diff-fix/forward");
    let out = run_loopprof(
        &[
            "diff",
            &s(&before),
            &s(&after),
            "-o",
            &s(&out_fwd),
            "--fail-on",
            "regression",
            "--fail-on",
            "loop_blocked_pct > 5 or category == blocking-sleep",
        ],
        Duration::from_secs(60),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("gate passed: regression"), "{t}");
    let v = json(&out_fwd.join("diff.json"));
    assert_eq!(v["kind"], "diff");
    assert_eq!(v["before"]["verdict"], "loop-blocked", "{t}");
    assert_eq!(v["after"]["verdict"], "healthy", "{t}");
    assert_eq!(v["regression"], false);
    assert_eq!(v["after"]["rate_hz"], 50.0);
    let fixed = findings_with(&v, "fixed");
    assert!(
        fixed
            .iter()
            .any(|f| f["category"] == "blocking-sleep"
                && f["call_site"]["function"] == "rate_limited"),
        "{t}"
    );
    assert!(findings_with(&v, "new").is_empty(), "{t}");
    assert!(findings_with(&v, "worse").is_empty(), "{t}");
    assert!(
        v["before"]["loop_blocked_pct"].as_f64().unwrap() > 20.0,
        "{t}"
    );
    assert!(
        v["after"]["loop_blocked_pct"].as_f64().unwrap() < 2.0,
        "{t}"
    );
    let html = std::fs::read_to_string(out_fwd.join("diff.html")).unwrap();
    assert!(html.contains("id=\"diff-flame-loop-blocked-before\""));
    assert!(html.contains("id=\"diff-flame-wall-after\""));
    assert!(!html.contains("<script"), "the page itself runs no script");
    let md = std::fs::read_to_string(out_fwd.join("diff.md")).unwrap();
    assert!(md.contains("| **fixed** | `blocking-sleep` |"), "{md}");

    // Reversed, it is a regression: the gate fails with exit 7, and every output is written.
    let out_rev = out_dir("diff-fix/reverse");
    let out = run_loopprof(
        &[
            "diff",
            &s(&after),
            &s(&before),
            "-o",
            &s(&out_rev),
            "--fail-on",
            "regression",
            "--fail-on",
            "new_findings > 5",
        ],
        Duration::from_secs(60),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(7), "{t}");
    assert!(
        t.contains("gate FAILED: regression (regression = true"),
        "{t}"
    );
    assert!(t.contains("gate passed: new_findings > 5"), "{t}");
    let v = json(&out_rev.join("diff.json"));
    assert_eq!(v["regression"], true);
    assert!(findings_with(&v, "new")
        .iter()
        .any(|f| f["category"] == "blocking-sleep"));
    assert_eq!(v["gates"][0]["failed"], true);
    assert_eq!(v["gates"][1]["failed"], false);
    assert!(out_rev.join("diff.html").exists() && out_rev.join("diff.md").exists());
}

#[test]
fn gates_pass_and_fail_on_real_recordings() {
    let app = start_app(Server::UvicornUvloop, "3.11", None);
    let pid = app.proc.pid().to_string();
    let dir = out_dir("gates/record");
    let _load = start_load_think(&app, &["/sleep?ms=150"], 1, 8.0, 100);
    std::thread::sleep(Duration::from_millis(500));
    let out = run_loopprof(
        &[
            "record",
            "--pid",
            &pid,
            "--duration",
            "3",
            "-o",
            &s(&dir),
            "--fail-on",
            "loop_blocked_pct > 5",
            "--fail-on",
            "category == sync-http-client",
            "--fail-on",
            "max_stall_ms >= 100ms and verdict == loop-blocked",
        ],
        Duration::from_secs(40),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(7), "{t}");
    assert!(
        t.contains("gate FAILED: loop_blocked_pct > 5 (loop_blocked_pct = "),
        "{t}"
    );
    assert!(
        t.contains("gate passed: category == sync-http-client (category = blocking-sleep)"),
        "{t}"
    );
    assert!(
        t.contains("gate FAILED: max_stall_ms >= 100ms and verdict == loop-blocked"),
        "{t}"
    );
    assert!(t.contains("2 of 3 --fail-on gates failed (exit 7)"), "{t}");
    // A failed gate still writes every output, and records the outcome in them.
    for f in [
        "report.html",
        "report.md",
        "summary.json",
        "flame-wall.svg",
        "flame-loop-blocked.svg",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let v = json(&dir.join("summary.json"));
    let gates: Vec<bool> = v["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["failed"].as_bool().unwrap())
        .collect();
    assert_eq!(gates, [true, false, true]);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("id=\"gates\""));

    // `report` re-evaluates gates on the saved recording: passing...
    let out = run_loopprof(
        &[
            "report",
            &s(&dir),
            "-o",
            &s(&out_dir("gates/pass")),
            "--fail-on",
            "max_stall_ms > 60000",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // ...and failing on a metric that was not measured (no --probe), saying how to get it.
    let out = run_loopprof(
        &[
            "report",
            &s(&dir),
            "-o",
            &s(&out_dir("gates/unmeasured")),
            "--fail-on",
            "probe_p99_ms > 1000",
        ],
        Duration::from_secs(30),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(7), "{t}");
    assert!(t.contains("record with --probe URL"), "{t}");
}

#[test]
fn bad_gate_expressions_are_rejected_before_sampling() {
    let app = start_app(Server::UvicornAsyncio, "3.11", None);
    let pid = app.proc.pid().to_string();
    let dir = out_dir("gates/bad");
    for (expr, says) in [
        ("loop_blockd_pct > 5", "did you mean loop_blocked_pct"),
        ("regression", "only applies to `loopprof diff`"),
        ("category == executor-shutdown", "not a known category"),
        ("max_stall_ms > 2s", "write `2000ms`"),
        (
            "loop_blocked_pct > 5 max_stall_ms > 200",
            "join conditions with `and` / `or`",
        ),
    ] {
        let started = Instant::now();
        let out = run_loopprof(
            &[
                "record",
                "--pid",
                &pid,
                "--duration",
                "30",
                "-o",
                &s(&dir),
                "--fail-on",
                expr,
            ],
            Duration::from_secs(20),
        );
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{expr}: {t}");
        assert!(t.contains(says), "{expr}: {t}");
        assert!(
            t.contains(&format!("--fail-on '{expr}'")),
            "the message quotes the gate: {t}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{expr}: rejected only after {:?}",
            started.elapsed()
        );
        assert!(!dir.exists(), "{expr}: nothing was recorded");
    }
    // diff and report check gates before reading anything: the recordings do not even exist.
    let out = run_loopprof(
        &[
            "diff",
            "/nonexistent/a",
            "/nonexistent/b",
            "--fail-on",
            "delta_max_stall_ms >",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = run_loopprof(
        &["report", "/nonexistent/a", "--fail-on", "verdict == fine"],
        Duration::from_secs(10),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("healthy, loop-blocked"), "{t}");
    // The server was never touched: still healthy.
    assert!(http_get(app.port, "/health", Duration::from_secs(2)).is_ok());
}

/// The README's before/after walk-through: the demo's news service recorded as shipped and
/// with `NEWSAPP_FIXED=1`, then `loopprof diff` says the executor-shutdown stall is fixed.
#[test]
fn demo_before_and_after_the_fix() {
    let base = out_dir("diff-demo");
    std::fs::create_dir_all(&base).unwrap();
    let run_demo = |name: &str, fixed: bool| {
        let out_path = base.join(name);
        let mut c = Command::new(root().join("examples/demo.sh"));
        c.env("DURATION", "5")
            .env("OUT", &out_path)
            .env("PYTHON", "3.11")
            .env("LOOPPROF", loopprof())
            .current_dir(&base);
        if fixed {
            c.env("NEWSAPP_FIXED", "1");
        } else {
            c.env_remove("NEWSAPP_FIXED");
        }
        let out = c.output().expect("examples/demo.sh runs");
        assert!(
            out.status.success(),
            "demo ({name}) failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out_path
    };
    let before = run_demo("before", false);
    let after = run_demo("after", true);
    let out = run_loopprof(
        &["diff", &s(&before), &s(&after), "--fail-on", "regression"],
        Duration::from_secs(60),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    // Default output directory: AFTER's.
    let v = json(&after.join("diff.json"));
    assert_eq!(v["before"]["verdict"], "loop-blocked", "{t}");
    assert_eq!(v["after"]["verdict"], "healthy", "{t}");
    assert!(
        findings_with(&v, "fixed")
            .iter()
            .any(|f| f["category"] == "executor-shutdown-wait"),
        "{t}"
    );
    // The probe saw it too: /health answered much faster after the fix.
    let p99 = |side: &str| v[side]["probes"][0]["p99_ms"].as_f64().unwrap();
    assert!(p99("before") > 4.0 * p99("after"), "{t}");
    // ...and every diff output shows it, before → after, one figure per row.
    assert_eq!(v["probes"][0]["path"], "/health", "{t}");
    assert!(t.contains("  probe /health: p50 "), "{t}");
    let md = std::fs::read_to_string(after.join("diff.md")).unwrap();
    for row in [
        "| probe `/health` p50 |",
        "| probe `/health` p99 |",
        "| probe `/health` timeouts |",
    ] {
        assert!(md.contains(row), "{row} missing from diff.md:\n{md}");
    }
    let html = std::fs::read_to_string(after.join("diff.html")).unwrap();
    assert!(
        html.contains("<td>probe /health p99</td>"),
        "diff.html has the probe rows"
    );
}

/// "Verify the fix" works as printed: record a blocked server by pid, restart it with the fix
/// deployed (a new pid), then run the two commands `record` printed, exactly, through `sh -c`:
/// the new recording selects the restarted server by its command line and goes to a new
/// directory, and `diff` reports the finding fixed. The same commands are in report.md.
#[test]
fn verify_the_fix_commands_work_as_printed_after_a_restart() {
    let app = start_module(Server::UvicornAsyncio, "3.11", "verify_app:app", None, &[]);
    let load = start_load_think(&app, &["/report?ms=150"], 1, 8.0, 50);
    std::thread::sleep(Duration::from_millis(300));
    let before = out_dir("verify-before");
    let after = before.with_file_name("verify-before-after");
    let _ = std::fs::remove_dir_all(&after);
    let out = record_output(app.proc.pid(), 3.0, &before, &[]);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    let commands: Vec<String> = printed
        .lines()
        .skip_while(|l| !l.starts_with("verify the fix"))
        .skip(1)
        .take(2)
        .map(|l| l.trim().to_owned())
        .collect();
    assert_eq!(commands.len(), 2, "{printed}");
    assert!(
        commands[0].contains("--name verify_app:app"),
        "{commands:?}"
    );
    let md = std::fs::read_to_string(before.join("report.md")).unwrap();
    assert!(
        md.contains(&commands[0]) && md.contains(&commands[1]),
        "report.md has the same commands"
    );
    drop(load);
    drop(app);

    // The fix is deployed: a new server process (new pid), same command line.
    let fixed = start_module(
        Server::UvicornAsyncio,
        "3.11",
        "verify_app:app",
        None,
        &[("VERIFY_APP_FIXED", "1".to_owned())],
    );
    let _load = start_load_think(&fixed, &["/report?ms=150"], 1, 12.0, 50);
    let sh = |cmd: &str| {
        let exe = loopprof();
        let path = format!(
            "{}:{}",
            exe.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("PATH", path)
            .output()
            .expect("sh runs")
    };
    let rec = sh(&commands[0]);
    assert!(rec.status.success(), "{}\n{}", commands[0], text(&rec));
    assert!(after.join("recording.jsonl.gz").exists());
    let diff = sh(&commands[1]);
    let t = text(&diff);
    assert!(diff.status.success(), "{}\n{t}", commands[1]);
    assert!(t.contains("FIXED  [blocking-sleep]"), "{t}");
}
