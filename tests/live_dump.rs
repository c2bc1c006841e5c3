//! Live tests of `loopprof dump` on a completely hung server: the seed's news-stream bug
//! (leaving `with ThreadPoolExecutor` waits for a worker stuck on a slow upstream), on the
//! asyncio loop and on uvloop; and a healthy server.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn hung_server_is_diagnosed(kind: Server) {
    let (_upstream, up_port) = start_upstream("3.11");
    let app = start_app(kind, "3.11", Some(up_port));
    let pid = app.proc.pid().to_string();

    let out = run_loopprof(&["dump", "--pid", &pid], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "healthy server: {}", text(&out));

    // One stream request hangs the loop for 8 s in Executor.__exit__.
    let port = app.port;
    let _client = std::thread::spawn(move || {
        let _ = http_get(port, "/executor-shutdown?ms=8000", Duration::from_secs(20));
    });
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        http_get(app.port, "/health", Duration::from_millis(500)).is_err(),
        "the server is hung"
    );
    let started = Instant::now();
    let out = run_loopprof(&["dump", "--pid", &pid], Duration::from_secs(20));
    let took = started.elapsed();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(6), "{t}");
    assert!(took < Duration::from_secs(4), "dump took {took:?}");
    for needed in [
        "executor-shutdown-wait",
        "Executor.__exit__",
        "executor_shutdown.<locals>.event_generator",
        "(event loop): waiting (lock)",
        "The loop is probably waiting for:",
        "at fetch_upstream",
        "waiting (socket)",
    ] {
        assert!(t.contains(needed), "{needed:?} missing:\n{t}");
    }
    // The executor's worker says what it waits on: the upstream's socket.
    let on = format!("waiting (socket) on tcp socket to 127.0.0.1:{up_port}");
    assert!(t.contains(&on), "{on:?} missing:\n{t}");
    let out = run_loopprof(&["dump", "--pid", &pid, "--json"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(v["loop_blocked"], true);
    assert_eq!(v["threads"][0]["event_loop"], true);
    assert!(v["waited_for"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("ThreadPoolExecutor-"));
    // The task tree of the hung loop (read without the loop's help): the streaming
    // response's task (AnyIO names it after its function) is the one running, and the
    // request's own task, waiting for it, says which route it serves.
    assert!(t.contains("asyncio tasks (loop"), "no task tree:\n{t}");
    fn all(n: &serde_json::Value) -> Vec<&serde_json::Value> {
        let mut out = vec![n];
        for c in n["children"].as_array().into_iter().flatten() {
            out.extend(all(c));
        }
        out
    }
    let tasks: Vec<&serde_json::Value> = v["tasks"][0]["roots"]
        .as_array()
        .expect("a task tree")
        .iter()
        .flat_map(all)
        .collect();
    let running: Vec<_> = tasks.iter().filter(|t| t["state"] == "running").collect();
    assert_eq!(running.len(), 1, "one running task: {:#}", v["tasks"]);
    assert!(
        running[0]["name"]
            .as_str()
            .unwrap()
            .contains("StreamingResponse"),
        "{:#}",
        running[0]
    );
    assert!(
        tasks
            .iter()
            .any(|t| t["route"] == "GET /executor-shutdown" && t["state"] == "suspended"),
        "{:#}",
        v["tasks"]
    );
}

#[test]
fn dump_names_the_hang_on_asyncio() {
    hung_server_is_diagnosed(Server::UvicornAsyncio);
}

#[test]
fn dump_names_the_hang_on_uvloop() {
    hung_server_is_diagnosed(Server::UvicornUvloop);
}

/// `dump` takes exactly `--snapshots` snapshots (10 by default) and marks the application's
/// frame in each stack, as the report does.
#[test]
fn dump_takes_the_snapshots_asked_for_and_marks_the_application_frame() {
    let app = start_app(Server::UvicornAsyncio, "3.11", None);
    let _load = start_load(&app, &["/sleep?ms=300"], 1, 6.0);
    std::thread::sleep(Duration::from_millis(300));
    let pid = app.proc.pid().to_string();
    let out = run_loopprof(&["dump", "--pid", &pid], Duration::from_secs(20));
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(t.starts_with("10 snapshots over "), "{t}");
    assert!(t.contains("  ▶ rate_limited (python/app.py:"), "{t}");
    let out = run_loopprof(
        &["dump", "--pid", &pid, "--snapshots", "4"],
        Duration::from_secs(20),
    );
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(t.starts_with("4 snapshots over "), "{t}");
}
