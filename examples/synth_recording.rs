//! Writes a realistic synthetic recording for the analysis benchmarks (`benches/compare.py`):
//! one uvicorn process at 100 Hz with a MainThread event loop (idle in the selector most of
//! the time, short callbacks, and a 200-400 ms stall in `requests.get` every ~10 s), three
//! worker threads (AnyIO/ThreadPoolExecutor) with deep stacks, 60 distinct request stacks
//! 25-40 frames deep, and per-thread schedstat. Also writes the equivalent folded stacks
//! (wall view) for the inferno reference renderer.
//!
//!     cargo run --release --example synth_recording -- MINUTES OUT.jsonl.gz OUT.folded

use loopprof::recording::format::{End, Record};
use loopprof::recording::testing::{frame, header};
use loopprof::recording::{RawFrame, RawThread, RecordingWriter, TickMeta};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

const ST: &str = "/usr/lib/python3.11";
const SP: &str = "/srv/venv/lib/python3.11/site-packages";

fn base() -> Vec<RawFrame> {
    vec![
        frame("Runner.run", &format!("{ST}/asyncio/runners.py"), 118),
        frame("run", &format!("{ST}/asyncio/runners.py"), 190),
        frame("Server.serve", &format!("{SP}/uvicorn/server.py"), 68),
        frame("Server.run", &format!("{SP}/uvicorn/server.py"), 61),
        frame("run", &format!("{SP}/uvicorn/main.py"), 587),
        frame("main", &format!("{SP}/uvicorn/main.py"), 416),
        frame("Command.invoke", &format!("{SP}/click/core.py"), 783),
        frame("<module>", "/srv/venv/bin/uvicorn", 8),
    ]
}

fn idle() -> Vec<RawFrame> {
    let mut v = vec![
        frame("EpollSelector.select", &format!("{ST}/selectors.py"), 468),
        frame(
            "BaseEventLoop._run_once",
            &format!("{ST}/asyncio/base_events.py"),
            1898,
        ),
        frame(
            "BaseEventLoop.run_forever",
            &format!("{ST}/asyncio/base_events.py"),
            607,
        ),
        frame(
            "BaseEventLoop.run_until_complete",
            &format!("{ST}/asyncio/base_events.py"),
            640,
        ),
    ];
    v.extend(base());
    v
}

/// A request handled on the loop: `depth` app/library frames under the ASGI stack.
fn request(k: usize, depth: usize) -> Vec<RawFrame> {
    let mut v: Vec<RawFrame> = (0..depth)
        .map(|d| {
            frame(
                &format!("handler_{}_{d}", k % 23),
                &format!("/srv/app/services/mod_{}.py", (k + d) % 31),
                10 + d as i32,
            )
        })
        .collect();
    v.push(frame(
        &format!("endpoint_{}", k % 12),
        "/srv/app/api.py",
        40 + k as i32 % 12,
    ));
    for (f, file, line) in [
        ("run_endpoint_function", "fastapi/routing.py", 212),
        (
            "get_request_handler.<locals>.app",
            "fastapi/routing.py",
            301,
        ),
        ("request_response.<locals>.app", "starlette/routing.py", 73),
        ("Route.handle", "starlette/routing.py", 288),
        ("Router.app", "starlette/routing.py", 735),
        (
            "ExceptionMiddleware.__call__",
            "starlette/middleware/exceptions.py",
            62,
        ),
        (
            "ServerErrorMiddleware.__call__",
            "starlette/middleware/errors.py",
            165,
        ),
        ("Starlette.__call__", "starlette/applications.py", 123),
        ("FastAPI.__call__", "fastapi/applications.py", 1054),
        (
            "ProxyHeadersMiddleware.__call__",
            "uvicorn/middleware/proxy_headers.py",
            60,
        ),
        (
            "RequestResponseCycle.run_asgi",
            "uvicorn/protocols/http/httptools_impl.py",
            419,
        ),
        ("Handle._run", &format!("{ST}/asyncio/events.py")[..], 84),
    ] {
        let file = if file.starts_with('/') {
            file.to_owned()
        } else {
            format!("{SP}/{file}")
        };
        v.push(frame(f, &file, line));
    }
    v.push(frame(
        "BaseEventLoop._run_once",
        &format!("{ST}/asyncio/base_events.py"),
        1936,
    ));
    v.push(frame(
        "BaseEventLoop.run_forever",
        &format!("{ST}/asyncio/base_events.py"),
        607,
    ));
    v.extend(base());
    v
}

fn blocked() -> Vec<RawFrame> {
    let mut v = vec![
        frame("SocketIO.readinto", &format!("{ST}/socket.py"), 706),
        frame("HTTPResponse.begin", &format!("{ST}/http/client.py"), 318),
        frame(
            "HTTPConnection.getresponse",
            &format!("{ST}/http/client.py"),
            1386,
        ),
        frame(
            "HTTPConnectionPool._make_request",
            &format!("{SP}/urllib3/connectionpool.py"),
            537,
        ),
        frame(
            "HTTPConnectionPool.urlopen",
            &format!("{SP}/urllib3/connectionpool.py"),
            793,
        ),
        frame(
            "HTTPAdapter.send",
            &format!("{SP}/requests/adapters.py"),
            486,
        ),
        frame("Session.send", &format!("{SP}/requests/sessions.py"), 703),
        frame(
            "Session.request",
            &format!("{SP}/requests/sessions.py"),
            589,
        ),
        frame("request", &format!("{SP}/requests/api.py"), 59),
        frame("get", &format!("{SP}/requests/api.py"), 73),
        frame("fetch_partner_quote", "/srv/app/partners.py", 27),
    ];
    v.extend(request(3, 6));
    v
}

fn worker(k: usize) -> Vec<RawFrame> {
    let mut v = request(k, 10);
    v.truncate(12);
    v.extend([
        frame(
            "run_sync_in_worker_thread",
            &format!("{SP}/anyio/_backends/_asyncio.py"),
            2144,
        ),
        frame(
            "WorkerThread.run",
            &format!("{SP}/anyio/_backends/_asyncio.py"),
            851,
        ),
        frame(
            "Thread._bootstrap_inner",
            &format!("{ST}/threading.py"),
            1045,
        ),
        frame("Thread._bootstrap", &format!("{ST}/threading.py"), 1002),
    ]);
    v
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: synth_recording MINUTES OUT.jsonl.gz OUT.folded");
        std::process::exit(2);
    }
    let minutes: f64 = args[1].parse().expect("MINUTES is a number");
    let n = (minutes * 60.0 * 100.0) as u64;
    let mut w = RecordingWriter::create(Path::new(&args[2]), true).expect("create recording");
    w.write(&Record::Header(header(7, 100.0))).unwrap();
    let requests: Vec<Vec<RawFrame>> = (0..60).map(|k| request(k, 12 + k % 15)).collect();
    let workers: Vec<Vec<RawFrame>> = (0..20).map(worker).collect();
    let (idle, blocked) = (idle(), blocked());
    let mut folded: BTreeMap<String, u64> = BTreeMap::new();
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut run_ns = [0u64; 4];
    for i in 0..n {
        let r = next();
        // A stall of 20-40 samples at the start of every 1000-sample (10 s) block.
        let in_stall = i % 1000 < 20 + (i / 1000) % 21;
        let (main_frames, state, syscall, gil) = if in_stall {
            (&blocked, 'S', "poll", false)
        } else if r % 10 < 3 {
            (
                &requests[(r >> 8) as usize % requests.len()],
                'R',
                "running",
                true,
            )
        } else {
            (&idle, 'S', "epoll_wait", false)
        };
        let mut threads = vec![RawThread {
            tid: 7,
            name: Some("MainThread".into()),
            active: state == 'R',
            gil,
            state,
            syscall: Some(syscall.into()),
            sched: None,
            runs: None,
            wait: None,
            // A busy loop serves a request (format 4 records the route).
            route: (!std::ptr::eq(main_frames, &idle)).then(|| "GET /quotes/{symbol}".into()),
            request: (!std::ptr::eq(main_frames, &idle)).then_some((i / 25, 0)),
            frames: main_frames.clone(),
            stopped: true,
        }];
        for t in 0..3u32 {
            let busy = (next() % 4) == 0;
            threads.push(RawThread {
                tid: 8 + t,
                name: Some(format!("AnyIO worker thread {t}")),
                active: busy,
                gil: busy && !gil,
                state: if busy { 'R' } else { 'S' },
                syscall: Some(if busy { "running" } else { "futex" }.into()),
                sched: None,
                runs: None,
                wait: None,
                route: None,
                request: None,
                frames: workers[((i / 37) as usize + t as usize * 7) % workers.len()].clone(),
                stopped: true,
            });
        }
        for (k, t) in threads.iter_mut().enumerate() {
            run_ns[k] += if t.state == 'R' { 9_000_000 } else { 40_000 };
            t.sched = Some([run_ns[k], 100_000 * i]);
        }
        w.write_sample(
            &TickMeta {
                pid: 7,
                t_us: i * 10_000,
                read_us: 400,
                cpu_us: i * 3_000,
                ..TickMeta::default()
            },
            &threads,
        )
        .unwrap();
        for t in &threads {
            let mut parts = vec![format!("thread {}", t.name.as_deref().unwrap_or("?"))];
            parts.extend(t.frames.iter().rev().map(|f| {
                format!(
                    "{} ({}:{})",
                    f.name,
                    f.file
                        .rsplit('/')
                        .take(2)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("/"),
                    f.line
                )
            }));
            *folded.entry(parts.join(";")).or_default() += 1;
        }
    }
    w.finish(&End {
        duration_us: n * 10_000,
        reason: loopprof::recording::EndReason::Duration,
        samples: n,
        errors: 0,
        late: 0,
        missed: 0,
        processes: 1,
        stopped_us: n * 400,
        ..End::default()
    })
    .unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&args[3]).expect("create folded"));
    for (k, v) in folded {
        writeln!(f, "{k} {v}").unwrap();
    }
}
