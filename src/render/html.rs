//! `report.html`: one self-contained page (no network request, restrictive CSP, printable)
//! rendered with handlebars templates from `report-templates/` embedded in the binary.
//!
//! The templates get a view model built here. Every string from the target (function, file
//! and thread names, source lines, command lines) goes through handlebars' HTML escaping
//! (`{{...}}`); the only unescaped insert (`{{{timeline}}}`) is the timeline SVG loopprof draws
//! from numbers. Flame graphs are embedded as `data:` URIs in iframes (inferno escapes names
//! inside the SVG), so their own zoom/search scripts keep working inside the page.

use crate::analysis::diagnose::{Diagnosis, Finding, VerdictKind};
use crate::analysis::diff::{Diff, Figures};
use crate::analysis::gates::GateResult;
use crate::recording::Recording;
use crate::render::flamegraph::{self, View};
use crate::render::palette;
use crate::render::timeline;
use crate::render::wording;
use crate::render::RenderError;
use base64::Engine;
use handlebars::Handlebars;
use serde::Serialize;

const LAYOUT: &str = include_str!("../../report-templates/layout.hbs");
const PARTIALS: &[(&str, &str)] = &[
    (
        "requests",
        include_str!("../../report-templates/partials/requests.hbs"),
    ),
    (
        "head",
        include_str!("../../report-templates/partials/head.hbs"),
    ),
    (
        "verdict",
        include_str!("../../report-templates/partials/verdict.hbs"),
    ),
    (
        "timeline",
        include_str!("../../report-templates/partials/timeline.hbs"),
    ),
    (
        "finding",
        include_str!("../../report-templates/partials/finding.hbs"),
    ),
    (
        "flamegraphs",
        include_str!("../../report-templates/partials/flamegraphs.hbs"),
    ),
    (
        "threads",
        include_str!("../../report-templates/partials/threads.hbs"),
    ),
    (
        "details",
        include_str!("../../report-templates/partials/details.hbs"),
    ),
    (
        "verify",
        include_str!("../../report-templates/partials/verify.hbs"),
    ),
    (
        "gates",
        include_str!("../../report-templates/partials/gates.hbs"),
    ),
];

const DIFF_LAYOUT: &str = include_str!("../../report-templates/diff.hbs");

/// The Content-Security-Policy of the page: nothing may be fetched; inline styles, and the
/// inline scripts of the embedded flame graphs (in `data:` frames), are allowed.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; frame-src data:; base-uri 'none'; form-action 'none'";

/// Turns `` `spans` `` of `text` into `<code>` elements, HTML-escaping every piece of text,
/// so the result is safe whatever the text holds (target names appear in the verdict).
pub fn escape_with_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut open = false;
    for (i, part) in text.split('`').enumerate() {
        if i > 0 {
            out.push_str(if open { "</code>" } else { "<code>" });
            open = !open;
        }
        out.push_str(&handlebars::html_escape(part));
    }
    if open {
        out.push_str("</code>");
    }
    out
}

handlebars::handlebars_helper!(code_helper: |text: str| escape_with_code(text));

/// Up to this many threads the threads table starts open; a longer one (a 40-worker pool)
/// starts collapsed under its summary line.
const THREADS_OPEN_MAX: usize = 12;

/// Options of the HTML report.
#[derive(Debug, Clone, Default)]
pub struct HtmlOptions {
    /// The command line that produced the recording, shown in "verify the fix".
    pub command: Option<String>,
    /// `--fail-on` outcomes, shown under the verdict.
    pub gates: Vec<GateResult>,
    /// Where the recording is (its output directory, or the file), for the "verify the
    /// fix" commands; `BEFORE` when not known.
    pub before: Option<String>,
}

#[derive(Serialize)]
struct Figure {
    label: &'static str,
    value: String,
    /// What it means ([`super::glossary::FIGURES`]), as the tile's tooltip.
    help: &'static str,
}

fn figure(label: &'static str, value: String) -> Figure {
    Figure {
        label,
        value,
        help: super::glossary::figure(label),
    }
}

#[derive(Serialize)]
struct SourceLineVm {
    no: i32,
    text: String,
    hit: bool,
}

#[derive(Serialize)]
struct MixVm {
    label: String,
    pct: String,
    width: String,
}

#[derive(Serialize)]
struct CardVm<'a> {
    rank: usize,
    f: &'a Finding,
    site: String,
    stats: String,
    state: String,
    mix: Vec<MixVm>,
    source: Vec<SourceLineVm>,
    culprit: Option<String>,
    stack_len: usize,
}

#[derive(Serialize)]
struct FlameVm {
    id: String,
    title: String,
    uri: String,
    height: String,
}

#[derive(Serialize)]
struct ThreadVm {
    pid: u32,
    tid: u32,
    name: String,
    event_loop: bool,
    on_cpu: String,
    native: String,
    waiting: String,
    gil: String,
    idle: String,
}

#[derive(Serialize)]
struct Kv {
    k: &'static str,
    v: String,
}

/// The timeline legend's colours besides the loop states.
#[derive(Serialize)]
struct Colors {
    stall: &'static str,
    ink: &'static str,
    ok: &'static str,
}

const LEGEND_COLORS: Colors = Colors {
    stall: palette::STALL,
    ink: palette::INK,
    ok: palette::OK,
};

#[derive(Serialize)]
struct Page<'a> {
    csp: &'static str,
    title: String,
    verdict_kind: &'a str,
    verdict_class: &'static str,
    summary: &'a str,
    /// The recording's quality in one line ([`crate::analysis::quality::Quality::line`]),
    /// and whether it is worth a warning (not "good").
    quality: String,
    quality_warn: bool,
    figures: Vec<Figure>,
    top: Option<CardVm<'a>>,
    timeline: Option<String>,
    has_probes: bool,
    legend: Vec<(&'static str, &'static str)>,
    /// The legend's other colours ([`palette`]).
    colors: Colors,
    /// The activity words and what they mean ([`super::glossary::ACTIVITIES`]).
    activities: &'static [(&'static str, &'static str)],
    cards: Vec<CardVm<'a>>,
    requests: RequestsVm<'a>,
    flames: Vec<FlameVm>,
    threads: Vec<ThreadVm>,
    /// The threads table starts open when it is short.
    threads_open: bool,
    threads_count: usize,
    details: Vec<Kv>,
    processes: Vec<Kv>,
    verify: super::verify::VerifySteps,
    health_url: String,
    warnings: &'a [String],
    gates: &'a [GateResult],
}

fn pct(x: f64) -> String {
    if x == 0.0 {
        "–".into()
    } else {
        format!("{x:.1}%")
    }
}

fn card<'a>(rec: &Recording, rank: usize, f: &'a Finding) -> CardVm<'a> {
    let site = f
        .call_site
        .as_ref()
        .map(wording::site)
        .unwrap_or_else(|| "(no application frame)".into());
    let stats = if let Some(i) = wording::pool_impact(f) {
        i
    } else if f.stalls > 0 {
        format!(
            "{} stall{} · {:.0} ms blocked · max {:.0} ms · p50 {:.0} ms · p95 {:.0} ms · {:.1}% of the loop's time",
            f.stalls,
            wording::plural(f.stalls),
            f.blocked_ms,
            f.max_stall_ms,
            f.p50_stall_ms,
            f.p95_stall_ms,
            f.share_pct
        )
    } else {
        format!(
            "{} short blocks adding up to {:.0} ms · {:.1}% of the loop's time",
            f.short_blocks, f.short_blocked_ms, f.share_pct
        )
    };
    let state = wording::state(f);
    let mix = f
        .state_mix
        .iter()
        .map(|(k, v)| MixVm {
            label: k.clone(),
            pct: format!("{v:.0}%"),
            width: format!("{:.1}", v.clamp(0.0, 100.0)),
        })
        .collect();
    let source = f
        .call_site
        .as_ref()
        .map(|c| source_around(rec, c))
        .unwrap_or_default();
    let culprit = f.culprit_thread.as_ref().map(|c| {
        format!(
            "thread \"{}\"{} held the GIL in {:.0}% of the loop's GIL waits",
            c.name,
            wording::in_function(c.call_site.as_ref()),
            c.share_pct
        )
    });
    CardVm {
        rank,
        f,
        site,
        stats,
        state,
        mix,
        source,
        culprit,
        stack_len: f.stack.len(),
    }
}

/// The source lines around a call site (four either side), from the recording.
fn source_around(rec: &Recording, c: &crate::analysis::diagnose::CallSite) -> Vec<SourceLineVm> {
    let mut source = Vec::new();
    if let Some(file_id) = rec.strings.iter().position(|s| *s == c.file) {
        for no in c.line - 4..=c.line + 4 {
            if let Some(text) = rec.sources.get(&(file_id as u32, no)) {
                source.push(SourceLineVm {
                    no,
                    text: text.clone(),
                    hit: no == c.line,
                });
            }
        }
    }
    source
}

/// The "Where requests wait" section.
#[derive(Serialize)]
struct RequestsVm<'a> {
    /// Tasks were read in this recording.
    read: bool,
    note: String,
    cards: Vec<WaitCardVm<'a>>,
    places: Vec<PlaceVm>,
    flame: Option<FlameVm>,
}

#[derive(Serialize)]
struct WaitCardVm<'a> {
    rank: usize,
    f: &'a crate::analysis::tasks::WaitFinding,
    site: String,
    source: Vec<SourceLineVm>,
    impact: String,
    stack_len: usize,
}

#[derive(Serialize)]
struct PlaceVm {
    route: String,
    resource: String,
    kind: &'static str,
    mean: String,
    max: usize,
    longest: String,
    at: String,
}

fn requests_vm<'a>(rec: &Recording, d: &'a Diagnosis) -> Result<RequestsVm<'a>, RenderError> {
    let r = &d.requests;
    if r.snapshots == 0 {
        return Ok(RequestsVm {
            read: false,
            note: "Asyncio tasks were not read in this recording (recorded with --no-tasks, by a loopprof before format 6, or from a Python whose tasks loopprof does not read).".into(),
            cards: Vec::new(),
            places: Vec::new(),
            flame: None,
        });
    }
    let cards = r
        .findings
        .iter()
        .enumerate()
        .map(|(i, f)| WaitCardVm {
            rank: i + 1,
            f,
            site: f
                .place
                .site
                .as_ref()
                .map(wording::site)
                .unwrap_or_else(|| "(no application frame in the await chain)".into()),
            source: f
                .place
                .site
                .as_ref()
                .map(|c| source_around(rec, c))
                .unwrap_or_default(),
            impact: wording::wait_impact(f),
            stack_len: f.place.stack.len(),
        })
        .collect();
    let places = r
        .places
        .iter()
        .map(|p| PlaceVm {
            route: p.route.clone().unwrap_or_else(|| "(not a request)".into()),
            resource: p.resource.clone(),
            kind: p.kind.as_str(),
            mean: format!("{:.1}", p.mean_tasks),
            max: p.max_tasks,
            longest: format!("{:.1} s", p.max_wait_ms / 1000.0),
            at: p
                .site
                .as_ref()
                .map(wording::site)
                .unwrap_or_else(|| "–".into()),
        })
        .collect();
    let flame = flamegraph::await_svg(rec)?.map(|svg| FlameVm {
        id: "flame-awaits".into(),
        title: "Where requests wait (await chains)".into(),
        height: format!(
            "{:.0}",
            (flamegraph::svg_height(&svg).unwrap_or(560.0) + 8.0).min(1400.0)
        ),
        uri: data_uri(&svg),
    });
    Ok(RequestsVm {
        read: true,
        note: format!(
            "{} task snapshots, one every {:.0} ms; on average {:.1} requests in flight (at most {}){}.",
            r.snapshots,
            r.interval_ms,
            r.mean_in_flight,
            r.max_in_flight,
            if r.unreadable > 0 {
                format!("; {} task-registry entries could not be read", r.unreadable)
            } else {
                String::new()
            }
        ),
        cards,
        places,
        flame,
    })
}

/// The flame graphs embedded in the report ([`flamegraph::targets`]).
fn flames(rec: &Recording, d: &Diagnosis) -> Result<Vec<FlameVm>, RenderError> {
    let mut out = Vec::new();
    for view in View::ALL {
        for (pid, id) in flamegraph::targets(d, view) {
            if let Some(svg) = flamegraph::svg(rec, d, view, pid)? {
                let height = flamegraph::svg_height(&svg).unwrap_or(560.0) + 8.0;
                out.push(FlameVm {
                    height: format!("{:.0}", height.min(1400.0)),
                    title: match pid {
                        Some(p) => format!("{} — process {p}", view.short_title()),
                        None => view.short_title().to_owned(),
                    },
                    id,
                    uri: data_uri(&svg),
                });
            }
        }
    }
    Ok(out)
}

fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_helper("code", Box::new(code_helper));
    for (name, text) in PARTIALS {
        hb.register_partial(name, *text)
            .expect("embedded partial parses");
    }
    hb.register_partial("style", palette::style_element())
        .expect("the style element parses");
    hb.register_template_string("layout", LAYOUT)
        .expect("embedded layout parses");
    hb.register_template_string("diff", DIFF_LAYOUT)
        .expect("embedded diff layout parses");
    hb
}

fn data_uri(svg: &str) -> String {
    format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    )
}

/// Renders the report page.
pub fn render(rec: &Recording, d: &Diagnosis, opts: &HtmlOptions) -> Result<String, RenderError> {
    let hb = registry();
    let v = &d.verdict;
    let verdict_class = match v.kind {
        VerdictKind::Healthy => "ok",
        VerdictKind::NoEventLoop | VerdictKind::Inconclusive => "neutral",
        _ => "bad",
    };
    let cards: Vec<CardVm> = d
        .findings
        .iter()
        .enumerate()
        .map(|(i, f)| card(rec, i + 1, f))
        .collect();
    let top = d.findings.first().map(|f| card(rec, 1, f));
    let procs_line = |p: &crate::recording::ProcessInfo| {
        let lp = d
            .loops
            .iter()
            .find(|l| l.pid == p.pid)
            .map(|l| format!("{:?} loop", l.kind).to_lowercase())
            .unwrap_or_else(|| "no event loop".into());
        format!(
            "Python {} · {lp} · {}",
            p.python_version,
            p.cmdline.join(" ")
        )
    };
    let end = rec.end.as_ref();
    let page = Page {
        csp: CSP,
        title: format!("loopprof report — {}", v.kind),
        verdict_kind: v.kind.as_str(),
        verdict_class,
        summary: &v.summary,
        quality: d.quality.line(),
        quality_warn: !d.quality.problems.is_empty(),
        figures: vec![
            figure("loop blocked", format!("{:.1}%", v.loop_blocked_pct)),
            figure("worst stall", format!("{:.0} ms", v.worst_stall_ms)),
            figure("process CPU", format!("{:.1}%", v.process_cpu_pct)),
            figure("loop busy", format!("{:.1}%", v.loop_busy_pct)),
            figure("GIL wait", format!("{:.1}%", v.gil_wait_pct)),
            figure("CPU-starved", format!("{:.1}%", v.cpu_starved_pct)),
        ],
        top,
        timeline: timeline::svg(rec, d),
        has_probes: !rec.probes.is_empty(),
        legend: palette::LOOP_STATES.to_vec(),
        colors: LEGEND_COLORS,
        activities: super::glossary::ACTIVITIES,
        cards,
        requests: requests_vm(rec, d)?,
        flames: flames(rec, d)?,
        threads_open: d.threads.len() <= THREADS_OPEN_MAX,
        threads_count: d.threads.len(),
        threads: d
            .threads
            .iter()
            .map(|t| ThreadVm {
                pid: t.pid,
                tid: t.tid,
                name: t.name.clone(),
                event_loop: t.event_loop,
                on_cpu: pct(t.on_cpu_pct),
                native: pct(t.native_pct),
                waiting: if t.waiting_pct.is_empty() {
                    "–".into()
                } else {
                    t.waiting_pct
                        .iter()
                        .map(|(k, v)| format!("{k} {v:.1}%"))
                        .collect::<Vec<_>>()
                        .join(" · ")
                },
                gil: pct(t.gil_wait_pct),
                idle: if t.event_loop { pct(t.idle_pct) } else { "n/a".into() },
            })
            .collect(),
        details: vec![
            Kv { k: "target", v: format!("pid {} ({}): {}", rec.header.target.pid, rec.header.target.how.as_str(), rec.header.target.cmdline.join(" ")) },
            Kv { k: "started (UTC)", v: rec.header.started_at.clone() },
            Kv { k: "duration", v: format!("{:.1} s", rec.duration_us() as f64 / 1e6) },
            Kv { k: "rate", v: format!("{} Hz per process", rec.header.rate_hz) },
            Kv { k: "samples", v: format!("{} ({} failed)", rec.samples.len(), rec.errors.len()) },
            Kv { k: "ended", v: end.map(|e| e.reason.to_string()).unwrap_or_else(|| "cut short".into()) },
            Kv { k: "stopping", v: format!("{} (stack read while stopped)", rec.header.options.locking) },
            Kv { k: "analysis", v: format!("stall ≥ {:.0} ms; repeated short blocks ≥ {:.1}% of the loop's time; {:.1} s of loop time", d.threshold_ms, d.min_share_pct, d.window_s) },
            Kv { k: "host", v: rec.header.host.clone() },
            Kv { k: "versions", v: format!("loopprof {} (recorded by {}), py-spy {}", crate::VERSION, rec.header.loopprof_version, rec.header.py_spy_version) },
        ],
        processes: rec
            .processes
            .iter()
            .map(|p| Kv { k: "process", v: format!("{} — {}", p.pid, procs_line(p)) })
            .chain(crate::analysis::probes::summarize(rec).into_iter().map(|p| Kv {
                k: "probe",
                v: format!(
                    "{} — {} requests, {} answered (p50 {:.0} ms, p99 {:.0} ms), {} timeouts, {} errors, max {:.0} ms",
                    p.url, p.requests, p.answered, p.p50_ms, p.p99_ms, p.timeouts, p.errors, p.max_ms
                ),
            }))
            .collect(),
        verify: super::verify::steps(rec, opts.before.as_deref().unwrap_or("BEFORE")),
        health_url: rec
            .probes
            .first()
            .map(|p| p.url.clone())
            .unwrap_or_else(|| "http://127.0.0.1:PORT/health".into()),
        warnings: &rec.warnings,
        gates: &opts.gates,
    };
    hb.render("layout", &page)
        .map_err(|e| RenderError::Template {
            file: "report.html",
            source: Box::new(e),
        })
}

#[derive(Serialize)]
struct RowVm {
    label: String,
    before: String,
    after: String,
    change: String,
    class: &'static str,
}

#[derive(Serialize)]
struct DiffFindingVm<'a> {
    status: &'static str,
    title: &'a str,
    category: &'a str,
    site: String,
    was: Option<String>,
    endpoint: Option<&'a str>,
    route: Option<&'a str>,
    wait_target: Option<&'a str>,
    before: String,
    after: String,
    why: &'a str,
    fix: &'a str,
}

#[derive(Serialize)]
struct DiffPage<'a> {
    csp: &'static str,
    title: String,
    verdict_class: &'static str,
    before: &'a crate::analysis::diff::Side,
    after: &'a crate::analysis::diff::Side,
    summary: &'a str,
    /// Each side's quality line.
    before_quality: String,
    after_quality: String,
    reasons: &'a [String],
    gates: &'a [GateResult],
    rows: Vec<RowVm>,
    findings: Vec<DiffFindingVm<'a>>,
    /// Pile-ups of requests compared, one line each.
    requests: Vec<String>,
    flames: Vec<FlameVm>,
    details: Vec<Kv>,
}

/// The rows of one probed path: p50, p99 and timeouts, before and after (what users saw).
fn probe_rows(c: &crate::analysis::diff::ProbeChange) -> Vec<RowVm> {
    type Pick = fn(&crate::analysis::probes::ProbeSummary) -> f64;
    let figures: [(&str, Pick, &str); 3] = [
        ("p50", |p| p.p50_ms, " ms"),
        ("p99", |p| p.p99_ms, " ms"),
        ("timeouts", |p| p.timeouts as f64, ""),
    ];
    figures
        .into_iter()
        .map(|(what, pick, unit)| {
            let label = format!("probe {} {what}", c.path);
            match (&c.before, &c.after) {
                (Some(b), Some(a)) => row(&label, pick(b), pick(a), unit, Some(true)),
                (b, a) => RowVm {
                    label,
                    before: b
                        .as_ref()
                        .map(|p| format!("{:.0}{unit}", pick(p)))
                        .unwrap_or_else(|| "not probed".into()),
                    after: a
                        .as_ref()
                        .map(|p| format!("{:.0}{unit}", pick(p)))
                        .unwrap_or_else(|| "not probed".into()),
                    change: String::new(),
                    class: "",
                },
            }
        })
        .collect()
}

fn figures_text(f: &Option<Figures>) -> String {
    match f {
        Some(f) if f.max_stall_ms > 0.0 => format!(
            "{:.1}% of the loop's time ({:.0} ms per minute) · {:.1} stalls/min · longest {:.0} ms · p95 {:.0} ms",
            f.share_pct, f.blocked_ms_per_min, f.stalls_per_min, f.max_stall_ms, f.p95_stall_ms
        ),
        Some(f) => format!(
            "{:.1}% of the loop's time ({:.0} ms per minute) in short blocks",
            f.share_pct, f.blocked_ms_per_min
        ),
        None => "not found".into(),
    }
}

/// One "before / after / change" row; `lower_is_better` colours the change.
fn row(label: &str, b: f64, a: f64, unit: &str, lower_is_better: Option<bool>) -> RowVm {
    let fmt = |x: f64| {
        if unit == " ms" || unit.is_empty() && x.fract() == 0.0 {
            format!("{x:.0}{unit}")
        } else {
            format!("{x:.1}{unit}")
        }
    };
    let delta = a - b;
    let class = match lower_is_better {
        Some(true) if delta < 0.0 => "st-better",
        Some(true) if delta > 0.0 => "st-worse",
        _ => "",
    };
    RowVm {
        label: label.to_owned(),
        before: fmt(b),
        after: fmt(a),
        change: if delta == 0.0 {
            "=".into()
        } else {
            format!(
                "{}{}",
                if delta > 0.0 { "+" } else { "−" },
                fmt(delta.abs())
            )
        },
        class,
    }
}

/// The recordings `diff.html` compares.
pub struct DiffInput<'a> {
    /// BEFORE.
    pub before: (&'a Recording, &'a Diagnosis),
    /// AFTER.
    pub after: (&'a Recording, &'a Diagnosis),
}

/// Renders `diff.html`: the verdicts, figures and findings before and after, and
/// differential flame graphs of the loop-blocked and wall views.
pub fn render_diff(
    input: &DiffInput,
    diff: &Diff,
    gates: &[GateResult],
) -> Result<String, RenderError> {
    let hb = registry();
    let (b, a) = (&diff.before, &diff.after);
    let site = |c: &Option<crate::analysis::diagnose::CallSite>| c.as_ref().map(wording::site);
    let mut flames = Vec::new();
    for view in [View::LoopBlocked, View::Wall] {
        for shape in [flamegraph::DiffShape::Before, flamegraph::DiffShape::After] {
            if let Some(svg) = flamegraph::diff_svg(input.before, input.after, view, shape)? {
                let which = match shape {
                    flamegraph::DiffShape::Before => "before",
                    flamegraph::DiffShape::After => "after",
                };
                let height = flamegraph::svg_height(&svg).unwrap_or(560.0) + 8.0;
                flames.push(FlameVm {
                    id: format!("diff-{}-{which}", view.stem()),
                    title: format!("{}, sized as {}", view.short_title(), which.to_uppercase()),
                    uri: data_uri(&svg),
                    height: format!("{:.0}", height.min(1400.0)),
                });
            }
        }
    }
    let side_details = |label: &'static str, s: &crate::analysis::diff::Side| Kv {
        k: label,
        v: format!(
            "{} — started {} (UTC), {:.1} s at {} Hz, {:.1} s of event-loop time",
            s.recording, s.started_at, s.duration_s, s.rate_hz, s.window_s
        ),
    };
    let page = DiffPage {
        csp: CSP,
        title: format!("loopprof diff — {} → {}", b.verdict, a.verdict),
        verdict_class: if diff.regression {
            "bad"
        } else if a.verdict == VerdictKind::Healthy {
            "ok"
        } else {
            "neutral"
        },
        before: b,
        after: a,
        summary: &diff.summary,
        before_quality: b.quality.line(),
        after_quality: a.quality.line(),
        reasons: &diff.regression_reasons,
        gates,
        rows: wording::diff_figures(b, a)
            .into_iter()
            .map(|f| row(f.label, f.before, f.after, f.unit, f.lower_is_better))
            .collect::<Vec<_>>()
            .into_iter()
            .chain(diff.probes.iter().flat_map(probe_rows))
            .collect(),
        requests: diff.requests.iter().map(wording::wait_diff_line).collect(),
        findings: diff
            .findings
            .iter()
            .map(|f| DiffFindingVm {
                status: f.status.name(),
                title: &f.title,
                category: &f.category,
                site: site(&f.call_site).unwrap_or_else(|| "(no application frame)".into()),
                was: site(&f.before_call_site),
                endpoint: f.endpoint.as_deref(),
                route: f.route.as_deref(),
                wait_target: f.wait_target.as_deref(),
                before: figures_text(&f.before),
                after: figures_text(&f.after),
                why: &f.why,
                fix: &f.fix,
            })
            .collect(),
        flames,
        details: vec![
            side_details("before", b),
            side_details("after", a),
            Kv {
                k: "versions",
                v: format!("loopprof {}", crate::VERSION),
            },
        ],
    };
    hb.render("diff", &page).map_err(|e| RenderError::Template {
        file: "diff.html",
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::escape_with_code;

    #[test]
    fn code_spans_are_escaped_text() {
        assert_eq!(
            escape_with_code("in `<b>x</b>` at a<b"),
            "in <code>&lt;b&gt;x&lt;/b&gt;</code> at a&lt;b"
        );
        assert_eq!(escape_with_code("odd `open"), "odd <code>open</code>");
    }
}
