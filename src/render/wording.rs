//! The words every output shares: how a call site, a finding's state, its impact, a GIL
//! holder and a waited-for thread are said, and which facts of a finding are listed in which
//! order. Text, Markdown and HTML each label and escape them their own way; what they say,
//! and in what order, is decided here once.

use crate::analysis::diagnose::{CallSite, Culprit, Finding, FindingKind, WaitedThread};
use crate::recording::frames::short_file;

/// `dir/file.py:LINE in function`.
pub fn site(c: &CallSite) -> String {
    format!("{}:{} in {}", short_file(&c.file), c.line, c.function)
}

/// ` in function (dir/file.py:LINE)`, or nothing without a call site.
pub fn in_function(c: Option<&CallSite>) -> String {
    c.map(|c| format!(" in {} ({}:{})", c.function, short_file(&c.file), c.line))
        .unwrap_or_default()
}

/// What the loop was doing: `on-cpu`, `waiting (sleep)`...
pub fn state(f: &Finding) -> String {
    match &f.wait_reason {
        Some(r) => format!("{} ({r})", f.state),
        None => f.state.to_string(),
    }
}

/// `s` when `n` is not 1.
pub fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The impact line of a saturated worker-pool finding (its figures are saturation episodes,
/// not loop stalls); `None` for other findings.
pub fn pool_impact(f: &Finding) -> Option<String> {
    (f.kind == FindingKind::PoolSaturated).then(|| {
        format!(
            "all of {} busy for {:.0} ms ({:.1}% of the time) in {} episode{}, longest {:.0} ms",
            f.thread,
            f.blocked_ms,
            f.share_pct,
            f.stalls,
            plural(f.stalls),
            f.max_stall_ms
        )
    })
}

/// One line for a thread the loop waited for: `thread "pool_0" (77) in fetch (feeds.py:20),
/// waiting (socket) on tcp socket to 10.0.0.5:443 (90% of the time)`.
pub fn waited_thread(t: &WaitedThread) -> String {
    format!(
        "thread {:?} ({}) in {} ({}:{}), {}{} ({:.0}% of the time)",
        t.name,
        t.tid,
        t.call_site.function,
        short_file(&t.call_site.file),
        t.call_site.line,
        t.state,
        t.wait_target
            .as_deref()
            .map(|w| format!(" on {w}"))
            .unwrap_or_default(),
        t.share_pct
    )
}

/// One fact of a finding, after its call site.
#[derive(Debug, Clone)]
pub enum Fact<'f> {
    /// The source text of the call site's line.
    Line(&'f str),
    /// The library API called, or the callee named on the line.
    BlockingCall(&'f str),
    /// What the loop waited on (`tcp socket to ...`).
    WaitsOn(&'f str),
    /// A thread the loop waited for ([`waited_thread`]).
    WaitsFor(String),
    /// The HTTP route served.
    Route(&'f str),
    /// The endpoint function.
    Endpoint(&'f str),
    /// The thread holding the GIL.
    GilHeldBy(&'f Culprit),
}

/// The facts a finding has, in the order every output lists them.
pub fn facts(f: &Finding) -> Vec<Fact<'_>> {
    let mut out = Vec::new();
    if let Some(src) = f.call_site.as_ref().and_then(|c| c.source.as_deref()) {
        out.push(Fact::Line(src));
    }
    if let Some(b) = &f.blocking_call {
        out.push(Fact::BlockingCall(b));
    }
    if let Some(w) = &f.wait_target {
        out.push(Fact::WaitsOn(w));
    }
    out.extend(
        f.waited_for
            .iter()
            .map(|t| Fact::WaitsFor(waited_thread(t))),
    );
    if let Some(r) = &f.route {
        out.push(Fact::Route(r));
    }
    if let Some(e) = &f.endpoint {
        out.push(Fact::Endpoint(e));
    }
    if let Some(c) = &f.culprit_thread {
        out.push(Fact::GilHeldBy(c));
    }
    out
}

/// One figure compared in a diff (`loop blocked`, `longest stall`...).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiffFigure {
    /// Its name ([`crate::render::glossary`] explains it).
    pub label: &'static str,
    /// BEFORE's value.
    pub before: f64,
    /// AFTER's value.
    pub after: f64,
    /// Unit suffix: `%`, ` ms` or none.
    pub unit: &'static str,
    /// Whether less is better (`None`: neither, like process CPU).
    pub lower_is_better: Option<bool>,
}

/// The figures a diff compares, in the order every output lists them.
pub fn diff_figures(
    b: &crate::analysis::diff::Side,
    a: &crate::analysis::diff::Side,
) -> Vec<DiffFigure> {
    let f = |label, before, after, unit, lower_is_better| DiffFigure {
        label,
        before,
        after,
        unit,
        lower_is_better,
    };
    vec![
        f(
            "loop blocked",
            b.loop_blocked_pct,
            a.loop_blocked_pct,
            "%",
            Some(true),
        ),
        f(
            "longest stall",
            b.max_stall_ms,
            a.max_stall_ms,
            " ms",
            Some(true),
        ),
        f(
            "stalls per minute",
            b.stalls_per_min,
            a.stalls_per_min,
            "",
            Some(true),
        ),
        f(
            "loop busy",
            b.loop_busy_pct,
            a.loop_busy_pct,
            "%",
            Some(true),
        ),
        f("GIL wait", b.gil_wait_pct, a.gil_wait_pct, "%", Some(true)),
        f(
            "process CPU",
            b.process_cpu_pct,
            a.process_cpu_pct,
            "%",
            None,
        ),
        f(
            "findings",
            b.findings as f64,
            a.findings as f64,
            "",
            Some(true),
        ),
    ]
}

/// The impact line of a "where requests wait" finding: how many requests waited, of how many
/// in flight, and for how long.
pub fn wait_impact(f: &crate::analysis::tasks::WaitFinding) -> String {
    let p = &f.place;
    format!(
        "{:.1} requests waiting on average (at most {}) of {:.1} in flight · seen in {} task snapshots · longest wait seen {:.1} s, median {:.1} s",
        p.mean_tasks,
        p.max_tasks,
        f.mean_in_flight,
        p.snapshots,
        p.max_wait_ms / 1000.0,
        p.p50_wait_ms / 1000.0
    )
}

/// One compared pile-up of requests in one line: `NEW http-pool-wait GET /pooled: waits in
/// ... at app.py:71 in pooled — 0 → 16.9 requests waiting`.
pub fn wait_diff_line(w: &crate::analysis::diff::WaitDiff) -> String {
    let mean = |m: Option<f64>| m.map_or("none".to_owned(), |m| format!("{m:.1}"));
    format!(
        "{} {}{}: waits in {}{} — {} → {} requests waiting",
        w.status.name().to_uppercase(),
        w.category,
        w.route
            .as_deref()
            .map(|r| format!(" {r}"))
            .unwrap_or_default(),
        w.resource,
        w.site
            .as_ref()
            .map(|c| format!(" at {}", site(c)))
            .unwrap_or_default(),
        mean(w.before_mean),
        mean(w.after_mean)
    )
}
