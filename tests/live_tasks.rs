//! Live tests of the asyncio task view ("where requests wait", the task tree of `dump`).
//!
//! Tasks are read from real processes: the stdlib-only `tests/python/tasks_plain.py` on every
//! CPython 3.8+ interpreter present (pyenv's and Debian's own), and the FastAPI app
//! `tests/python/await_app.py` under uvicorn with the asyncio loop and with uvloop, under
//! bounded loopback load: requests queued on an HTTP client's pool of 2 connections, on an
//! `asyncio.Semaphore(2)`, a route whose body a middleware consumed (its read never ends), a
//! `gather` fan-out, and the controls (a pool with room, an idle server), which must give no
//! finding.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

fn dump_json(pid: u32) -> Value {
    let out = run_loopprof(
        &["dump", "-p", &pid.to_string(), "--json"],
        Duration::from_secs(30),
    );
    assert!(
        matches!(out.status.code(), Some(0) | Some(6)),
        "dump failed: {}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("dump --json prints JSON")
}

/// Every node of a task tree, depth first.
fn nodes(v: &Value) -> Vec<&Value> {
    let mut out = vec![v];
    for c in v["children"].as_array().into_iter().flatten() {
        out.extend(nodes(c));
    }
    out
}

fn check_plain_tree(dump: &Value, who: &str) {
    let trees = dump["tasks"].as_array().expect("dump has tasks");
    assert_eq!(trees.len(), 1, "{who}: one loop: {dump:#}");
    let roots = trees[0]["roots"].as_array().unwrap();
    let fanout = roots
        .iter()
        .find(|r| r["name"] == "fanout")
        .unwrap_or_else(|| panic!("{who}: no fanout root: {:#}", trees[0]));
    let children = fanout["children"].as_array().unwrap();
    assert_eq!(children.len(), 5, "{who}: gather children: {fanout:#}");
    let kinds = |k: &str| children.iter().filter(|c| c["kind"] == k).count();
    assert_eq!(kinds("lock"), 3, "{who}: three wait for the semaphore");
    assert_eq!(kinds("sleep"), 2, "{who}: two hold it and sleep");
    for c in children {
        assert!(c["name"].as_str().unwrap().starts_with("worker-"), "{who}");
        assert_eq!(c["state"], "suspended", "{who}");
        let at = &c["stack"][c["app_frame"].as_u64().unwrap() as usize];
        assert!(
            at.as_str()
                .unwrap()
                .starts_with("worker (python/tasks_plain.py:"),
            "{who}: the awaiting line is the worker's: {c:#}"
        );
    }
    assert_eq!(fanout["waits_for"], "_GatheringFuture", "{who}");
    let all: Vec<&Value> = roots.iter().flat_map(nodes).collect();
    assert!(
        all.iter().any(|n| n["name"] == "consumer"),
        "{who}: the queue consumer is listed"
    );
    assert_eq!(
        trees[0]["tasks"],
        all.len(),
        "{who}: every task placed once"
    );
}

fn start_plain(python: &std::path::Path, args: &[&str]) -> Proc {
    spawn_script(python, "tasks_plain.py", args, "ready")
}

#[test]
fn task_trees_are_read_on_every_python_present() {
    let pythons = python_interpreters();
    for python in &pythons {
        let p = start_plain(python, &[]);
        check_plain_tree(&dump_json(p.pid()), &python.display().to_string());
    }
    // uvloop creates the same task objects.
    let p = start_plain(&venv("3.11").join("bin/python"), &["uvloop"]);
    check_plain_tree(&dump_json(p.pid()), "uvloop");
    eprintln!("task trees read on {} interpreters + uvloop", pythons.len());
}

/// The line (1-based) of the first line containing `text` after `def function` in
/// `await_app.py`.
fn app_line(function: &str, text: &str) -> i64 {
    let src = std::fs::read_to_string(root().join("tests/python/await_app.py")).unwrap();
    let lines: Vec<&str> = src.lines().collect();
    let def = lines
        .iter()
        .position(|l| {
            l.trim_start()
                .starts_with(&format!("async def {function}("))
        })
        .unwrap_or_else(|| panic!("no async def {function}"));
    let i = lines[def..]
        .iter()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no {text:?} after def {function}"));
    (def + i + 1) as i64
}

fn summary(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// Serves `await_app` with `kind`, puts `conc` clients on `path` (POSTs when `post`), records
/// 4 s, and returns summary.json.
fn record_load(kind: Server, name: &str, path: &str, conc: u32, post: bool) -> Value {
    let (_upstream, up_port) = start_upstream("3.11");
    let app = start_module(kind, "3.11", "await_app:app", Some(up_port), &[]);
    let _load = if path.is_empty() {
        None
    } else {
        Some(start_load_post(
            &app,
            &[path],
            conc,
            12.0,
            0,
            if post { 1 } else { 0 },
        ))
    };
    std::thread::sleep(Duration::from_millis(1500));
    let dir = out_dir(name);
    record_pid(app.proc.pid(), 4.0, &dir, &[]);
    summary(&dir)
}

fn findings(s: &Value) -> &Vec<Value> {
    s["requests"]["findings"].as_array().unwrap_or_else(|| {
        panic!("summary.json has no requests section: {s:#}");
    })
}

fn places(s: &Value) -> String {
    s["requests"]["places"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {} {} mean {} max {}",
                p["route"], p["kind"], p["resource"], p["mean_tasks"], p["max_tasks"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_pool_queue(kind: Server, name: &str) {
    let s = record_load(kind, name, "/pooled", 16, false);
    // The gate on the pile-up fails the report (exit 7); a higher bar passes.
    let dir = root().join("target/test-output").join(name);
    let gate = |expr: &str| {
        let out = run_loopprof(
            &[
                "report",
                dir.to_str().unwrap(),
                "-o",
                dir.join(format!("gate-{}", expr.len())).to_str().unwrap(),
                "--fail-on",
                expr,
            ],
            Duration::from_secs(60),
        );
        out.status.code()
    };
    assert_eq!(gate("queued_requests > 4"), Some(7));
    assert_eq!(gate("queued_requests > 100"), Some(0));
    let f = findings(&s);
    assert_eq!(
        f.len(),
        1,
        "{name}: one pile-up: {:#}\n{}",
        s["verdict"],
        places(&s)
    );
    let f = &f[0];
    assert_eq!(f["category"], "http-pool-wait");
    assert_eq!(f["place"]["route"], "GET /pooled");
    assert_eq!(f["place"]["kind"], "pool");
    assert_eq!(f["place"]["site"]["function"], "pooled");
    assert_eq!(
        f["place"]["site"]["line"],
        app_line("pooled", "await tight.get(")
    );
    // 16 clients, 2 connections: most of the in-flight requests wait for one.
    let mean = f["place"]["mean_tasks"].as_f64().unwrap();
    assert!(
        mean >= 8.0,
        "{name}: {mean} waiting on average\n{}",
        places(&s)
    );
    assert!(f["fix"]["summary"]
        .as_str()
        .unwrap()
        .contains("max_connections"));
    assert_eq!(
        s["verdict"]["kind"], "requests-queued",
        "{:#}",
        s["verdict"]
    );
    let summary = s["verdict"]["summary"].as_str().unwrap();
    assert!(summary.contains("GET /pooled"), "{summary}");
    assert!(summary.contains("await_app.py:"), "{summary}");
    // The two requests holding the connections wait for the upstream: where time goes.
    let upstream = s["requests"]["places"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "upstream" && p["route"] == "GET /pooled");
    assert!(
        upstream.is_some(),
        "{name}: the upstream wait is listed\n{}",
        places(&s)
    );
}

#[test]
fn requests_queued_on_a_client_pool_asyncio() {
    check_pool_queue(Server::UvicornAsyncio, "tasks-pool-asyncio");
}

#[test]
fn requests_queued_on_a_client_pool_uvloop() {
    check_pool_queue(Server::UvicornUvloop, "tasks-pool-uvloop");
}

#[test]
fn requests_queued_on_a_semaphore() {
    let s = record_load(
        Server::UvicornAsyncio,
        "tasks-semaphore",
        "/guarded",
        10,
        false,
    );
    let f = findings(&s);
    assert_eq!(f.len(), 1, "{:#}\n{}", s["verdict"], places(&s));
    assert_eq!(f[0]["category"], "lock-wait");
    assert_eq!(f[0]["place"]["route"], "GET /guarded");
    assert_eq!(f[0]["place"]["site"]["function"], "guarded");
    assert_eq!(
        f[0]["place"]["site"]["line"],
        app_line("guarded", "async with slots()")
    );
    assert_eq!(s["verdict"]["kind"], "requests-queued");
}

#[test]
fn a_body_read_that_never_ends_is_found() {
    // Each POST's body was consumed by a middleware: the route's read waits until the client
    // gives up (load.py's 10 s timeout).
    let s = record_load(Server::UvicornAsyncio, "tasks-receive", "/audited", 2, true);
    let f = findings(&s);
    assert_eq!(f.len(), 1, "{:#}\n{}", s["verdict"], places(&s));
    assert_eq!(f[0]["category"], "receive-wait");
    assert_eq!(f[0]["place"]["route"], "POST /audited");
    assert_eq!(f[0]["place"]["site"]["function"], "audited");
    assert!(f[0]["place"]["max_wait_ms"].as_f64().unwrap() >= 2000.0);
}

#[test]
fn controls_a_roomy_pool_a_fan_out_and_an_idle_server_stay_clean() {
    // A pool with room: every request waits for the upstream only.
    let s = record_load(Server::UvicornAsyncio, "tasks-roomy", "/roomy", 16, false);
    assert!(findings(&s).is_empty(), "{}", places(&s));
    assert_ne!(s["verdict"]["kind"], "requests-queued");
    let top = &s["requests"]["places"][0];
    assert_eq!(top["kind"], "upstream", "{}", places(&s));
    assert_eq!(top["route"], "GET /roomy");
    assert_ne!(
        s["verdict"]["no_traffic"], true,
        "requests in flight are traffic"
    );

    // A gather fan-out: requests await their own tasks, nothing queues.
    let s = record_load(Server::UvicornAsyncio, "tasks-fanout", "/fanout", 4, false);
    assert!(findings(&s).is_empty(), "{}", places(&s));

    // An idle server: no request in flight.
    let s = record_load(Server::UvicornAsyncio, "tasks-idle", "", 0, false);
    assert!(findings(&s).is_empty(), "{}", places(&s));
    assert_eq!(s["requests"]["max_in_flight"], 0);
}

#[test]
fn dump_shows_the_task_tree_of_a_fan_out() {
    let (_upstream, up_port) = start_upstream("3.11");
    let app = start_module(
        Server::UvicornAsyncio,
        "3.11",
        "await_app:app",
        Some(up_port),
        &[],
    );
    let _load = start_load(&app, &["/fanout"], 4, 10.0);
    std::thread::sleep(Duration::from_millis(1500));
    let d = dump_json(app.proc.pid());
    let all: Vec<&Value> = d["tasks"][0]["roots"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(nodes)
        .collect();
    let parents: Vec<&&Value> = all
        .iter()
        .filter(|n| n["route"] == "GET /fanout" && n["children"].as_array().unwrap().len() == 3)
        .collect();
    assert!(
        !parents.is_empty(),
        "a request task with its 3 gathered tasks: {d:#}"
    );
    // One task at a time runs on a loop: a dump taken while a child is between awaits shows
    // it running, waiting on nothing (CI caught `AsyncClient.get` so); every other child
    // waits on the upstream.
    // A child can also have just yielded at a `sleep(0)` checkpoint (anyio's lock fast path
    // in httpcore's pool, seen beside CPU hogs): ready to run, not waiting on anything.
    let children = parents[0]["children"].as_array().unwrap();
    let running = children.iter().filter(|c| c["state"] == "running").count();
    assert!(running <= 1, "{d:#}");
    let checkpoint = |c: &Value| {
        c["stack"][0]
            .as_str()
            .is_some_and(|f| f.starts_with("__sleep0 "))
    };
    for c in children
        .iter()
        .filter(|c| c["state"] != "running" && !checkpoint(c))
    {
        assert_eq!(c["kind"], "upstream", "{c:#}");
    }
}
