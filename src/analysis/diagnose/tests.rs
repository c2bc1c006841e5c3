//! Unit tests of the diagnosis on small hand-made recordings.

use super::attribute::called_on_line;
use super::*;
use crate::analysis::loops::{ActivityKind, WaitReason};
use crate::recording::testing::*;
use crate::recording::{GcSample, RawFrame, RawThread};

const ST: &str = "/usr/lib/python3.11";
const SP: &str = "/venv/lib/python3.11/site-packages";

fn base() -> Vec<RawFrame> {
    vec![
        frame("Runner.run", &format!("{ST}/asyncio/runners.py"), 118),
        frame("Server.run", &format!("{SP}/uvicorn/server.py"), 86),
    ]
}

fn request(top: &[RawFrame], endpoint: &str) -> Vec<RawFrame> {
    let mut v = top.to_vec();
    v.extend(fastapi_request_frames(endpoint, "/srv/app/main.py", SP));
    v.extend(base());
    v
}

fn sleep_stack() -> Vec<RawFrame> {
    request(
        &[frame("rate_limited", "/srv/app/main.py", 12)],
        "get_quote",
    )
}

/// The MainThread blocked in `time.sleep` in `rate_limited` (a request to `get_quote`).
fn sleeping() -> RawThread {
    thread(
        1,
        "MainThread",
        'S',
        "clock_nanosleep",
        false,
        sleep_stack(),
    )
}

/// The MainThread idle in its selector.
fn idle() -> RawThread {
    thread(1, "MainThread", 'S', "epoll_pwait", false, base())
}

/// Samples of one uvloop MainThread: `pattern` gives each sample's kind, at irregular
/// spacing when `jitter` (timestamps are never assumed periodic).
fn recording(pattern: &[char], jitter: bool) -> Recording {
    let mut b = RecordingBuilder::new(header(1, 100.0));
    let mut t = 0u64;
    for (i, c) in pattern.iter().enumerate() {
        let th = match c {
            'i' => idle(),
            's' => sleeping(),
            'c' => thread(
                1,
                "MainThread",
                'R',
                "running",
                true,
                request(
                    &[frame("crunch", "/srv/app/score.py", 30 + (i % 3) as i32)],
                    "score",
                ),
            ),
            'g' | 'h' => thread(1, "MainThread", 'S', "futex", false, base()),
            _ => unreachable!(),
        };
        let mut threads = vec![th];
        if *c == 'g' {
            threads.push(thread(
                2,
                "cruncher",
                'R',
                "running",
                true,
                vec![frame("number_cruncher", "/srv/app/jobs.py", 22)],
            ));
        }
        b.sample(1, t, t / 2, &threads);
        t += if jitter && i % 4 == 0 { 25_000 } else { 10_000 };
    }
    b.finish(end(t, pattern.len() as u64))
}

fn diag(rec: &Recording) -> Diagnosis {
    diagnose(rec, &Catalog::builtin(), &Options::default())
}

#[test]
fn stalls_split_at_idle_samples_and_are_timed_by_timestamps() {
    // idle, 10 sleeping (100 ms), idle, 3 sleeping (30 ms: short), idle x 6.
    let pattern: Vec<char> = "issssssssssiisssiiiiii".chars().collect();
    let rec = recording(&pattern, false);
    let d = diag(&rec);
    assert_eq!(d.loops.len(), 1);
    assert_eq!(d.findings.len(), 1);
    let f = &d.findings[0];
    assert_eq!(f.category, "blocking-sleep");
    assert_eq!(f.stalls, 1);
    assert!((f.max_stall_ms - 100.0).abs() < 0.01, "{}", f.max_stall_ms);
    assert_eq!(f.short_blocks, 1);
    assert!((f.short_blocked_ms - 30.0).abs() < 0.01);
    assert_eq!(f.endpoint.as_deref(), Some("get_quote"));
    assert_eq!(f.call_site.as_ref().unwrap().function, "rate_limited");
    assert_eq!(f.state, ActivityKind::Waiting);
    assert_eq!(f.wait_reason, Some(WaitReason::Sleep));
    assert_eq!(d.verdict.kind, VerdictKind::LoopBlocked);
    assert!((d.verdict.worst_stall_ms - 100.0).abs() < 0.01);
}

#[test]
fn a_finding_names_the_route_served_most_of_its_time() {
    // 8 samples serving GET /quotes/{symbol}, 2 of a POST at the same site, 1 unknown:
    // the route that took the most time is the finding's, and it is in the verdict.
    let mut b = RecordingBuilder::new(header(1, 100.0));
    let mut t = 0u64;
    for i in 0..14 {
        let mut th = if (1..12).contains(&i) {
            sleeping()
        } else {
            idle()
        };
        th.route = match i {
            1..=8 => Some("GET /quotes/{symbol}".into()),
            9 | 10 => Some("POST /quotes".into()),
            _ => None,
        };
        b.sample(1, t, t / 2, &[th]);
        t += 10_000;
    }
    let d = diag(&b.finish(end(t, 14)));
    let f = &d.findings[0];
    assert_eq!(f.route.as_deref(), Some("GET /quotes/{symbol}"));
    assert!(
        d.verdict.summary.contains("(GET /quotes/{symbol})"),
        "{}",
        d.verdict.summary
    );
    // A recording without routes (format 3 and older) has none, and says nothing of it.
    let d = diag(&recording(
        &"issssssssssi".chars().collect::<Vec<_>>(),
        false,
    ));
    assert_eq!(d.findings[0].route, None);
    assert!(!d.verdict.summary.contains("(GET"), "{}", d.verdict.summary);
}

#[test]
fn without_a_route_in_the_samples_the_route_table_names_the_endpoints_route() {
    let pattern: Vec<char> = "issssssssssi".chars().collect();
    let with_table = |routes: &[&str]| {
        let mut b = RecordingBuilder::new(header(1, 100.0));
        for r in routes {
            b.record(crate::recording::Record::Route(
                crate::recording::RouteDef {
                    pid: 1,
                    route: (*r).into(),
                    endpoint: "get_quote".into(),
                },
            ));
        }
        let mut t = 0u64;
        for c in &pattern {
            let th = match c {
                's' => sleeping(),
                _ => idle(),
            };
            b.sample(1, t, t / 2, &[th]);
            t += 10_000;
        }
        diag(&b.finish(end(t, pattern.len() as u64)))
    };
    let d = with_table(&["GET /quotes/{symbol}"]);
    assert_eq!(d.findings[0].route.as_deref(), Some("GET /quotes/{symbol}"));
    // One endpoint function serving two routes: which one is not known, so none is named.
    let d = with_table(&["GET /quotes/{symbol}", "GET /q/{symbol}"]);
    assert_eq!(d.findings[0].route, None);
}

#[test]
fn an_idle_window_says_it_saw_no_traffic() {
    let idle = |route: Option<&str>, probe: bool| {
        let mut b = RecordingBuilder::new(header(1, 100.0));
        if probe {
            b.record(crate::recording::Record::Probe(
                crate::recording::ProbeResult {
                    url: "http://127.0.0.1:8000/health".into(),
                    t_us: 0,
                    latency_ms: 0.9,
                    status: Some(200),
                    error: None,
                },
            ));
        }
        for i in 0..100u64 {
            let mut th = idle();
            if i == 50 {
                th.route = route.map(Into::into);
            }
            b.sample(1, i * 10_000, 0, &[th]);
        }
        diag(&b.finish(end(1_000_000, 100)))
    };
    let d = idle(None, false);
    assert_eq!(d.verdict.kind, VerdictKind::Healthy);
    assert!(d.verdict.no_traffic);
    assert!(
        d.verdict.summary.starts_with("No request was seen"),
        "{}",
        d.verdict.summary
    );
    // loopprof's own probe requests are not traffic.
    assert!(idle(Some("GET /health"), true).verdict.no_traffic);
    // One sample serving a request is.
    let d = idle(Some("GET /orders/{order_id}"), true);
    assert!(!d.verdict.no_traffic);
    assert!(
        d.verdict.summary.contains("never blocked"),
        "{}",
        d.verdict.summary
    );
}

#[test]
fn back_to_back_requests_at_one_site_are_separate_stalls() {
    // 20 samples blocked at one line with no idle sample between them: two requests of
    // 100 ms each (request numbers 4 and 5), not one 200 ms stall. Without request numbers
    // (older recordings, or no ASGI frame) they stay one block, as before.
    let run = |reqs: bool| {
        let mut b = RecordingBuilder::new(header(1, 100.0));
        let mut t = 0u64;
        for i in 0..24 {
            let mut th = if (2..22).contains(&i) {
                sleeping()
            } else {
                idle()
            };
            if reqs && (2..22).contains(&i) {
                th.request = Some(if i < 12 { (0xa0, 1) } else { (0xb0, 1) });
            }
            b.sample(1, t, t / 2, &[th]);
            t += 10_000;
        }
        diag(&b.finish(end(t, 24)))
    };
    let d = run(true);
    let f = &d.findings[0];
    assert_eq!(f.stalls, 2, "{f:?}");
    assert!((f.max_stall_ms - 100.0).abs() < 0.01, "{}", f.max_stall_ms);
    let d = run(false);
    assert_eq!(d.findings[0].stalls, 1);
    assert!((d.findings[0].max_stall_ms - 200.0).abs() < 0.01);
}

#[test]
fn irregular_sampling_is_measured_not_assumed() {
    let pattern: Vec<char> = "issssssssi".chars().collect();
    let even = diag(&recording(&pattern, false)).findings[0].max_stall_ms;
    let jittered = diag(&recording(&pattern, true)).findings[0].max_stall_ms;
    assert!((even - 80.0).abs() < 0.01);
    // Samples 0, 4 and 8 are followed by 25 ms gaps: the stall covers more wall time.
    assert!(jittered > even + 10.0, "{jittered} vs {even}");
}

#[test]
fn a_busy_but_healthy_loop_has_no_findings() {
    // One 10 ms callback in two seconds: no stall, and far under the 2 % share.
    let mut pattern = vec!['i'; 200];
    pattern[50] = 's';
    let d = diag(&recording(&pattern, false));
    assert!(d.findings.is_empty(), "{:?}", d.findings);
    assert_eq!(d.verdict.kind, VerdictKind::Healthy);
}

#[test]
fn cpu_on_the_loop_is_one_stall_across_lines() {
    let pattern: Vec<char> = "icccccccci".chars().collect();
    let d = diag(&recording(&pattern, false));
    assert_eq!(d.findings.len(), 1);
    let f = &d.findings[0];
    assert_eq!(f.category, "cpu-bound");
    assert_eq!(f.stalls, 1);
    assert_eq!(f.state, ActivityKind::OnCpu);
    assert_eq!(d.verdict.kind, VerdictKind::CpuBoundLoop);
}

#[test]
fn gil_waits_name_the_thread_holding_the_gil() {
    let pattern: Vec<char> = "igigggiggggigggg".chars().collect();
    let d = diag(&recording(&pattern, false));
    let f = d
        .findings
        .iter()
        .find(|f| f.category == "gil-contention")
        .expect("gil finding");
    let c = f.culprit_thread.as_ref().unwrap();
    assert_eq!(c.name, "cruncher");
    assert_eq!(c.call_site.as_ref().unwrap().function, "number_cruncher");
    assert_eq!(d.verdict.kind, VerdictKind::GilContention);
    let cruncher = d.threads.iter().find(|t| t.name == "cruncher").unwrap();
    assert_eq!(cruncher.on_cpu_pct, 100.0);
    let main = d.threads.iter().find(|t| t.event_loop).unwrap();
    assert!(main.gil_wait_pct > 50.0);
}

#[test]
fn a_collection_inside_a_callback_is_the_collectors_not_the_allocating_lines() {
    // 6 samples computing in `crunch`, 8 more in `crunch` while a generation-2 collection
    // runs, 8 more computing: the callback keeps its own 140 ms, the collector its 80 ms.
    let crunch = request(&[frame("crunch", "/srv/app/score.py", 30)], "score");
    let mut b = RecordingBuilder::new(header(1, 100.0));
    let mut collections = [100u64, 10, 1];
    for i in 0..24u64 {
        let th = if i == 0 || i == 23 {
            idle()
        } else {
            thread(1, "MainThread", 'R', "running", true, crunch.clone())
        };
        let collecting = (7..15).contains(&i);
        if i == 15 {
            collections[2] += 1;
            collections[0] += 1;
            collections[1] += 1;
        }
        b.sample_gc(
            1,
            i * 10_000,
            i * 5_000,
            GcSample {
                collecting,
                collections,
            },
            &[th],
        );
    }
    let d = diag(&b.finish(end(240_000, 24)));
    let gc = d
        .findings
        .iter()
        .find(|f| f.category == GC_CATEGORY)
        .unwrap();
    assert!((gc.max_stall_ms - 80.0).abs() < 0.01, "{}", gc.max_stall_ms);
    assert!(gc.call_site.is_none());
    assert_eq!(
        gc.blocking_call.as_deref(),
        Some("garbage collection (generation 2)")
    );
    let cpu = d
        .findings
        .iter()
        .find(|f| f.category == "cpu-bound")
        .unwrap();
    assert_eq!(
        cpu.stalls, 1,
        "the callback is one block across the collection"
    );
    assert!(
        (cpu.max_stall_ms - 140.0).abs() < 0.01,
        "{}",
        cpu.max_stall_ms
    );
}

#[test]
fn gil_waits_with_no_holder_in_sight_are_hand_over_latency() {
    // 'h': the loop waits for the GIL and no other thread holds it in that sample (threads
    // doing I/O hand the GIL around): nothing for one call site to fix.
    let pattern: Vec<char> = "ihihhhihhhhihhhh".chars().collect();
    let d = diag(&recording(&pattern, false));
    assert!(d.findings.is_empty(), "{:?}", d.findings);
    assert_eq!(d.verdict.kind, VerdictKind::Healthy);
    assert!(
        d.verdict.gil_wait_pct > 50.0,
        "the figure still shows the waits"
    );
}

#[test]
fn library_only_sites_need_a_continuous_kernel_wait() {
    // A saturated loop: every sample busy in the server's own response writing, on CPU.
    let write = vec![
        frame(
            "_SelectorSocketTransport.write",
            &format!("{ST}/asyncio/selector_events.py"),
            1057,
        ),
        frame(
            "RequestResponseCycle.send",
            &format!("{SP}/uvicorn/protocols/http/httptools_impl.py"),
            524,
        ),
    ];
    let mut busy = write.clone();
    busy.extend(base());
    let mut b = RecordingBuilder::new(header(1, 100.0));
    for i in 0..40u64 {
        let (st, sc, gil) = if i % 2 == 0 {
            ('R', "running", true)
        } else {
            ('R', "running", false)
        };
        b.sample(
            1,
            i * 10_000,
            i * 10_000,
            &[thread(1, "MainThread", st, sc, gil, busy.clone())],
        );
    }
    let d = diag(&b.finish(end(400_000, 40)));
    assert!(d.findings.is_empty(), "{:?}", d.findings);
    // No call site to blame, but a loop busy all the time is not healthy: saturated.
    assert_eq!(d.verdict.kind, VerdictKind::LoopSaturated);
    assert!(
        d.verdict.summary.contains("saturated"),
        "{}",
        d.verdict.summary
    );
    assert_eq!(d.verdict.worst_stall_ms, 0.0);
    // The same code blocked in the kernel for 300 ms is a stall.
    let mut b = RecordingBuilder::new(header(1, 100.0));
    for i in 0..40u64 {
        let th = if (5..35).contains(&i) {
            thread(1, "MainThread", 'S', "sendto", false, busy.clone())
        } else {
            idle()
        };
        b.sample(1, i * 10_000, 0, &[th]);
    }
    let d = diag(&b.finish(end(400_000, 40)));
    assert_eq!(d.findings.len(), 1);
    assert_eq!(d.findings[0].category, "unknown-blocking");
    assert!((d.findings[0].max_stall_ms - 300.0).abs() < 0.01);
}

#[test]
fn cheap_requests_filling_the_loop_are_saturation_with_the_short_blocks_listed() {
    // 200 on-CPU samples at one application line, a new request in every sample except
    // five pairs (a request seen twice): short blocks of 2% of the loop's time, no stall.
    // The loop is saturated by the request rate; the short-block site stays listed.
    let crunch = request(&[frame("crunch", "/srv/app/score.py", 30)], "score");
    let mut b = RecordingBuilder::new(header(1, 100.0));
    let mut req = 0u64;
    for i in 0..200u64 {
        if i % 40 != 1 {
            req += 1;
        }
        let mut th = thread(1, "MainThread", 'R', "running", true, crunch.clone());
        th.request = Some((req, 1));
        th.sched = Some([i * 10_000_000, 0]);
        b.sample(1, i * 10_000, i * 10_000, &[th]);
    }
    let d = diag(&b.finish(end(2_000_000, 200)));
    assert_eq!(d.verdict.worst_stall_ms, 0.0);
    assert_eq!(
        d.verdict.kind,
        VerdictKind::LoopSaturated,
        "{}",
        d.verdict.summary
    );
    assert!(
        d.verdict.summary.contains("listed below"),
        "{}",
        d.verdict.summary
    );
    assert!(
        d.findings
            .iter()
            .all(|f| f.kind == FindingKind::RepeatedShortBlocks),
        "{:?}",
        d.findings
    );
}

#[test]
fn short_blocks_inside_an_awaited_async_api_are_not_findings() {
    // `await asyncio.create_subprocess_exec(...)` forks on the loop for ~30 ms each time.
    let spawn = request(
        &[
            frame("_fork_exec", &format!("{ST}/subprocess.py"), 1800),
            frame(
                "create_subprocess_exec",
                &format!("{ST}/asyncio/subprocess.py"),
                224,
            ),
        ],
        "run_tool",
    );
    let mut b = RecordingBuilder::new(header(1, 100.0));
    for i in 0..100u64 {
        let th = if i % 10 < 3 {
            thread(1, "MainThread", 'R', "running", true, spawn.clone())
        } else {
            idle()
        };
        b.sample(1, i * 10_000, 0, &[th]);
    }
    let d = diag(&b.finish(end(1_000_000, 100)));
    assert!(d.findings.is_empty(), "{:?}", d.findings);
}

#[test]
fn time_waiting_for_a_cpu_is_not_blocking_by_the_code() {
    // 100 ms "on CPU" in a callback, but the thread was runnable without a CPU for 90 % of
    // it (an overloaded machine): the code held the loop ~10 ms, no stall.
    let build = |starved: f64| {
        let mut b = RecordingBuilder::new(header(1, 100.0));
        let mut wait_ns = 0u64;
        let mut run_ns = 0u64;
        for i in 0..30u64 {
            let mut th = if (10..20).contains(&i) {
                thread(
                    1,
                    "MainThread",
                    'R',
                    "running",
                    true,
                    request(&[frame("render", "/srv/app/views.py", 9)], "page"),
                )
            } else {
                idle()
            };
            th.sched = Some([run_ns, wait_ns]);
            if (10..20).contains(&i) {
                wait_ns += (10_000_000.0 * starved) as u64;
                run_ns += (10_000_000.0 * (1.0 - starved)) as u64;
            } else {
                run_ns += 100_000;
            }
            b.sample(1, i * 10_000, 0, &[th]);
        }
        diag(&b.finish(end(300_000, 30)))
    };
    let starved = build(0.9);
    assert!(starved.findings.is_empty(), "{:?}", starved.findings);
    assert!(
        starved.verdict.cpu_starved_pct > 25.0,
        "{}",
        starved.verdict.cpu_starved_pct
    );
    let running = build(0.0);
    assert_eq!(running.findings.len(), 1);
    assert_eq!(running.findings[0].category, "cpu-bound");
    assert!((running.findings[0].max_stall_ms - 100.0).abs() < 0.01);
}

#[test]
fn a_gil_holder_waiting_for_a_cpu_does_not_make_a_gil_stall() {
    // The loop waits 100 ms for the GIL held by "cruncher"; the cruncher was runnable without
    // a CPU for `starved` of that time (preempted with the GIL in hand on a loaded machine).
    let build = |starved: f64| {
        let mut b = RecordingBuilder::new(header(1, 100.0));
        let (mut run_ns, mut wait_ns) = (0u64, 0u64);
        for i in 0..30u64 {
            let mut threads = vec![if (10..20).contains(&i) {
                thread(1, "MainThread", 'S', "futex", false, base())
            } else {
                idle()
            }];
            let mut cruncher = thread(
                2,
                "cruncher",
                'R',
                "running",
                (10..20).contains(&i),
                vec![frame("number_cruncher", "/srv/app/jobs.py", 22)],
            );
            cruncher.sched = Some([run_ns, wait_ns]);
            if (10..20).contains(&i) {
                wait_ns += (10_000_000.0 * starved) as u64;
                run_ns += (10_000_000.0 * (1.0 - starved)) as u64;
            }
            threads.push(cruncher);
            b.sample(1, i * 10_000, 0, &threads);
        }
        diag(&b.finish(end(300_000, 30)))
    };
    let starved = build(0.9);
    assert!(
        starved.findings.iter().all(|f| f.stalls == 0),
        "{:?}",
        starved.findings
    );
    assert!(
        starved.verdict.cpu_starved_pct > 25.0,
        "{}",
        starved.verdict.cpu_starved_pct
    );
    let working = build(0.0);
    let f = working
        .findings
        .iter()
        .find(|f| f.category == "gil-contention")
        .expect("gil finding");
    assert_eq!(f.stalls, 1);
    assert!((f.max_stall_ms - 100.0).abs() < 0.01, "{}", f.max_stall_ms);
}

#[test]
fn names_the_call_on_a_source_line() {
    assert_eq!(
        called_on_line("    time.sleep(ms / 1000.0)").as_deref(),
        Some("time.sleep")
    );
    assert_eq!(
        called_on_line("    rows = conn.execute(q).fetchall()").as_deref(),
        Some("conn.execute")
    );
    assert_eq!(called_on_line("    if check(x):").as_deref(), Some("check"));
    assert_eq!(called_on_line("    x = 'f(' + y"), None);
    assert_eq!(called_on_line("    for p in primes:"), None);
}

/// Sparse ticks (a throttled rate): one busy sample between idle ones covers the whole gap
/// around it, 90 ms here, but says nothing of how long the loop was busy: no stall. Two
/// consecutive busy samples at the same spacing are one (the control).
#[test]
fn a_lone_busy_sample_between_sparse_ticks_is_not_a_stall() {
    let sparse = |pattern: &str| {
        let mut b = RecordingBuilder::new(header(1, 100.0));
        let mut t = 0u64;
        for c in pattern.chars() {
            let th = if c == 's' { sleeping() } else { idle() };
            b.sample(1, t, t / 2, &[th]);
            t += 90_000;
        }
        b.finish(end(t, pattern.len() as u64))
    };
    let d = diag(&sparse("iiisiiisiiisiii"));
    assert!(d.findings.is_empty(), "{:?}", d.findings);
    assert_eq!(d.verdict.worst_stall_ms, 0.0);
    let d = diag(&sparse("iiissiiiiiii"));
    assert_eq!(d.findings.len(), 1, "two samples are a stall");
    assert_eq!(d.findings[0].stalls, 1);
    assert!((d.findings[0].max_stall_ms - 180.0).abs() < 0.01);
}

/// With the loop's wake-ups counted, traffic is told by them, not by CPU or a busy share
/// that an idle server's timers can reach on a machine with slow wake-ups: an idle loop woken
/// 2 times per tick (loopprof's stop and the restart of its call) plus 10 timers a second saw
/// no traffic even at 5% of a CPU; one woken 100 more times a second (requests awaiting
/// `asyncio.sleep`, never busy in a sample) did.
#[test]
fn wakeups_beyond_loopprofs_stops_tell_traffic() {
    let window = |extra_per_s: u64| {
        let mut b = RecordingBuilder::new(header(1, 100.0));
        let mut runs = 0u64;
        for i in 0..200u64 {
            let mut th = idle();
            runs += 2 + extra_per_s / 100 + u64::from(i % 10 == 0);
            th.runs = Some(runs);
            // 5% of a CPU: what an idle uvicorn's timers cost on a slow machine and more.
            b.sample(1, i * 10_000, i * 500, &[th]);
        }
        diag(&b.finish(end(2_000_000, 200)))
    };
    let idle_server = window(0);
    assert!(idle_server.verdict.no_traffic, "{:?}", idle_server.verdict);
    assert!(idle_server.verdict.process_cpu_pct >= 4.9);
    let serving = window(100);
    assert!(!serving.verdict.no_traffic, "{:?}", serving.verdict);
}

/// Only the samples that stopped the loop thread cost it schedule-ins: a window whose loop
/// was stopped on one tick in ten (the others kept from its last read) must not have the
/// stops of the other nine taken off its wake-ups. 40 wake-ups a second of requests: traffic.
#[test]
fn wakeups_subtract_only_the_stops_that_happened() {
    let mut b = RecordingBuilder::new(header(1, 100.0));
    let mut runs = 0u64;
    for i in 0..200u64 {
        let mut th = idle();
        let stopped = i % 10 == 0;
        th.stopped = stopped;
        runs += u64::from(i % 10 == 1) * 2 + u64::from(i % 5 == 0) * 2;
        th.runs = Some(runs);
        b.sample(1, i * 10_000, i * 50, &[th]);
    }
    let d = diag(&b.finish(end(2_000_000, 200)));
    assert!(!d.verdict.no_traffic, "{:?}", d.verdict);
}

/// A socket created since the socket tables were last read is written as
/// [`UNIDENTIFIED_SOCKET`]: a pool's wait target is the identified one even when most of its
/// samples were not identified yet.
#[test]
fn an_identified_wait_target_wins_over_sockets_not_identified_yet() {
    let mut b = RecordingBuilder::new(header(1, 100.0));
    for (i, w) in ["socket", "socket", "socket", "tcp socket to 10.0.0.5:443"]
        .iter()
        .enumerate()
    {
        let mut th = idle();
        th.wait = Some((*w).to_owned());
        b.sample(1, i as u64 * 10_000, 0, &[th]);
    }
    let rec = b.finish(end(40_000, 4));
    let weights = rec
        .samples
        .iter()
        .map(|s| (s.threads[0].wait.unwrap(), 1.0));
    assert_eq!(
        super::attribute::heaviest_wait(&rec, weights).as_deref(),
        Some("tcp socket to 10.0.0.5:443")
    );
    let only_unknown = rec.samples[..3]
        .iter()
        .map(|s| (s.threads[0].wait.unwrap(), 1.0));
    assert_eq!(
        super::attribute::heaviest_wait(&rec, only_unknown).as_deref(),
        Some(crate::recording::UNIDENTIFIED_SOCKET)
    );
}
