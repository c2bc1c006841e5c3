//! Golden and escaping tests of the rendered outputs (report.html, report.md, SVG flame
//! graph, summary.json) on small hand-made recordings, rendered deterministically.
//!
//! `BLESS=1 cargo nextest run --test report_golden` rewrites the files in `tests/golden/`
//! after an intended change; review the diff before committing it.

use loopprof::analysis::catalog::Catalog;
use loopprof::analysis::diagnose::{diagnose, Diagnosis, Options};
use loopprof::recording::testing::*;
use loopprof::recording::{RawFrame, Recording};
use loopprof::render::{flamegraph, html, json, markdown};
use std::path::PathBuf;

const ST: &str = "/usr/lib/python3.11";
const SP: &str = "/srv/venv/lib/python3.11/site-packages";

fn base() -> Vec<RawFrame> {
    vec![
        frame("Runner.run", &format!("{ST}/asyncio/runners.py"), 118),
        frame("asyncio_run", &format!("{SP}/uvicorn/_compat.py"), 30),
        frame("Server.run", &format!("{SP}/uvicorn/server.py"), 86),
        frame("<module>", "/srv/venv/bin/uvicorn", 8),
    ]
}

fn request(top: Vec<RawFrame>, endpoint: &str, file: &str) -> Vec<RawFrame> {
    let mut v = top;
    v.push(frame(endpoint, file, 40));
    v.push(frame(
        "run_endpoint_function",
        &format!("{SP}/fastapi/routing.py"),
        381,
    ));
    v.push(frame(
        "RequestResponseCycle.run_asgi",
        &format!("{SP}/uvicorn/protocols/http/httptools_impl.py"),
        422,
    ));
    v.extend(base());
    v
}

/// A uvloop server whose `quote` endpoint calls `requests.get` twice for ~200 ms, with a
/// cheap endpoint in between: deterministic times, CPU and stacks.
fn blocked_recording(endpoint: &str, thread_name: &str, file: &str) -> Recording {
    let blocking = request(
        vec![
            frame("SocketIO.readinto", &format!("{ST}/socket.py"), 706),
            frame(
                "HTTPConnection.getresponse",
                &format!("{ST}/http/client.py"),
                1386,
            ),
            frame("request", &format!("{SP}/requests/api.py"), 59),
            frame("get", &format!("{SP}/requests/api.py"), 73),
            frame("fetch_quote", file, 12),
        ],
        endpoint,
        file,
    );
    let mut b = RecordingBuilder::new(header(4242, 100.0));
    for line in 9..=15 {
        b.source(
            file,
            line,
            &format!("    line_{line}()  # <img src=x onerror=alert(1)>"),
        );
    }
    b.source(
        file,
        12,
        "    r = requests.get(PARTNER_URL, timeout=10)  # </pre><script>alert(2)</script>",
    );
    for i in 0..100u64 {
        let blocked = (10..30).contains(&i) || (50..70).contains(&i);
        let th = if blocked {
            thread(4242, thread_name, 'S', "poll", false, blocking.clone())
        } else {
            thread(4242, thread_name, 'S', "epoll_pwait", false, base())
        };
        b.sample(4242, i * 10_000, i * 300, &[th]);
    }
    b.finish(end(1_000_000, 100))
}

fn diag(rec: &Recording) -> Diagnosis {
    diagnose(rec, &Catalog::builtin(), &Options::default())
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}: run with BLESS=1 to create it", path.display()));
    if expected != actual {
        let (i, (e, a)) = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .find(|(_, (e, a))| e != a)
            .unwrap_or((
                expected.lines().count().min(actual.lines().count()),
                ("<end>", "<end>"),
            ));
        panic!(
            "{name} differs from tests/golden/{name} at line {}:\n  expected: {e}\n  actual:   {a}\n(BLESS=1 updates the golden file after an intended change)",
            i + 1
        );
    }
}

#[test]
fn golden_outputs() {
    let rec = blocked_recording("get_quote", "MainThread", "/srv/app/quotes.py");
    let d = diag(&rec);
    assert_eq!(d.findings.len(), 1);
    assert_eq!(d.findings[0].category, "sync-http-client");
    let opts = html::HtmlOptions {
        command: Some("loopprof record --pid 4242 --duration 1".into()),
    };
    golden("report.html", &html::render(&rec, &d, &opts).unwrap());
    golden(
        "report.md",
        &markdown::render(&rec, &d, opts.command.as_deref()),
    );
    golden("summary.json", &json::to_string(&rec, &d));
    golden(
        "flame-loop-blocked.svg",
        &flamegraph::svg(&rec, &d, flamegraph::View::LoopBlocked, None).unwrap(),
    );
}

#[test]
fn untrusted_names_render_as_text() {
    let evil_fn = "<script>alert(1)</script>";
    let evil_thread = "Main\"Thread' onload=\"alert(3)";
    let rec = blocked_recording(evil_fn, evil_thread, "/srv/app/<b>x</b>.py");
    let d = diag(&rec);
    let page = html::render(&rec, &d, &html::HtmlOptions::default()).unwrap();
    for raw in [
        "<script>alert(1)",
        "<script>alert(2)",
        "<img src=x",
        "<b>x</b>",
        "onload=\"alert(3)",
    ] {
        assert!(!page.contains(raw), "raw {raw:?} in report.html");
    }
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "function name shown as text"
    );
    assert!(
        page.contains("Main&quot;Thread&#x27; onload&#x3D;&quot;alert(3)"),
        "thread name shown as text"
    );
    assert!(
        page.contains("&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt;"),
        "source line shown as text"
    );
    // The page itself runs no script, fetches nothing, and says so in its CSP.
    assert!(!page.contains("<script"));
    assert!(page.contains("default-src 'none'"));
    for attr in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!page.contains(attr), "{attr} in report.html");
    }
    // Flame graphs escape names inside the SVG too.
    let svg = flamegraph::svg(&rec, &d, flamegraph::View::Wall, None).unwrap();
    assert!(!svg.contains(evil_fn) && svg.contains("&lt;script&gt;"));
    // Markdown keeps target strings inside code spans: outside them, no `<` at all (the
    // report's own `<details>` wrapper aside).
    let md = markdown::render(&rec, &d, None);
    for line in md.lines().filter(|l| !l.contains("details>")) {
        let mut in_code = false;
        for c in line.chars() {
            match c {
                '`' => in_code = !in_code,
                '<' => assert!(in_code, "`<` outside a code span in report.md: {line}"),
                _ => {}
            }
        }
    }
    assert!(md.contains("`<script>alert(1)</script>`"));
}

#[test]
fn a_one_minute_recording_gives_a_report_under_two_megabytes() {
    // 60 s at 100 Hz, three threads, 150 distinct deep stacks, some stalls.
    let mut b = RecordingBuilder::new(header(7, 100.0));
    let stacks: Vec<Vec<RawFrame>> = (0..150)
        .map(|k| {
            let mut top: Vec<RawFrame> = (0..12)
                .map(|d| {
                    frame(
                        &format!("handler_{k}_{d}"),
                        &format!("/srv/app/mod_{}.py", k % 17),
                        10 + d,
                    )
                })
                .collect();
            top.push(frame(&format!("endpoint_{}", k % 9), "/srv/app/api.py", 40));
            request(top, "route", "/srv/app/api.py")
        })
        .collect();
    for i in 0..6000u64 {
        let k = (i as usize * 7919) % stacks.len();
        let main = if i % 50 < 8 {
            thread(
                7,
                "MainThread",
                'S',
                "clock_nanosleep",
                false,
                stacks[k].clone(),
            )
        } else {
            thread(7, "MainThread", 'S', "epoll_pwait", false, base())
        };
        let worker = thread(
            8,
            "ThreadPoolExecutor-0_0",
            'S',
            "futex",
            false,
            stacks[(k + 1) % 150].clone(),
        );
        let pool = thread(
            9,
            "AnyIO worker thread",
            'R',
            "running",
            true,
            stacks[(k + 2) % 150].clone(),
        );
        b.sample(7, i * 10_000, i * 2_000, &[main, worker, pool]);
    }
    let rec = b.finish(end(60_000_000, 6000));
    let d = diag(&rec);
    let page = html::render(&rec, &d, &html::HtmlOptions::default()).unwrap();
    assert!(
        page.len() < 2_000_000,
        "report.html is {} bytes",
        page.len()
    );
}
