//! Before/after comparison of two diagnoses (`loopprof diff`): verdicts, loop figures, and
//! every finding matched across the two recordings as fixed, new, worse, better or unchanged.
//!
//! Recordings of different length, rate or worker count compare fairly because every figure
//! compared is a share of the loop's time or a rate per minute of loop time, never a raw
//! count. Findings are matched by category and call site; the line may move between the two
//! versions of the code, so the match falls back to (category, file, function) and then to
//! (category, endpoint). A change counts only when it is clearly outside sampling noise (the
//! thresholds are [`Thresholds`], documented in `docs/cli.md`).

use crate::analysis::diagnose::{CallSite, Diagnosis, Finding, VerdictKind};
use crate::analysis::probes::ProbeSummary;
use crate::recording::frames::short_file;
use serde::Serialize;

/// One recording's side of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// Recording path as given.
    pub recording: String,
    /// UTC start.
    pub started_at: String,
    /// Duration, seconds.
    pub duration_s: f64,
    /// Requested rate, Hz.
    pub rate_hz: f64,
    /// Event-loop time analysed, seconds (summed over processes).
    pub window_s: f64,
    /// Verdict kind.
    pub verdict: VerdictKind,
    /// Verdict sentence.
    pub summary: String,
    /// Share of loop time blocked, percent.
    pub loop_blocked_pct: f64,
    /// Share of loop time busy, percent.
    pub loop_busy_pct: f64,
    /// Share of loop time waiting for the GIL, percent.
    pub gil_wait_pct: f64,
    /// Process CPU, percent of one core.
    pub process_cpu_pct: f64,
    /// Longest stall, ms.
    pub max_stall_ms: f64,
    /// Stalls per minute of loop time.
    pub stalls_per_min: f64,
    /// Number of findings.
    pub findings: usize,
    /// `--probe` results.
    pub probes: Vec<ProbeSummary>,
    /// How far this side's recording can be trusted.
    pub quality: crate::analysis::quality::Quality,
}

/// One probed path before and after: what users saw. URLs are matched by their path (a
/// restarted server may listen on another port).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeChange {
    /// The path probed (`/health`).
    pub path: String,
    /// BEFORE's figures (`null` when not probed there).
    pub before: Option<ProbeSummary>,
    /// AFTER's figures (`null` when not probed there).
    pub after: Option<ProbeSummary>,
}

/// Pairs the probes of both sides by path, in BEFORE's order then AFTER's new ones.
pub fn probe_changes(before: &Side, after: &Side) -> Vec<ProbeChange> {
    let mut out: Vec<ProbeChange> = Vec::new();
    for p in &before.probes {
        out.push(ProbeChange {
            path: crate::analysis::probes::path_of(&p.url).to_owned(),
            before: Some(p.clone()),
            after: None,
        });
    }
    for p in &after.probes {
        let path = crate::analysis::probes::path_of(&p.url).to_owned();
        match out.iter_mut().find(|c| c.path == path && c.after.is_none()) {
            Some(c) => c.after = Some(p.clone()),
            None => out.push(ProbeChange {
                path,
                before: None,
                after: Some(p.clone()),
            }),
        }
    }
    out
}

/// A finding's figures on one side, normalised per loop time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Figures {
    /// Share of the loop's time blocked here, percent.
    pub share_pct: f64,
    /// Milliseconds blocked here per minute of loop time.
    pub blocked_ms_per_min: f64,
    /// Stalls per minute of loop time.
    pub stalls_per_min: f64,
    /// Longest stall, ms (0 when only short blocks).
    pub max_stall_ms: f64,
    /// 95th percentile stall, ms.
    pub p95_stall_ms: f64,
}

/// What happened to a finding between BEFORE and AFTER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Only in AFTER.
    New,
    /// In both, clearly worse.
    Worse,
    /// Only in BEFORE.
    Fixed,
    /// In both, clearly better.
    Better,
    /// In both, within noise.
    Unchanged,
}

impl Status {
    /// The lower-case name (`fixed`, `new`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Worse => "worse",
            Status::Fixed => "fixed",
            Status::Better => "better",
            Status::Unchanged => "unchanged",
        }
    }
}

/// One finding compared.
#[derive(Debug, Clone, Serialize)]
pub struct FindingDiff {
    /// Fixed, new, worse, better or unchanged.
    pub status: Status,
    /// Catalog category.
    pub category: String,
    /// Title of the catalog entry.
    pub title: String,
    /// Call site (AFTER's when in both).
    pub call_site: Option<CallSite>,
    /// The call site in BEFORE when its line moved.
    pub before_call_site: Option<CallSite>,
    /// Endpoint.
    pub endpoint: Option<String>,
    /// The HTTP route (AFTER's when in both), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// What the loop waited on (AFTER's when in both), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_target: Option<String>,
    /// Figures in BEFORE (`null` when new).
    pub before: Option<Figures>,
    /// Figures in AFTER (`null` when fixed).
    pub after: Option<Figures>,
    /// The catalog's fix, one line.
    pub fix: String,
    /// Why it is classed so, in words.
    pub why: String,
}

/// One pile-up of requests on an awaited resource (a "where requests wait" finding),
/// compared. Matched by category, route and the application's file and function.
#[derive(Debug, Clone, Serialize)]
pub struct WaitDiff {
    /// Fixed, new, worse, better or unchanged.
    pub status: Status,
    /// Catalog category.
    pub category: String,
    /// Title of the catalog entry.
    pub title: String,
    /// The route (AFTER's when in both).
    pub route: Option<String>,
    /// Where the requests waited (AFTER's when in both).
    pub resource: String,
    /// The application line awaiting it (AFTER's when in both).
    pub site: Option<CallSite>,
    /// Requests waiting there on average in BEFORE (`null` when new).
    pub before_mean: Option<f64>,
    /// ... and in AFTER (`null` when fixed).
    pub after_mean: Option<f64>,
}

/// Requests waiting must change by at least this many (and by a half) to be worse or better.
const WAIT_MEAN_DELTA: f64 = 2.0;

/// Compares the pile-ups of two diagnoses.
fn wait_diffs(b: &Diagnosis, a: &Diagnosis) -> Vec<WaitDiff> {
    use crate::analysis::tasks::WaitFinding;
    let key = |w: &WaitFinding| {
        (
            w.category.clone(),
            w.place.route.clone(),
            site_key(&w.place.site),
        )
    };
    let mut out = Vec::new();
    let mut taken = vec![false; b.requests.findings.len()];
    for w in &a.requests.findings {
        let found = b
            .requests
            .findings
            .iter()
            .enumerate()
            .position(|(j, x)| !taken[j] && key(x) == key(w));
        let before_mean = found.map(|j| {
            taken[j] = true;
            b.requests.findings[j].place.mean_tasks
        });
        let am = w.place.mean_tasks;
        let status = match before_mean {
            None => Status::New,
            Some(bm) if clearly(bm, am, WAIT_MEAN_DELTA, 0.5) && am > bm => Status::Worse,
            Some(bm) if clearly(bm, am, WAIT_MEAN_DELTA, 0.5) => Status::Better,
            Some(_) => Status::Unchanged,
        };
        out.push(WaitDiff {
            status,
            category: w.category.clone(),
            title: w.title.clone(),
            route: w.place.route.clone(),
            resource: w.place.resource.clone(),
            site: w.place.site.clone(),
            before_mean,
            after_mean: Some(am),
        });
    }
    for (j, w) in b.requests.findings.iter().enumerate() {
        if !taken[j] {
            out.push(WaitDiff {
                status: Status::Fixed,
                category: w.category.clone(),
                title: w.title.clone(),
                route: w.place.route.clone(),
                resource: w.place.resource.clone(),
                site: w.place.site.clone(),
                before_mean: Some(w.place.mean_tasks),
                after_mean: None,
            });
        }
    }
    out.sort_by_key(|w| w.status);
    out
}

/// The noise margins of the comparison.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// A finding's share must move by at least this many percentage points...
    pub share_pp: f64,
    /// ...and by at least this fraction of its larger value.
    pub share_rel: f64,
    /// Or its longest stall must move by this fraction and by two sample intervals.
    pub stall_rel: f64,
    /// The loop-blocked share must grow by at least this many points to be a regression...
    pub loop_pp: f64,
    /// ...and by this fraction of BEFORE's.
    pub loop_rel: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            share_pp: 1.0,
            share_rel: 0.25,
            stall_rel: 0.5,
            loop_pp: 2.0,
            loop_rel: 0.5,
        }
    }
}

/// The comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// BEFORE.
    pub before: Side,
    /// AFTER.
    pub after: Side,
    /// Every finding of either side, new and worse first, then fixed, better, unchanged.
    pub findings: Vec<FindingDiff>,
    /// Whether AFTER is worse than BEFORE.
    pub regression: bool,
    /// Why it is a regression (empty when not).
    pub regression_reasons: Vec<String>,
    /// One sentence: what changed.
    pub summary: String,
    /// `--probe` latency per path, before and after (empty without probes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeChange>,
    /// Pile-ups of requests on awaited resources, compared (empty when neither side had
    /// one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<WaitDiff>,
}

fn side(path: &str, rec: &crate::recording::Recording, d: &Diagnosis) -> Side {
    let v = &d.verdict;
    let stalls: usize = d.findings.iter().map(|f| f.stalls).sum();
    Side {
        recording: path.to_owned(),
        started_at: rec.header.started_at.clone(),
        duration_s: rec.duration_us() as f64 / 1e6,
        rate_hz: rec.header.rate_hz,
        window_s: d.window_s,
        verdict: v.kind,
        summary: v.summary.clone(),
        loop_blocked_pct: v.loop_blocked_pct,
        loop_busy_pct: v.loop_busy_pct,
        gil_wait_pct: v.gil_wait_pct,
        process_cpu_pct: v.process_cpu_pct,
        max_stall_ms: v.worst_stall_ms,
        stalls_per_min: per_min(stalls as f64, d.window_s),
        findings: d.findings.len(),
        probes: crate::analysis::probes::summarize(rec),
        quality: d.quality.clone(),
    }
}

fn per_min(x: f64, window_s: f64) -> f64 {
    if window_s > 0.0 {
        x * 60.0 / window_s
    } else {
        0.0
    }
}

fn figures(f: &Finding, d: &Diagnosis) -> Figures {
    // Shares are relative to the loop time of the processes the finding occurs in; the
    // per-minute rates use the same base (loop time of those processes).
    let loops_in = d
        .loops
        .iter()
        .filter(|l| f.pids.contains(&l.pid))
        .count()
        .max(1);
    let window = d.window_s * loops_in as f64 / d.loops.len().max(1) as f64;
    Figures {
        share_pct: f.share_pct,
        blocked_ms_per_min: f.share_pct / 100.0 * 60_000.0,
        stalls_per_min: per_min(f.stalls as f64, window),
        max_stall_ms: f.max_stall_ms,
        p95_stall_ms: f.p95_stall_ms,
    }
}

fn site_key(c: &Option<CallSite>) -> Option<(String, String)> {
    c.as_ref()
        .map(|c| (short_file(&c.file).to_owned(), c.function.clone()))
}

/// Matches AFTER's findings to BEFORE's: exact call site, then same file and function (the
/// line moved), then same endpoint, then same route. Returns, per AFTER finding, the BEFORE index it matches.
fn match_findings(before: &[Finding], after: &[Finding]) -> Vec<Option<usize>> {
    let mut taken = vec![false; before.len()];
    let mut out = vec![None; after.len()];
    type Level = fn(&Finding, &Finding) -> bool;
    let levels: [Level; 4] = [
        |a, b| {
            site_key(&a.call_site).is_some()
                && site_key(&a.call_site) == site_key(&b.call_site)
                && a.call_site.as_ref().map(|c| c.line) == b.call_site.as_ref().map(|c| c.line)
        },
        |a, b| site_key(&a.call_site) == site_key(&b.call_site),
        |a, b| a.endpoint.is_some() && a.endpoint == b.endpoint,
        |a, b| a.route.is_some() && a.route == b.route && a.category == b.category,
    ];
    for level in levels {
        for (i, a) in after.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            if let Some(j) = before
                .iter()
                .enumerate()
                .position(|(j, b)| !taken[j] && b.category == a.category && level(a, b))
            {
                taken[j] = true;
                out[i] = Some(j);
            }
        }
    }
    out
}

fn clearly(from: f64, to: f64, pp: f64, rel: f64) -> bool {
    (to - from).abs() >= pp && (to - from).abs() >= rel * from.max(to)
}

/// Compares two diagnoses. `interval_ms` is the coarser sample interval of the two
/// recordings (the resolution of stall lengths).
pub fn diff(
    before: (&str, &crate::recording::Recording, &Diagnosis),
    after: (&str, &crate::recording::Recording, &Diagnosis),
    t: &Thresholds,
) -> Diff {
    let (bp, brec, bd) = before;
    let (ap, arec, ad) = after;
    let interval_ms = 1000.0 / brec.header.rate_hz.min(arec.header.rate_hz).max(1e-3);
    let matches = match_findings(&bd.findings, &ad.findings);
    let mut out = Vec::new();
    let mut matched_before = vec![false; bd.findings.len()];
    for (i, a) in ad.findings.iter().enumerate() {
        let b = matches[i].map(|j| {
            matched_before[j] = true;
            &bd.findings[j]
        });
        out.push(compare((b, bd), (a, ad), interval_ms, t));
    }
    for (j, b) in bd.findings.iter().enumerate() {
        if !matched_before[j] {
            out.push(fixed(b, bd));
        }
    }
    out.sort_by(|x, y| {
        x.status.cmp(&y.status).then_with(|| {
            let s = |f: &FindingDiff| f.after.or(f.before).map(|g| g.share_pct).unwrap_or(0.0);
            s(y).total_cmp(&s(x))
        })
    });
    let b = side(bp, brec, bd);
    let a = side(ap, arec, ad);
    let requests = wait_diffs(bd, ad);
    let mut reasons = regression_reasons(&out, &b, &a, t);
    for w in &requests {
        let what = format!(
            "{}{}",
            w.category,
            w.route
                .as_deref()
                .map(|r| format!(" on {r}"))
                .unwrap_or_default()
        );
        match w.status {
            Status::New => reasons.push(format!("requests newly queued: {what}")),
            Status::Worse => reasons.push(format!(
                "more requests queued: {what} ({:.1} → {:.1} waiting)",
                w.before_mean.unwrap_or(0.0),
                w.after_mean.unwrap_or(0.0)
            )),
            _ => {}
        }
    }
    let summary = summary(&out, &b, &a, &reasons, t);
    Diff {
        probes: probe_changes(&b, &a),
        requests,
        before: b,
        after: a,
        findings: out,
        regression: !reasons.is_empty(),
        regression_reasons: reasons,
        summary,
    }
}

/// A finding of AFTER against its match in BEFORE (`None`: it is new).
fn compare(
    before: (Option<&Finding>, &Diagnosis),
    after: (&Finding, &Diagnosis),
    interval_ms: f64,
    t: &Thresholds,
) -> FindingDiff {
    let (a, ad) = after;
    let fa = figures(a, ad);
    let (status, before_fig, before_site, why) = match before {
        (None, _) => (
            Status::New,
            None,
            None,
            format!(
                "not in BEFORE; {:.1}% of the loop's time in AFTER",
                a.share_pct
            ),
        ),
        (Some(b), bd) => {
            let fb = figures(b, bd);
            let share_moved = clearly(fb.share_pct, fa.share_pct, t.share_pp, t.share_rel);
            let stall_moved = clearly(
                fb.max_stall_ms,
                fa.max_stall_ms,
                2.0 * interval_ms,
                t.stall_rel,
            );
            let worse = (share_moved && fa.share_pct > fb.share_pct)
                || (stall_moved && fa.max_stall_ms > fb.max_stall_ms);
            let better = !worse
                && ((share_moved && fa.share_pct < fb.share_pct)
                    || (stall_moved && fa.max_stall_ms < fb.max_stall_ms));
            let status = if worse {
                Status::Worse
            } else if better {
                Status::Better
            } else {
                Status::Unchanged
            };
            let moved = b.call_site.as_ref().map(|c| c.line)
                != a.call_site.as_ref().map(|c| c.line)
                || site_key(&b.call_site) != site_key(&a.call_site);
            (
                status,
                Some(fb),
                if moved { b.call_site.clone() } else { None },
                format!(
                    "{:.1}% → {:.1}% of the loop's time, longest stall {:.0} → {:.0} ms",
                    fb.share_pct, fa.share_pct, fb.max_stall_ms, fa.max_stall_ms
                ),
            )
        }
    };
    FindingDiff {
        status,
        category: a.category.clone(),
        title: a.title.clone(),
        call_site: a.call_site.clone(),
        before_call_site: before_site,
        endpoint: a.endpoint.clone(),
        route: a.route.clone(),
        wait_target: a.wait_target.clone(),
        before: before_fig,
        after: Some(fa),
        fix: a.fix.summary.clone(),
        why,
    }
}

/// A finding of BEFORE with no match in AFTER.
fn fixed(b: &Finding, bd: &Diagnosis) -> FindingDiff {
    FindingDiff {
        status: Status::Fixed,
        category: b.category.clone(),
        title: b.title.clone(),
        call_site: b.call_site.clone(),
        before_call_site: None,
        endpoint: b.endpoint.clone(),
        route: b.route.clone(),
        wait_target: b.wait_target.clone(),
        before: Some(figures(b, bd)),
        after: None,
        fix: b.fix.summary.clone(),
        why: format!(
            "{:.1}% of the loop's time in BEFORE; not found in AFTER",
            b.share_pct
        ),
    }
}

/// Why AFTER is a regression: new or worse findings, a verdict that left healthy, the loop
/// blocked clearly more. Empty when it is not.
fn regression_reasons(out: &[FindingDiff], b: &Side, a: &Side, t: &Thresholds) -> Vec<String> {
    let mut reasons = Vec::new();
    for f in out {
        match f.status {
            Status::New => reasons.push(format!("new finding: {}", site_of(f))),
            Status::Worse => reasons.push(format!("worse: {} ({})", site_of(f), f.why)),
            _ => {}
        }
    }
    if b.verdict == VerdictKind::Healthy && a.verdict != VerdictKind::Healthy {
        reasons.push(format!("verdict went from healthy to {}", a.verdict));
    }
    if a.loop_blocked_pct - b.loop_blocked_pct >= t.loop_pp
        && a.loop_blocked_pct - b.loop_blocked_pct >= t.loop_rel * b.loop_blocked_pct
    {
        reasons.push(format!(
            "the loop was blocked {:.1}% of the time, up from {:.1}%",
            a.loop_blocked_pct, b.loop_blocked_pct
        ));
    }
    reasons
}

/// The diff's one-sentence summary.
fn summary(out: &[FindingDiff], b: &Side, a: &Side, reasons: &[String], t: &Thresholds) -> String {
    let count = |s: Status| out.iter().filter(|f| f.status == s).count();
    let summary = format!(
        "{}: verdict {} → {}; loop blocked {:.1}% → {:.1}%, longest stall {:.0} → {:.0} ms; findings: {} fixed, {} new, {} worse, {} better, {} unchanged.",
        if !reasons.is_empty() {
            "Regression"
        } else if count(Status::Fixed) + count(Status::Better) > 0
            || b.loop_blocked_pct - a.loop_blocked_pct >= t.loop_pp
        {
            "Improved"
        } else {
            "No clear change"
        },
        b.verdict,
        a.verdict,
        b.loop_blocked_pct,
        a.loop_blocked_pct,
        b.max_stall_ms,
        a.max_stall_ms,
        count(Status::Fixed),
        count(Status::New),
        count(Status::Worse),
        count(Status::Better),
        count(Status::Unchanged),
    );
    // A side that cannot be trusted measured nothing: no comparison is drawn from it.
    let untrusted: Vec<&str> = [("BEFORE", b), ("AFTER", a)]
        .into_iter()
        .filter(|(_, s)| !s.quality.trusted)
        .map(|(name, _)| name)
        .collect();
    if untrusted.is_empty() {
        summary
    } else {
        format!(
            "Inconclusive: the {} recording cannot be trusted (see its quality line); nothing is compared. {summary}",
            untrusted.join(" and ")
        )
    }
}

fn site_of(f: &FindingDiff) -> String {
    match &f.call_site {
        Some(c) => format!(
            "{} at {}:{} in {}",
            f.category,
            short_file(&c.file),
            c.line,
            c.function
        ),
        None => f.category.clone(),
    }
}

/// The gate facts of a diff: AFTER's figures, plus the diff-only metrics.
pub fn facts(
    d: &Diff,
    after: &Diagnosis,
    after_probes: &[ProbeSummary],
) -> crate::analysis::gates::Facts {
    let mut f = crate::analysis::gates::facts_of(after, after_probes);
    let count = |s: Status| d.findings.iter().filter(|x| x.status == s).count() as f64;
    f.numbers.insert("new_findings", count(Status::New));
    f.numbers.insert("worse_findings", count(Status::Worse));
    f.numbers.insert("fixed_findings", count(Status::Fixed));
    f.numbers.insert(
        "delta_loop_blocked_pct",
        d.after.loop_blocked_pct - d.before.loop_blocked_pct,
    );
    f.numbers.insert(
        "delta_max_stall_ms",
        d.after.max_stall_ms - d.before.max_stall_ms,
    );
    f.numbers.insert(
        "delta_process_cpu_pct",
        d.after.process_cpu_pct - d.before.process_cpu_pct,
    );
    let changed = || {
        d.findings
            .iter()
            .filter(|x| matches!(x.status, Status::New | Status::Worse))
    };
    let queued = || {
        d.requests
            .iter()
            .filter(|x| matches!(x.status, Status::New | Status::Worse))
    };
    f.names.insert(
        "new_category",
        crate::analysis::gates::name_list(
            changed()
                .map(|x| x.category.clone())
                .chain(queued().map(|w| w.category.clone())),
        ),
    );
    f.names.insert(
        "new_route",
        crate::analysis::gates::name_list(
            changed()
                .filter_map(|x| x.route.clone())
                .chain(queued().filter_map(|w| w.route.clone())),
        ),
    );
    f.flags.insert(
        "regression",
        (d.regression, d.regression_reasons.join("; ")),
    );
    if !d.before.quality.trusted && f.untrusted.is_none() {
        f.untrusted = Some("the BEFORE recording cannot be trusted".into());
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(urls: &[(&str, f64)]) -> Side {
        Side {
            recording: String::new(),
            started_at: String::new(),
            window_s: 30.0,
            duration_s: 30.0,
            rate_hz: 100.0,
            verdict: VerdictKind::Healthy,
            summary: String::new(),
            loop_blocked_pct: 0.0,
            loop_busy_pct: 0.0,
            gil_wait_pct: 0.0,
            process_cpu_pct: 0.0,
            max_stall_ms: 0.0,
            stalls_per_min: 0.0,
            findings: 0,
            quality: crate::analysis::quality::Quality {
                trusted: true,
                ..Default::default()
            },
            probes: urls
                .iter()
                .map(|(u, p50)| ProbeSummary {
                    url: (*u).into(),
                    requests: 10,
                    answered: 10,
                    timeouts: 0,
                    errors: 0,
                    p50_ms: *p50,
                    p99_ms: *p50,
                    max_ms: *p50,
                })
                .collect(),
        }
    }

    #[test]
    fn probes_are_paired_by_path_across_a_port_change() {
        let b = side(&[
            ("http://127.0.0.1:8000/health", 2500.0),
            ("http://127.0.0.1:8000/old", 1.0),
        ]);
        let a = side(&[
            ("http://127.0.0.1:8001/health", 3.0),
            ("http://127.0.0.1:8001/new?x=1", 2.0),
        ]);
        let c = probe_changes(&b, &a);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].path, "/health");
        assert_eq!(c[0].before.as_ref().unwrap().p50_ms, 2500.0);
        assert_eq!(c[0].after.as_ref().unwrap().p50_ms, 3.0);
        assert!(c[1].path == "/old" && c[1].after.is_none());
        assert!(c[2].path == "/new?x=1" && c[2].before.is_none());
    }
}
