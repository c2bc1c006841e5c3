//! Real-browser test of `report.html`: a real blocked uvicorn server (asyncio and uvloop) is
//! recorded by `loopprof record`, and Debian's Chromium (headless, driven by playwright-core
//! through `tests/browser/check_report.mjs`) loads the report from `file://` and checks: no
//! console/page errors, no network request, the verdict in the first screen, findings, the
//! timeline, flame graphs that render, zoom, reset and search inside the page; it saves a
//! screenshot under `target/test-output/`. `scripts/test.sh` installs Chromium and the pinned
//! playwright-core; when they are missing this test fails with the command to run.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn browser_check(kind: Server, name: &str) {
    let root = root();
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists()
            && root.join("tests/browser/node_modules/playwright-core").exists(),
        "the browser test needs Debian's chromium and tests/browser's npm packages: run scripts/test.sh (it installs both)"
    );
    let app = start_app(kind, "3.11", None);
    // One client pausing 150 ms after each 200 ms block: the loop is idle between blocks, so
    // the flame graphs always hold a frame narrower than the whole graph (the zoom check
    // needs one) however busy the machine is.
    let _load = start_load_think(&app, &["/sleep?ms=200"], 1, 8.0, 150);
    std::thread::sleep(Duration::from_millis(300));
    let dir = out_dir(name);
    let url = format!("http://127.0.0.1:{}/health", app.port);
    record_pid(app.proc.pid(), 3.0, &dir, &["--probe", &url]);
    let report = dir.join("report.html");
    let page = std::fs::read_to_string(&report).unwrap();
    // The first screen (verdict banner) names the blocking call site and its fix.
    let banner = &page[page.find("id=\"verdict\"").unwrap()..];
    let banner = &banner[..banner.find("</section>").unwrap()];
    for needed in ["blocking-sleep", "rate_limited", "app.py:", "asyncio.sleep"] {
        assert!(
            banner.contains(needed),
            "{needed:?} missing from the verdict banner"
        );
    }
    let shot = dir.join("report.png");
    let out = Command::new("node")
        .arg(root.join("tests/browser/check_report.mjs"))
        .arg(&report)
        .arg(&shot)
        .output()
        .expect("node runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser check failed:\n{text}");
    assert!(text.contains("all checks passed"), "{text}");
    assert!(shot.exists());
}

#[test]
fn report_works_in_chromium_asyncio() {
    browser_check(Server::UvicornAsyncio, "browser-asyncio");
}

#[test]
fn report_works_in_chromium_uvloop() {
    browser_check(Server::UvicornUvloop, "browser-uvloop");
}

/// `loopprof export --format speedscope` of a committed recording opens in speedscope's own
/// offline viewer (the pinned npm `speedscope` package) in headless Chromium: the profile
/// loads, its flame chart is drawn, its active profile (the event loop inside stalls) is
/// shown, nothing errors. `tests/browser/check_speedscope.mjs` fails on a malformed file.
#[test]
fn export_opens_in_speedscope() {
    let root = root();
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists()
            && root.join("tests/browser/node_modules/speedscope").exists(),
        "the browser test needs Debian's chromium and tests/browser's npm packages: run scripts/test.sh (it installs both)"
    );
    let dir = out_dir("export-speedscope");
    let file = dir.join("profile.speedscope.json");
    let out = run_loopprof(
        &[
            "export",
            root.join("tests/fixtures/blocked.jsonl").to_str().unwrap(),
            "--format",
            "speedscope",
            "-o",
            file.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new("node")
        .arg(root.join("tests/browser/check_speedscope.mjs"))
        .arg(&file)
        .arg("event loop · inside stalls")
        .output()
        .expect("node runs");
    let t = text(&out);
    assert!(out.status.success(), "speedscope check failed:\n{t}");
    assert!(t.contains("all checks passed"), "{t}");
}
