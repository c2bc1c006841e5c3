//! The fast tier: the whole offline path of the binary (`report`, `inspect`, `diff`,
//! `--fail-on` with every metric, exit codes, usage errors) on two small committed recordings
//! (`tests/fixtures/`), with no Python, no target and no network. Runs in a few seconds:
//! `cargo nextest run --lib --test cli`.

use loopprof::analysis::catalog::Catalog;
use loopprof::analysis::diagnose::{diagnose, Options, VerdictKind};
use loopprof::analysis::gates::{self, Kind, Scope, METRICS};
use loopprof::analysis::{diff, probes};
use loopprof::recording;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn loopprof(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loopprof"))
        .args(args)
        .output()
        .expect("loopprof runs")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn report_writes_every_output_and_names_the_blocking_call() {
    let out = tempfile::tempdir().unwrap();
    let o = loopprof(&["report", s(&fixture("blocked.jsonl")), "-o", s(out.path())]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let summary = json(&out.path().join("summary.json"));
    assert_eq!(summary["verdict"]["kind"], "loop-blocked");
    let f = &summary["findings"][0];
    assert_eq!(f["category"], "blocking-sleep");
    assert_eq!(f["route"], "GET /sleep-from-import");
    assert_eq!(f["kind"], "stalls");
    assert_eq!(f["state"], "waiting");
    assert_eq!(f["wait_reason"], "sleep");
    assert_eq!(
        f["matched_by"], "source",
        "`sleep(...)` imported from time: a C call, named by its line"
    );
    for file in [
        "report.html",
        "report.md",
        "flame-wall.svg",
        "flame-loop-blocked.svg",
    ] {
        let p = out.path().join(file);
        assert!(p.metadata().unwrap().len() > 1000, "{file} written");
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("blocking-sleep"), "{stdout}");
    assert!(stdout.contains("verify the fix"), "{stdout}");
    // The same recording through the library gives the same verdict.
    let rec = recording::load(&fixture("blocked.jsonl")).unwrap();
    let d = diagnose(&rec, &Catalog::builtin(), &Options::default());
    assert_eq!(d.verdict.kind, VerdictKind::LoopBlocked);
}

#[test]
fn inspect_summarises_as_text_and_json() {
    let o = loopprof(&["inspect", s(&fixture("healthy.jsonl"))]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("MainThread"));
    let o = loopprof(&["inspect", "--json", s(&fixture("healthy.jsonl"))]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["quality"]["samples"].as_u64().unwrap() > 100, "{v}");
}

#[test]
fn diff_of_a_fix_and_of_a_regression() {
    let out = tempfile::tempdir().unwrap();
    let (blocked, healthy) = (fixture("blocked.jsonl"), fixture("healthy.jsonl"));
    let o = loopprof(&[
        "diff",
        s(&blocked),
        s(&healthy),
        "-o",
        s(out.path()),
        "--fail-on",
        "regression",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let d = json(&out.path().join("diff.json"));
    assert_eq!(d["regression"], false, "{d}");
    assert_eq!(d["findings"][0]["status"], "fixed", "{d}");
    for file in ["diff.html", "diff.md"] {
        assert!(out.path().join(file).exists(), "{file}");
    }
    // The other way round is a regression: the gate fails (exit 7), every file is written.
    let out = tempfile::tempdir().unwrap();
    let o = loopprof(&[
        "diff",
        s(&healthy),
        s(&blocked),
        "-o",
        s(out.path()),
        "--fail-on",
        "regression",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert_eq!(json(&out.path().join("diff.json"))["regression"], true);
    assert!(out.path().join("diff.html").exists());
}

/// Every metric parses with its kind's syntax and is measured on a recording (the probe
/// metrics say "not measured" without `--probe`, and such a gate fails).
#[test]
fn every_gate_metric_is_exercised() {
    let catalog = Catalog::builtin();
    let ids: Vec<String> = catalog.entries().map(|e| e.id.clone()).collect();
    let opts = Options::default();
    let before = recording::load(&fixture("healthy.jsonl")).unwrap();
    let after = recording::load(&fixture("blocked.jsonl")).unwrap();
    let bd = diagnose(&before, &catalog, &opts);
    let ad = diagnose(&after, &catalog, &opts);
    let report_facts = gates::facts_of(&ad, &probes::summarize(&after));
    let dif = diff::diff(
        ("before", &before, &bd),
        ("after", &after, &ad),
        &diff::Thresholds::default(),
    );
    let diff_facts = diff::facts(&dif, &ad, &probes::summarize(&after));
    for m in METRICS {
        let expr = match m.kind {
            Kind::Number => format!("{0} >= 0 or {0} < 0", m.name),
            Kind::Names if m.name.contains("route") => format!("{} == \"GET /x\"", m.name),
            Kind::Names if m.name.contains("category") => format!("{} == blocking-sleep", m.name),
            Kind::Names => format!("{} == loop-blocked", m.name),
            Kind::Flag => m.name.to_owned(),
        };
        let (scope, facts) = match m.scope {
            Scope::Report => (Scope::Report, &report_facts),
            Scope::Diff => (Scope::Diff, &diff_facts),
        };
        let gate = gates::parse(&expr, scope, &ids).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let r = &gates::evaluate(&[gate], facts)[0];
        let unmeasured = r.because.contains("not measured");
        // The fixtures were recorded without --probe and before task snapshots (format 5):
        // those metrics are not measured on them (live_tasks gates queued_requests).
        assert_eq!(
            unmeasured,
            m.name.starts_with("probe_") || m.name == "queued_requests",
            "{expr}: {}",
            r.because
        );
        let expected_failed = match m.kind {
            Kind::Number => true, // holds for any measured number; an unmeasured one fails
            Kind::Names => !m.name.contains("route"),
            Kind::Flag => true, // healthy -> blocked is a regression
        };
        assert_eq!(r.failed, expected_failed, "{expr}: {}", r.because);
    }
}

#[test]
fn bad_input_gets_the_documented_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    // Usage: a gate that does not parse, a value out of range.
    let o = loopprof(&["report", "x", "--fail-on", "verdict == fine"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = loopprof(&["report", "x", "--threshold-ms", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // A missing or corrupt recording: 5, with what to do.
    let o = loopprof(&["report", "/nonexistent/recording.jsonl.gz"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let garbage = dir.path().join("garbage.jsonl");
    std::fs::write(&garbage, "not a recording\n").unwrap();
    let o = loopprof(&["inspect", s(&garbage)]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a loopprof recording"));
    let o = loopprof(&["diff", s(&garbage), s(&fixture("healthy.jsonl"))]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("loading BEFORE"));
    // A gate that fails on a good recording: 7, outputs written.
    let out = dir.path().join("out");
    let o = loopprof(&[
        "report",
        s(&fixture("blocked.jsonl")),
        "-o",
        s(&out),
        "--fail-on",
        "max_stall_ms > 100",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(out.join("report.html").exists());
    // --help and --version are not errors.
    assert_eq!(loopprof(&["--version"]).status.code(), Some(0));
    assert_eq!(loopprof(&["record", "--help"]).status.code(), Some(0));
}

#[test]
fn export_writes_speedscope_and_folded_stacks() {
    let o = loopprof(&[
        "export",
        s(&fixture("blocked.jsonl")),
        "--format",
        "collapsed",
        "--view",
        "loop-blocked",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let folded = String::from_utf8(o.stdout).unwrap();
    assert!(!folded.is_empty());
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("stack count");
        assert!(count.parse::<u64>().unwrap() > 0, "{line}");
        assert!(stack.contains(";"), "{line}");
    }
    assert!(
        folded.contains("sleep"),
        "the blocking call is in the stalls' stacks"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    let o = loopprof(&[
        "export",
        s(&fixture("blocked.jsonl")),
        "-f",
        "speedscope",
        "-o",
        s(&file),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = json(&file);
    assert_eq!(
        v["$schema"],
        "https://www.speedscope.app/file-format-schema.json"
    );
    assert!(v["profiles"].as_array().unwrap().len() >= 2);
}

/// `export --format pprof` decodes with `protoc` against pprof's message definitions, and the
/// blocked fixture's stall samples carry the finding's category and the loop state `stall`.
#[test]
fn export_pprof_decodes_against_profile_proto() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profile.pb.gz");
    let o = loopprof(&[
        "export",
        s(&fixture("blocked.jsonl")),
        "-f",
        "pprof",
        "-o",
        s(&file),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut raw = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap())
        .read_to_end(&mut raw)
        .expect("pprof output is gzip");
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pprof");
    let mut child = std::process::Command::new("protoc")
        .arg(format!("--proto_path={}", protos.display()))
        .args(["--decode=perftools.profiles.Profile", "profile.proto"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("protoc is missing: install Debian's protobuf-compiler (scripts/test.sh does)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&raw).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needed in [
        "sample_type {",
        "string_table: \"wall\"",
        "string_table: \"nanoseconds\"",
        "string_table: \"loop_state\"",
        "string_table: \"stall\"",
        "string_table: \"blocking-sleep\"",
        "has_functions: true",
        "location_id:",
        "label {",
    ] {
        assert!(
            text.contains(needed),
            "{needed:?} missing from the decoded profile"
        );
    }
}

/// `export --format chrome-trace` is a Trace Event Format object whose event-loop track names
/// the stall after its finding.
#[test]
fn export_chrome_trace_has_tracks_stalls_and_metadata() {
    let o = loopprof(&[
        "export",
        s(&fixture("blocked.jsonl")),
        "--format",
        "chrome-trace",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    assert!(events.iter().any(|e| e["ph"] == "M"
        && e["name"] == "thread_name"
        && e["args"]["name"]
            .as_str()
            .unwrap()
            .ends_with("(event loop)")));
    assert!(events
        .iter()
        .any(|e| e["ph"] == "X" && e["name"] == "stall: blocking-sleep"));
    assert!(events
        .iter()
        .any(|e| e["ph"] == "i" && e["name"] == "finding: blocking-sleep"));
    assert!(events.iter().any(|e| e["ph"] == "C" && e["name"] == "cpu"));
}
