//! Live tests of `loopprof record` against real uvicorn/gunicorn servers on loopback.
//!
//! Each test starts a real server from the fixture app (`tests/python/app.py`), puts bounded
//! load on it, records it with the loopprof binary, and asserts on the recording: the event
//! loop thread's frames, flags, OS state and syscall, the CPU timeline, worker processes,
//! how the recording ended, and that the target is never left stopped.

mod common;

use common::*;
use loopprof::recording::{self, ProcessEventKind, Recording, ThreadSample};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The MainThread samples (tid == pid) of process `pid`, with their time.
fn main_thread(rec: &Recording, pid: u32) -> Vec<(u64, ThreadSample)> {
    rec.samples
        .iter()
        .filter(|s| s.pid == pid)
        .filter_map(|s| {
            s.threads
                .iter()
                .find(|t| t.tid == pid)
                .map(|t| (s.t_us, t.clone()))
        })
        .collect()
}

fn leaf(rec: &Recording, t: &ThreadSample) -> String {
    names(rec, t.stack).first().cloned().unwrap_or_default()
}

fn share<T>(items: &[T], pred: impl Fn(&T) -> bool) -> f64 {
    if items.is_empty() {
        return 0.0;
    }
    items.iter().filter(|i| pred(i)).count() as f64 / items.len() as f64
}

/// Timestamps increase per process, sample spacing is near the period, and every sample
/// that found a running thread stopped it, and the CPU counter does not decrease.
fn assert_timeline(rec: &Recording, pid: u32) {
    let samples: Vec<_> = rec.samples.iter().filter(|s| s.pid == pid).collect();
    assert!(samples.len() > 20, "too few samples for {pid}");
    let mut gaps: Vec<u64> = samples
        .windows(2)
        .map(|w| {
            assert!(w[1].t_us > w[0].t_us, "timestamps must increase");
            assert!(w[1].cpu_us >= w[0].cpu_us, "CPU time must not decrease");
            w[1].t_us - w[0].t_us
        })
        .collect();
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    let period = (1e6 / rec.header.rate_hz) as u64;
    assert!(
        median > period / 2 && median < period * 2,
        "median spacing {median} us vs period {period} us"
    );
    // A tick stops only threads that can move (running or runnable when looked at); threads
    // asleep in the kernel are read without a stop. So a tick that found a Python thread
    // running stopped something, and one that found them all asleep stopped nothing.
    for s in &samples {
        let running = s.threads.iter().any(|t| t.state == 'R');
        assert!(
            !running || s.read_us > 0,
            "a running thread was read without a stop: {s:?}"
        );
    }
}

fn cpu_share(rec: &Recording, pid: u32) -> f64 {
    let s: Vec<_> = rec.samples.iter().filter(|s| s.pid == pid).collect();
    let (a, b) = (s.first().unwrap(), s.last().unwrap());
    (b.cpu_us - a.cpu_us) as f64 / (b.t_us - a.t_us) as f64
}

/// asyncio loop: idle in the selector (epoll_wait); blocked in `time.sleep` inside
/// `rate_limited` (clock_nanosleep, no GIL, sleeping), with the source line recorded.
fn asyncio_sleep_case(python: &str) {
    let app = start_app(Server::UvicornAsyncio, python, None);
    let pid = app.proc.pid();

    let idle = record_pid(pid, 1.5, &out_dir(&format!("asyncio-idle-{python}")), &[]);
    let idle_main = main_thread(&idle, pid);
    assert!(idle_main.len() > 100);
    assert!(
        share(&idle_main, |(_, t)| leaf(&idle, t)
            .ends_with("Selector.select"))
            > 0.95,
        "idle asyncio loop sits in the selector"
    );
    assert!(
        share(&idle_main, |(_, t)| t.syscall.as_deref()
            == Some("epoll_wait"))
            > 0.9
    );
    assert!(share(&idle_main, |(_, t)| !t.gil) > 0.95);
    assert!(
        cpu_share(&idle, pid) < 0.15,
        "idle server CPU {:.2}",
        cpu_share(&idle, pid)
    );
    assert_timeline(&idle, pid);
    assert_eq!(
        idle.end.as_ref().unwrap().reason,
        loopprof::recording::EndReason::Duration
    );
    assert_eq!(idle.processes[0].python_version[..python.len()], *python);

    let _load = start_load(&app, &["/sleep?ms=150"], 1, 6.0);
    std::thread::sleep(Duration::from_millis(300));
    let rec = record_pid(pid, 3.0, &out_dir(&format!("asyncio-sleep-{python}")), &[]);
    let main = main_thread(&rec, pid);
    assert!(main
        .iter()
        .all(|(_, t)| names(&rec, t.stack).contains(&"BaseEventLoop.run_forever".into())));
    assert_eq!(rec.thread_name(&main[0].1), Some("MainThread"));
    let blocked: Vec<_> = main
        .iter()
        .filter(|(_, t)| leaf(&rec, t) == "rate_limited")
        .collect();
    assert!(
        blocked.len() as f64 > 0.6 * main.len() as f64,
        "{} of {} samples in rate_limited",
        blocked.len(),
        main.len()
    );
    assert!(
        share(&blocked, |(_, t)| t.syscall.as_deref()
            == Some("clock_nanosleep"))
            > 0.9
    );
    assert!(share(&blocked, |(_, t)| !t.gil && !t.active && t.state == 'S') > 0.9);
    // The endpoint is on the stack and the C call is named by the recorded source line.
    let (_, t) = blocked[0];
    assert!(names(&rec, t.stack).contains(&"sleep_endpoint".to_string()));
    let f = rec.stack(t.stack).next().unwrap();
    assert!(rec.source_line(f).unwrap().contains("time.sleep("));
    assert_timeline(&rec, pid);
}

#[test]
fn asyncio_loop_states_python_3_11() {
    asyncio_sleep_case("3.11");
}

#[test]
fn asyncio_loop_states_python_3_12() {
    asyncio_sleep_case("3.12");
}

#[test]
fn asyncio_loop_states_python_3_13() {
    asyncio_sleep_case("3.13");
}

/// uvloop: idle means the topmost Python frame is `Runner.run` (epoll_pwait); pure-Python CPU
/// on the loop holds the GIL and runs (state R, syscall "running"); process CPU rises.
#[test]
fn uvloop_cpu_bound_loop_holds_the_gil() {
    let app = start_app(Server::UvicornUvloop, "3.11", None);
    let pid = app.proc.pid();
    let idle = record_pid(pid, 1.0, &out_dir("uvloop-idle"), &[]);
    let idle_main = main_thread(&idle, pid);
    assert!(share(&idle_main, |(_, t)| leaf(&idle, t) == "Runner.run") > 0.95);
    assert!(
        share(&idle_main, |(_, t)| t.syscall.as_deref()
            == Some("epoll_pwait"))
            > 0.9
    );

    let _load = start_load(&app, &["/cpu?ms=150"], 1, 6.0);
    std::thread::sleep(Duration::from_millis(300));
    let rec = record_pid(pid, 3.0, &out_dir("uvloop-cpu"), &[]);
    let main = main_thread(&rec, pid);
    assert!(main.iter().all(|(_, t)| !names(&rec, t.stack)
        .iter()
        .any(|n| n.starts_with("BaseEventLoop"))));
    let busy: Vec<_> = main
        .iter()
        .filter(|(_, t)| names(&rec, t.stack).contains(&"find_primes".to_string()))
        .collect();
    assert!(busy.len() as f64 > 0.6 * main.len() as f64);
    assert!(
        share(&busy, |(_, t)| t.gil) > 0.9,
        "CPU-bound loop holds the GIL"
    );
    assert!(share(&busy, |(_, t)| t.state == 'R' && t.active) > 0.8);
    assert!(share(&busy, |(_, t)| t.syscall.as_deref() == Some("running")) > 0.8);
    // The CPU timeline shows the busy loop: far above the idle server's. (Not "more than half
    // a core": with two CPU hogs on a 2-core machine the loop gets about half of one.)
    let cpu = cpu_share(&rec, pid);
    let idle_cpu = cpu_share(&idle, pid);
    assert!(
        cpu > 0.3 && cpu > 10.0 * idle_cpu,
        "CPU timeline shows the busy loop: {cpu:.2} (idle {idle_cpu:.3})"
    );
}

fn loop_processes(rec: &Recording, anchor: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = rec
        .processes
        .iter()
        .map(|p| p.pid)
        .filter(|pid| {
            main_thread(rec, *pid)
                .iter()
                .any(|(_, t)| names(rec, t.stack).iter().any(|n| n == anchor))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// `uvicorn --workers 2`: the event loops run in spawned children; both are found and sampled.
#[test]
fn uvicorn_workers_are_all_sampled() {
    let app = start_app(Server::UvicornWorkers, "3.11", None);
    let root = app.proc.pid();
    let _load = start_load(&app, &["/sleep?ms=50"], 2, 5.0);
    let rec = record_pid(root, 2.0, &out_dir("uvicorn-workers"), &[]);
    let workers = loop_processes(&rec, "Server.run");
    assert_eq!(workers.len(), 2, "two worker loops in {:?}", rec.processes);
    for w in &workers {
        let info = rec.processes.iter().find(|p| p.pid == *w).unwrap();
        assert_eq!(info.ppid, root, "workers are children of the master");
        assert!(main_thread(&rec, *w).len() > 100);
        assert_timeline(&rec, *w);
    }
    assert!(!workers.contains(&root), "the master runs no loop");

    // --no-subprocesses records the master alone.
    let alone = record_pid(
        root,
        0.5,
        &out_dir("uvicorn-master-only"),
        &["--no-subprocesses"],
    );
    assert_eq!(alone.processes.len(), 1);
}

/// gunicorn with uvicorn workers: the master and both workers are sampled; a worker killed
/// mid-recording ends without error and its replacement is picked up within a second and a half
/// of appearing. How long gunicorn takes to fork and start the replacement is its own business
/// (seconds on a loaded machine): the recording runs until the replacement has been seen for
/// 3 s, then ends with Ctrl-C.
#[test]
fn gunicorn_workers_and_restarts_are_followed() {
    let app = start_app(Server::Gunicorn, "3.11", None);
    let master = app.proc.pid();
    let _load = start_load(&app, &["/health"], 1, 8.0);
    let dir = out_dir("gunicorn-restart");
    let spawned = Instant::now();
    let mut rec_proc = spawn_loopprof(&[
        "record",
        "--name",
        &format!("gunicorn.*127.0.0.1:{}", app.port),
        "--duration",
        "60",
        "-o",
        dir.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let parents = loopprof::capture::procfs::process_parents();
    let before = loopprof::capture::procfs::descendants(master, &parents);
    let victim = *before.first().expect("gunicorn has workers");
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    // Wait for gunicorn to fork the replacement, then for it to import the app and reach its
    // event loop (its main thread waiting in epoll: seconds beside CPU hogs), then let it
    // run for 2 s.
    let deadline = Instant::now() + Duration::from_secs(40);
    let (seen, replacement) = loop {
        let parents = loopprof::capture::procfs::process_parents();
        let now = loopprof::capture::procfs::descendants(master, &parents);
        if let Some(p) = now.iter().find(|p| !before.contains(p)) {
            break (spawned.elapsed(), *p);
        }
        assert!(Instant::now() < deadline, "gunicorn started no replacement");
        std::thread::sleep(Duration::from_millis(20));
    };
    let in_epoll = || {
        std::fs::read_to_string(format!("/proc/{replacement}/wchan"))
            .is_ok_and(|w| w.contains("ep_poll") || w.contains("epoll"))
    };
    while !in_epoll() {
        assert!(
            Instant::now() < deadline,
            "the replacement worker never reached its event loop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    rec_proc.signal(libc::SIGINT);
    let status = rec_proc.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    let rec = recording::load(&dir).unwrap();
    assert_eq!(rec.header.target.pid, master, "--name chose the master");
    let workers = loop_processes(&rec, "UvicornWorker.run");
    assert!(
        workers.len() >= 3,
        "2 workers + the replacement: {workers:?}"
    );
    assert!(rec
        .process_events
        .iter()
        .any(|e| e.event == ProcessEventKind::Exited && e.process.pid == victim));
    let started: Vec<_> = rec
        .process_events
        .iter()
        .filter(|e| e.event == ProcessEventKind::Started && e.process.ppid == master)
        .collect();
    assert!(!started.is_empty(), "the replacement worker was attached");
    let replacement = started[0].process.pid;
    assert!(main_thread(&rec, replacement).len() > 50);
    // Sampled within 1.5 s of the test seeing it appear. The recording's clock starts after
    // loopprof was spawned, so its times are, if anything, earlier than `seen`.
    let first = rec
        .samples
        .iter()
        .find(|s| s.pid == replacement)
        .unwrap()
        .t_us;
    assert!(
        first < (seen + Duration::from_millis(1500)).as_micros() as u64,
        "replacement sampled at {} ms, seen by the test at {} ms",
        first / 1000,
        seen.as_millis()
    );
    assert_eq!(
        rec.end.as_ref().unwrap().reason,
        loopprof::recording::EndReason::Interrupted
    );
}

/// `--probe` GETs the health URL during the recording: a loop blocked 300 ms at a time shows
/// in the probe latencies, which land in the recording and summary.json.
#[test]
fn probe_measures_what_users_see_while_the_loop_is_blocked() {
    let app = start_app(Server::UvicornUvloop, "3.11", None);
    let _load = start_load(&app, &["/sleep?ms=300"], 1, 8.0);
    std::thread::sleep(Duration::from_millis(300));
    let dir = out_dir("probe");
    let url = format!("http://127.0.0.1:{}/health", app.port);
    let rec = record_pid(
        app.proc.pid(),
        3.0,
        &dir,
        &["--probe", &url, "--probe-timeout", "2"],
    );
    assert!(rec.probes.len() >= 5, "{} probes", rec.probes.len());
    assert!(rec.probes.iter().all(|p| p.url == url));
    let slow = rec.probes.iter().filter(|p| p.latency_ms > 100.0).count();
    assert!(
        slow * 2 >= rec.probes.len(),
        "most probes wait for the blocked loop: {:?}",
        rec.probes
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["probes"][0]["url"], url);
    assert!(summary["probes"][0]["p50_ms"].as_f64().unwrap() > 100.0);
    // Bad probe URLs are usage errors before anything is sampled.
    let out = run_loopprof(
        &["record", "--pid", "1", "--probe", "https://x/"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// Ctrl-C (SIGINT) ends the recording cleanly and keeps everything collected.
#[test]
fn ctrl_c_ends_the_recording_cleanly() {
    let app = start_app(Server::UvicornAsyncio, "3.11", None);
    let dir = out_dir("ctrl-c");
    let mut p = spawn_loopprof(&[
        "record",
        "--pid",
        &app.proc.pid().to_string(),
        "-o",
        dir.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_secs(2));
    p.signal(libc::SIGINT);
    let st = p
        .wait_timeout(Duration::from_secs(10))
        .expect("stops on Ctrl-C");
    assert!(st.success());
    let rec = recording::load(&dir).unwrap();
    let end = rec.end.as_ref().unwrap();
    assert_eq!(end.reason, loopprof::recording::EndReason::Interrupted);
    assert!(end.samples > 100 && rec.samples.len() as u64 == end.samples);
    assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
}

/// The target exiting ends the recording cleanly.
#[test]
fn target_exit_ends_the_recording_cleanly() {
    let app = start_app(Server::UvicornUvloop, "3.11", None);
    let dir = out_dir("target-exit");
    let mut p = spawn_loopprof(&[
        "record",
        "--pid",
        &app.proc.pid().to_string(),
        "-o",
        dir.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    app.proc.signal(libc::SIGTERM);
    let st = p
        .wait_timeout(Duration::from_secs(15))
        .expect("stops when the target exits");
    assert!(st.success());
    let rec = recording::load(&dir).unwrap();
    assert_eq!(
        rec.end.as_ref().unwrap().reason,
        loopprof::recording::EndReason::TargetExited
    );
    assert!(rec.samples.len() > 50);
}

/// `record -- COMMAND` starts the server, samples it, and stops it at the end; a command that
/// exits on its own ends the recording.
#[test]
fn command_mode_starts_records_and_stops_the_command() {
    let venv = venv("3.11");
    let port = free_port();
    let mut cmd = server_command(Server::UvicornUvloop, &venv, port);
    cmd.insert(1, "--app-dir".into());
    cmd.insert(
        2,
        root().join("tests/python").to_string_lossy().into_owned(),
    );
    let dir = out_dir("command-mode");
    let mut args = vec![
        "record",
        "--duration",
        "4",
        "-o",
        dir.to_str().unwrap(),
        "--",
    ];
    args.extend(cmd.iter().map(|s| s.as_str()));
    let out = run_loopprof(&args, Duration::from_secs(40));
    assert!(out.status.success(), "{}", text(&out));
    let rec = recording::load(&dir).unwrap();
    assert_eq!(
        rec.header.target.how,
        loopprof::recording::TargetKind::Command
    );
    assert_eq!(
        rec.end.as_ref().unwrap().reason,
        loopprof::recording::EndReason::Duration
    );
    let pid = rec.header.target.pid;
    assert!(main_thread(&rec, pid).len() > 100);
    assert!(
        !loopprof::capture::procfs::is_alive(pid),
        "the started server was terminated"
    );

    // Regression: loopprof watches its started command for exit without consuming the
    // ptrace-stop notifications its samplers wait for (which left the target stopped and
    // loopprof hung). Several short, fast recordings of a started command must all finish.
    let py = venv.join("bin/python");
    for i in 0..5 {
        let dir = out_dir(&format!("command-repeat-{i}"));
        let out = run_loopprof(
            &[
                "record",
                "--duration",
                "1.5",
                "--rate",
                "250",
                "-o",
                dir.to_str().unwrap(),
                "--",
                py.to_str().unwrap(),
                "-c",
                "import time\nwhile True: time.sleep(0.002)",
            ],
            Duration::from_secs(20),
        );
        assert!(out.status.success(), "run {i}: {}", text(&out));
    }

    let dir = out_dir("command-exits");
    let started = Instant::now();
    let out = run_loopprof(
        &[
            "record",
            "--duration",
            "20",
            "-o",
            dir.to_str().unwrap(),
            "--",
            py.to_str().unwrap(),
            "-c",
            "import time\nfor _ in range(15): time.sleep(0.1)",
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(12));
    let rec = recording::load(&dir).unwrap();
    assert_eq!(
        rec.end.as_ref().unwrap().reason,
        loopprof::recording::EndReason::CommandExited
    );
    assert!(!rec.samples.is_empty());
}

fn stopped_threads(pid: u32) -> Vec<String> {
    let mut bad = Vec::new();
    for tid in loopprof::capture::procfs::thread_ids(pid).unwrap_or_default() {
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        let traced = status
            .lines()
            .find(|l| l.starts_with("TracerPid:"))
            .map(|l| l.split_whitespace().nth(1) != Some("0"))
            .unwrap_or(false);
        let state = loopprof::capture::procfs::thread_stat(pid, tid)
            .map(|s| s.state)
            .unwrap_or('?');
        if traced || state == 't' || state == 'T' {
            bad.push(format!("tid {tid}: state {state}, traced {traced}"));
        }
    }
    bad
}

/// SIGKILL of loopprof mid-sample (at 1000 Hz, so a kill often lands while threads are
/// stopped) never leaves the server stopped or traced, and the cut recording still reads.
#[test]
fn sigkill_of_loopprof_never_leaves_the_target_stopped() {
    let app = start_app(Server::UvicornUvloop, "3.11", None);
    let pid = app.proc.pid();
    let _load = start_load(&app, &["/cpu?ms=20", "/health"], 1, 20.0);
    let mut last_dir = None;
    for i in 0..8u64 {
        let dir = out_dir(&format!("sigkill-{i}"));
        let mut p = spawn_loopprof(&[
            "record",
            "--pid",
            &pid.to_string(),
            "--rate",
            "1000",
            // No duty cycle: stop as often as the rate asks, so kills land mid-stop.
            "--max-stop-pct",
            "100",
            "-o",
            dir.to_str().unwrap(),
        ]);
        std::thread::sleep(Duration::from_millis(700 + i * 97));
        p.signal(libc::SIGKILL);
        p.wait_timeout(Duration::from_secs(5)).expect("killed");
        // The kernel detaches a dead tracer's tracees; give it a moment, then insist.
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let bad = stopped_threads(pid);
            if bad.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "target left stopped: {bad:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (status, _) = http_get(app.port, "/health", Duration::from_secs(3))
            .expect("server keeps serving after loopprof was killed");
        assert_eq!(status, 200);
        last_dir = Some(dir);
    }
    // A recording cut by SIGKILL reads up to its last complete record, with a warning.
    let rec = recording::load(&last_dir.unwrap()).expect("cut recording loads");
    assert!(rec.end.is_none());
    assert!(!rec.warnings.is_empty());
    assert!(rec.samples.len() > 100, "{} samples", rec.samples.len());
}

/// A recording cut at any point reads back up to its last complete record.
#[test]
fn truncated_recording_reads_back_with_a_warning() {
    let app = start_app(Server::UvicornAsyncio, "3.11", None);
    let _load = start_load(&app, &["/sleep?ms=30"], 1, 5.0);
    let dir = out_dir("truncate");
    let full = record_pid(app.proc.pid(), 2.0, &dir, &[]);
    let bytes = std::fs::read(dir.join(recording::RECORDING_FILE)).unwrap();
    let cut_dir = out_dir("truncate-cut");
    std::fs::create_dir_all(&cut_dir).unwrap();
    let cut = cut_dir.join("cut.jsonl.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let rec = recording::load(&cut).expect("a cut file still loads");
    assert!(rec.end.is_none());
    assert!(
        rec.warnings.iter().any(|w| w.contains("cut short")),
        "{:?}",
        rec.warnings
    );
    assert!(!rec.samples.is_empty() && rec.samples.len() < full.samples.len());
    // The CLI reads it too, and says so on stderr.
    let out = run_loopprof(&["inspect", cut.to_str().unwrap()], Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cut short"));
    // Ten bytes are not a recording: a clear error with the IO exit code.
    std::fs::write(&cut, &bytes[..10]).unwrap();
    let out = run_loopprof(&["inspect", cut.to_str().unwrap()], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopprof recording"));
}

/// Bad targets and outputs fail fast with a fix-it message and a documented exit code.
#[test]
fn bad_targets_and_outputs_give_actionable_errors() {
    let dir = out_dir("errors");
    let d = dir.to_str().unwrap();
    let out = run_loopprof(
        &["record", "--pid", "3999999", "-d", "1", "-o", d],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no process with pid 3999999"));
    // A failed attach leaves no empty output directory behind.
    assert!(!dir.exists(), "{} was created for nothing", dir.display());

    let sleeper = Proc::spawn("sleep", Command::new("sleep").arg("30"));
    let out = run_loopprof(
        &[
            "record",
            "--pid",
            &sleeper.pid().to_string(),
            "-d",
            "1",
            "-o",
            d,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a Python process"));
    assert!(!dir.exists(), "not a Python process: no output directory");

    let out = run_loopprof(
        &[
            "record",
            "--name",
            "no-such-process-[0-9]{12}",
            "-d",
            "1",
            "-o",
            d,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pgrep -af"));

    let app = start_app(Server::UvicornAsyncio, "3.11", None);
    let out = run_loopprof(
        &[
            "record",
            "--pid",
            &app.proc.pid().to_string(),
            "-d",
            "1",
            "-o",
            "/proc/loopprof-cannot-write",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot create output directory"));

    let out = run_loopprof(&["record", "-d", "1"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // An unprivileged user cannot ptrace a root-owned server: exit 4 and how to fix it.
    let out = run_as_nobody(&[
        "record",
        "--pid",
        &app.proc.pid().to_string(),
        "-d",
        "1",
        "-o",
        "{dir}/out",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    // Said for who runs it: not root, another user's process; nothing py-spy-worded about
    // the process maybe not running, and no ptrace_scope (which does not help here).
    assert!(
        err.contains("permission denied")
            && err.contains("cap_sys_ptrace")
            && err.contains("belongs to another user"),
        "{err}"
    );
    assert!(
        !err.contains("check if it is running") && !err.contains("ptrace_scope"),
        "{err}"
    );
}

/// Without a terminal (stderr captured, as in CI logs), `record` says what it records, for
/// how long and where, then prints progress every 10 s. An idle server's recording says it saw
/// no request (a `healthy` verdict would read as good news); the same server under load (a
/// healthy `await asyncio.sleep` route) does not get that sentence.
#[test]
fn an_idle_window_says_it_saw_no_traffic_and_progress_shows_without_a_terminal() {
    let app = start_app(Server::UvicornAsyncio, "3.11", None);
    let dir = out_dir("idle-window");
    let out = record_output(app.proc.pid(), 11.0, &dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "recording pid {} (1 process) for 11 s at 100 Hz; outputs go to ",
            app.proc.pid()
        )),
        "{err}"
    );
    assert!(err.contains("recording: 10 s of 11 s · "), "{err}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["verdict"]["no_traffic"], true, "{:#}", s["verdict"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("No request was seen being served"));

    let _load = start_load(&app, &["/ctl/async-sleep?ms=20"], 2, 8.0);
    std::thread::sleep(Duration::from_millis(300));
    let dir = out_dir("idle-window-loaded");
    record_pid(app.proc.pid(), 3.0, &dir, &[]);
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert!(
        s["verdict"].get("no_traffic").is_none(),
        "{:#}",
        s["verdict"]
    );
}

/// A target already held by another tracer (a debugger, strace, py-spy) cannot be stopped:
/// `record` says which process holds it and what to do (exit 4) instead of recording
/// nothing but failed ticks; `--nonblocking`, which stops nothing, still records it.
#[test]
fn a_target_held_by_another_tracer_is_named_and_nonblocking_still_records() {
    use std::io::BufRead;
    let app = start_app(Server::UvicornAsyncio, "3.11", None);
    let pid = app.proc.pid().to_string();
    let mut tracer = Proc::spawn(
        "tracer",
        Command::new(venv("3.11").join("bin/python"))
            .arg(root().join("tests/python/tracer.py"))
            .args([&pid, "60"])
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    std::io::BufReader::new(tracer.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "seized");
    let dir = out_dir("already-traced");
    let out = run_loopprof(
        &[
            "record",
            "--pid",
            &pid,
            "-d",
            "1",
            "-o",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "already traced by process {} (python",
            tracer.pid()
        )) && err.contains("--nonblocking"),
        "{err}"
    );
    assert!(!dir.exists(), "a failed attach leaves no directory");
    let out = run_loopprof(
        &[
            "record",
            "--pid",
            &pid,
            "-d",
            "1",
            "--nonblocking",
            "-o",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// `loopprof doctor` before an incident: as root against a gunicorn master with uvicorn
/// workers, every check passes and the loops of the workers are found; a process that is not
/// Python exits 3; an unprivileged user against a root server exits 4 and says how to fix it.
#[test]
fn doctor_says_whether_recording_will_work() {
    let app = start_app(Server::Gunicorn, "3.12", None);
    let pid = app.proc.pid().to_string();
    let out = run_loopprof(&["doctor", "--pid", &pid], Duration::from_secs(30));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(!t.contains("FAIL"), "{t}");
    assert!(t.contains("python: CPython 3.12"), "{t}");
    // The master runs no loop; its two workers do.
    assert!(t.contains("event loop: 2 loops ("), "{t}");
    assert!(t.contains("in 2 of 3 Python processes"), "{t}");
    let json = run_loopprof(
        &["doctor", "--pid", &pid, "--json"],
        Duration::from_secs(30),
    );
    let checks: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert!(checks
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] != "fail"));

    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let out = run_loopprof(
        &["doctor", "--pid", &sleeper.id().to_string()],
        Duration::from_secs(30),
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("FAIL  attach"), "{}", text(&out));

    let out = run_as_nobody(&["doctor", "--pid", &pid]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(t.contains("WARN  privileges: user 65534"), "{t}");
    assert!(
        t.contains("FAIL  attach") && t.contains("cap_sys_ptrace"),
        "{t}"
    );
}

/// Threads asleep are not stopped, and are still sampled as they are: a thread that has not
/// run since its last read keeps that read (checked by its run count), one that ran is read
/// without a stop (and read again, stopped, only if it woke during that read). The alternating thread must be seen in each sleep in proportion to the
/// time it spends there (60 ms against 20 ms: 0.75; a read of a thread that woke, redone at a
/// later moment, would shift that), every sample of it asleep must show a sleep with its
/// `clock_nanosleep`, and the threads that never wake must cost no stop after the first
/// ticks.
#[test]
fn sleeping_threads_are_sampled_without_a_stop_and_without_bias() {
    let python = venv("3.11").join("bin/python");
    let target = spawn_script(&python, "sleepers.py", &[], "ready");
    let pid = target.pid();
    let rec = record_pid(pid, 4.0, &out_dir("sleepers"), &[]);
    let end = rec.end.as_ref().unwrap();
    let thread = |name: &str| -> Vec<ThreadSample> {
        rec.samples
            .iter()
            .flat_map(|s| s.threads.iter())
            .filter(|t| t.name.map(|n| rec.str(n)) == Some(name))
            .cloned()
            .collect()
    };
    let alternating = thread("alternating");
    let idle = thread("idle");
    assert!(alternating.len() > 200 && idle.len() > 200, "{end:?}");

    let in_sleep: Vec<String> = alternating
        .iter()
        .map(|t| leaf(&rec, t))
        .filter(|l| l == "long_wait" || l == "short_wait")
        .collect();
    let long = share(&in_sleep, |l| l == "long_wait");
    assert!(
        (0.6..=0.9).contains(&long),
        "long_wait share {long:.2} of {} sleep samples (expected about 0.75)",
        in_sleep.len()
    );
    for t in alternating.iter().filter(|t| t.state == 'S') {
        let l = leaf(&rec, t);
        assert!(
            l == "long_wait" || l == "short_wait",
            "asleep in {l}: {:?}",
            names(&rec, t.stack)
        );
        assert_eq!(t.syscall.as_deref(), Some("clock_nanosleep"), "{t:?}");
    }
    for t in &idle {
        assert_eq!(leaf(&rec, t), "idle", "{:?}", names(&rec, t.stack));
    }
    // Main and idle never run after the first ticks: nearly all their samples are carried
    // over (the alternating thread's too, between its wakes).
    let sleepers = (idle.len() * 2) as u64;
    assert!(
        end.unchanged >= sleepers * 8 / 10,
        "{} of about {sleepers} samples of never-waking threads carried over: {end:?}",
        end.unchanged
    );
    let unstopped = share(&rec.samples, |s| s.read_us == 0);
    assert!(
        unstopped >= 0.5,
        "only {unstopped:.2} of the ticks stopped nothing"
    );
}
