//! Golden and escaping tests of the rendered outputs (report.html, report.md, SVG flame
//! graph, summary.json; diff.html, diff.md, diff.json) on small hand-made recordings,
//! rendered deterministically.
//!
//! `BLESS=1 cargo nextest run --test report_golden` rewrites the files in `tests/golden/`
//! after an intended change; review the diff before committing it.

use loopprof::analysis::catalog::Catalog;
use loopprof::analysis::diagnose::{diagnose, Diagnosis, Options};
use loopprof::analysis::diff::{self, Status, Thresholds};
use loopprof::analysis::gates::{self, Scope};
use loopprof::recording::testing::*;
use loopprof::recording::{RawFrame, Recording};
use loopprof::render::{flamegraph, html, json, markdown, text};
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
    v.extend(fastapi_request_frames(endpoint, file, SP));
    v.extend(base());
    v
}

/// A uvloop server whose `quote` endpoint calls `requests.get` twice for ~200 ms, with a
/// cheap endpoint in between: deterministic times, CPU and stacks.
fn blocked_recording(endpoint: &str, thread_name: &str, file: &str) -> Recording {
    shaped_recording(
        endpoint,
        thread_name,
        file,
        100.0,
        100,
        12,
        &[(10, 30), (50, 70)],
    )
}

/// The same server at `rate` Hz for `n` samples, blocked in `requests.get` at `line` of
/// `fetch_quote` during the given sample ranges.
fn shaped_recording(
    endpoint: &str,
    thread_name: &str,
    file: &str,
    rate: f64,
    n: u64,
    line: i32,
    blocked_ranges: &[(u64, u64)],
) -> Recording {
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
            frame("fetch_quote", file, line),
        ],
        endpoint,
        file,
    );
    let mut b = RecordingBuilder::new(header(4242, rate));
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
    let step = (1e6 / rate) as u64;
    for i in 0..n {
        let blocked = blocked_ranges.iter().any(|(a, b)| (*a..*b).contains(&i));
        let th = if blocked {
            let mut th = thread(4242, thread_name, 'S', "poll", false, blocking.clone());
            // The route comes from the target too: a hostile endpoint gets a hostile path.
            th.route = Some(
                if endpoint.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    "GET /quotes/{symbol}".to_owned()
                } else {
                    format!("GET /{endpoint}")
                },
            );
            th
        } else {
            thread(4242, thread_name, 'S', "epoll_pwait", false, base())
        };
        b.sample(4242, i * step, i * 300, &[th]);
    }
    b.finish(end(n * step, n))
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
    let ids: Vec<String> = Catalog::builtin().entries().map(|e| e.id.clone()).collect();
    let gates = gates::parse_all(
        &[
            "loop_blocked_pct > 5".to_owned(),
            "category == executor-shutdown-wait".to_owned(),
        ],
        Scope::Report,
        &ids,
    )
    .unwrap();
    let results = gates::evaluate(&gates, &gates::facts_of(&d, &[]));
    assert!(results[0].failed && !results[1].failed, "{results:?}");
    let opts = html::HtmlOptions {
        command: Some("loopprof record --pid 4242 --duration 1".into()),
        gates: results.clone(),
        before: Some("loopprof-20261130-120000".into()),
    };
    golden("report.html", &html::render(&rec, &d, &opts).unwrap());
    golden(
        "report.md",
        &markdown::render(
            &rec,
            &d,
            opts.command.as_deref(),
            &results,
            opts.before.as_deref(),
        ),
    );
    golden("summary.json", &json::to_string(&rec, &d, &results));
    golden(
        "flame-loop-blocked.svg",
        &flamegraph::svg(&rec, &d, flamegraph::View::LoopBlocked, None)
            .unwrap()
            .unwrap(),
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
    let svg = flamegraph::svg(&rec, &d, flamegraph::View::Wall, None)
        .unwrap()
        .unwrap();
    assert!(!svg.contains(evil_fn) && svg.contains("&lt;script&gt;"));
    // Markdown keeps target strings inside code spans: outside them, no `<` at all (the
    // report's own `<details>` wrapper aside).
    let md = markdown::render(&rec, &d, None, &[], None);
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
    assert!(
        page.contains("GET /&lt;script&gt;alert(1)&lt;/script&gt;"),
        "route shown as text"
    );
    let txt = text::diagnosis(&d);
    assert!(txt.contains("route GET /<script>alert(1)</script>"));
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

#[test]
fn diff_of_a_fix_golden() {
    // BEFORE: 1 s at 100 Hz, two 200 ms stalls in requests.get. AFTER: the same code moved
    // by two lines, 4 s at 50 Hz, healthy. A second AFTER keeps one stall per second.
    let before = shaped_recording(
        "get_quote",
        "MainThread",
        "/srv/app/quotes.py",
        100.0,
        100,
        12,
        &[(10, 30), (50, 70)],
    );
    let fixed = shaped_recording(
        "get_quote",
        "MainThread",
        "/srv/app/quotes.py",
        50.0,
        200,
        14,
        &[],
    );
    let (bd, ad) = (diag(&before), diag(&fixed));
    let d = diff::diff(
        ("before", &before, &bd),
        ("after", &fixed, &ad),
        &Thresholds::default(),
    );
    assert!(!d.regression, "{:?}", d.regression_reasons);
    assert_eq!(d.findings.len(), 1);
    assert_eq!(d.findings[0].status, Status::Fixed);
    assert_eq!(
        d.after.verdict,
        loopprof::analysis::diagnose::VerdictKind::Healthy
    );
    assert!((d.before.duration_s - 1.0).abs() < 1e-9 && (d.after.duration_s - 4.0).abs() < 1e-9);

    let ids: Vec<String> = Catalog::builtin().entries().map(|e| e.id.clone()).collect();
    let g = gates::parse_all(
        &["regression".to_owned(), "fixed_findings < 1".to_owned()],
        Scope::Diff,
        &ids,
    )
    .unwrap();
    let results = gates::evaluate(&g, &diff::facts(&d, &ad, &[]));
    assert!(results.iter().all(|r| !r.failed), "{results:?}");
    golden(
        "diff.json",
        &json::diff_to_string(
            &d,
            json::DiffAnalysis {
                threshold_ms: 50.0,
                min_share_pct: 2.0,
            },
            &results,
        ),
    );
    golden("diff.md", &markdown::diff(&d, &results));
    let page = html::render_diff(
        &html::DiffInput {
            before: (&before, &bd),
            after: (&fixed, &ad),
        },
        &d,
        &results,
    )
    .unwrap();
    golden("diff.html", &page);
    assert!(page.contains("diff-flame-loop-blocked-before"));
    assert!(
        !page.contains("diff-flame-loop-blocked-after"),
        "nothing blocks the loop in AFTER: no AFTER-shaped loop-blocked graph"
    );
    let svg = flamegraph::diff_svg(
        (&before, &bd),
        (&fixed, &ad),
        flamegraph::View::LoopBlocked,
        flamegraph::DiffShape::Before,
    )
    .unwrap()
    .unwrap();
    golden("diff-loop-blocked.svg", &svg);
}

#[test]
fn diff_is_fair_across_rate_and_length_and_matches_moved_lines() {
    // The same blocking (20% of the time, 200 ms stalls) recorded at 100 Hz for 2 s and at
    // 50 Hz for 6 s, the line moved: unchanged, not a regression.
    let before = shaped_recording(
        "get_quote",
        "MainThread",
        "/srv/app/quotes.py",
        100.0,
        200,
        12,
        &[(10, 30), (110, 130)],
    );
    let ranges: Vec<(u64, u64)> = (0..6).map(|k| (k * 50 + 5, k * 50 + 15)).collect();
    let after = shaped_recording(
        "get_quote",
        "MainThread",
        "/srv/app/quotes.py",
        50.0,
        300,
        17,
        &ranges,
    );
    let (bd, ad) = (diag(&before), diag(&after));
    let d = diff::diff(
        ("b", &before, &bd),
        ("a", &after, &ad),
        &Thresholds::default(),
    );
    assert_eq!(d.findings.len(), 1, "{:?}", d.findings);
    let f = &d.findings[0];
    assert_eq!(f.status, Status::Unchanged, "{}", f.why);
    assert_eq!(f.before_call_site.as_ref().map(|c| c.line), Some(12));
    assert_eq!(f.call_site.as_ref().map(|c| c.line), Some(17));
    assert!(!d.regression);
    let (b, a) = (f.before.unwrap(), f.after.unwrap());
    assert!(
        (b.stalls_per_min - a.stalls_per_min).abs() < 1.0,
        "{b:?} {a:?}"
    );
    // The differential graph normalises per second: the blocked frames have the same width.
    let rows =
        flamegraph::diff_folded((&before, &bd), (&after, &ad), flamegraph::View::LoopBlocked);
    let sum = |f: fn(&(String, u64, u64)) -> u64| rows.iter().map(f).sum::<u64>();
    let (sb, sa) = (sum(|r| r.1), sum(|r| r.2));
    assert!(
        sb > 0 && (sb as f64 - sa as f64).abs() / (sb as f64) < 0.05,
        "{sb} vs {sa}"
    );

    // Three times the blocking is a regression that the gate catches.
    let worse_ranges: Vec<(u64, u64)> = (0..6).map(|k| (k * 50 + 5, k * 50 + 35)).collect();
    let worse = shaped_recording(
        "get_quote",
        "MainThread",
        "/srv/app/quotes.py",
        50.0,
        300,
        17,
        &worse_ranges,
    );
    let wd = diag(&worse);
    let d2 = diff::diff(
        ("b", &before, &bd),
        ("w", &worse, &wd),
        &Thresholds::default(),
    );
    assert_eq!(
        d2.findings[0].status,
        Status::Worse,
        "{}",
        d2.findings[0].why
    );
    assert!(d2.regression);
    let ids: Vec<String> = Catalog::builtin().entries().map(|e| e.id.clone()).collect();
    let g = gates::parse_all(
        &[
            "regression".to_owned(),
            "new_category == sync-http-client".to_owned(),
        ],
        Scope::Diff,
        &ids,
    )
    .unwrap();
    let r = gates::evaluate(&g, &diff::facts(&d2, &wd, &[]));
    assert!(r.iter().all(|r| r.failed), "{r:?}");
}

#[test]
fn diff_html_escapes_target_strings() {
    let evil_fn = "<script>alert(1)</script>";
    let before = shaped_recording(
        evil_fn,
        "T\"<b>",
        "/srv/app/<i>q</i>.py",
        100.0,
        100,
        12,
        &[(10, 30)],
    );
    let after = shaped_recording(
        evil_fn,
        "T\"<b>",
        "/srv/app/<i>q</i>.py",
        100.0,
        100,
        12,
        &[],
    );
    let (bd, ad) = (diag(&before), diag(&after));
    let d = diff::diff(
        ("<b>before</b>", &before, &bd),
        ("after", &after, &ad),
        &Thresholds::default(),
    );
    let page = html::render_diff(
        &html::DiffInput {
            before: (&before, &bd),
            after: (&after, &ad),
        },
        &d,
        &[],
    )
    .unwrap();
    for raw in ["<script>alert", "<i>q</i>", "<b>before</b>", "<b>\""] {
        assert!(!page.contains(raw), "raw {raw:?} in diff.html");
    }
    assert!(!page.contains("<script"));
    assert!(page.contains("default-src 'none'"));
    let md = markdown::diff(&d, &[]);
    for line in md.lines() {
        let mut in_code = false;
        for c in line.chars() {
            match c {
                '`' => in_code = !in_code,
                '<' => assert!(in_code, "`<` outside a code span in diff.md: {line}"),
                _ => {}
            }
        }
    }
}
