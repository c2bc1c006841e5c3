//! `report.md`: a short Markdown summary to paste into a GitHub or Jira ticket: the verdict,
//! the top findings with call site and fix, what was measured, and the command used; and
//! `diff.md`, the before/after comparison of `loopprof diff`.
//!
//! Strings from the target only appear inside code spans, with backticks and line breaks
//! removed, so they cannot inject links, images or HTML into the ticket.

use super::wording::{self, Fact};
use crate::analysis::diagnose::{Diagnosis, Finding};
use crate::analysis::diff::{Diff, Figures};
use crate::analysis::gates::GateResult;
use crate::recording::Recording;
use std::fmt::Write;

/// Findings listed in full.
const TOP: usize = 5;

/// An untrusted string as an inline code span.
fn code(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c == '`' {
                '\''
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect();
    format!("`{}`", clean.trim())
}

/// Renders the Markdown summary. `command` is the loopprof command line used, if known;
/// `before` where the recording is (for the "verify the fix" commands; `BEFORE` if `None`).
pub fn render(
    rec: &Recording,
    d: &Diagnosis,
    command: Option<&str>,
    gates: &[GateResult],
    before: Option<&str>,
) -> String {
    let v = &d.verdict;
    let mut out = String::new();
    let _ = writeln!(out, "## loopprof: {}\n", v.kind);
    // The summary sentence names code from the target: keep it in a quote with code-safe text.
    let _ = writeln!(
        out,
        "> {}\n",
        v.summary.replace(['\n', '\r'], " ").replace('<', "&lt;")
    );
    let _ = writeln!(
        out,
        "| loop blocked | worst stall | process CPU | loop busy | GIL wait | CPU-starved |\n| --- | --- | --- | --- | --- | --- |\n| {:.1}% | {:.0} ms | {:.1}% | {:.1}% | {:.1}% | {:.1}% |\n",
        v.loop_blocked_pct, v.worst_stall_ms, v.process_cpu_pct, v.loop_busy_pct, v.gil_wait_pct, v.cpu_starved_pct
    );
    let _ = writeln!(
        out,
        "*Recording {}*\n",
        d.quality
            .line()
            .replace(['\n', '\r'], " ")
            .replace('<', "&lt;")
    );
    write_gates(&mut out, gates);
    if d.findings.is_empty() {
        let _ = writeln!(out, "No call site blocked the event loop.\n");
    }
    for (i, f) in d.findings.iter().take(TOP).enumerate() {
        write_finding(&mut out, i + 1, f);
    }
    if d.findings.len() > TOP {
        let _ = writeln!(
            out,
            "...and {} more findings in `summary.json` / `report.html`.\n",
            d.findings.len() - TOP
        );
    }
    write_requests(&mut out, d);
    if !d.findings.is_empty() || !d.requests.findings.is_empty() {
        write_verify(&mut out, rec, before);
    }
    write_measured(&mut out, rec, d, command);
    out
}

/// "Where requests wait": each pile-up with its route, site, impact and fix.
fn write_requests(out: &mut String, d: &Diagnosis) {
    for (i, f) in d.requests.findings.iter().take(TOP).enumerate() {
        let p = &f.place;
        let _ = writeln!(
            out,
            "### Requests waiting {}. {} (`{}`)\n",
            i + 1,
            f.title,
            f.category
        );
        let site = p
            .site
            .as_ref()
            .map(|c| code(&wording::site(c)))
            .unwrap_or_else(|| "(no application frame in the await chain)".into());
        let _ = writeln!(out, "- **Where:** {site}");
        if let Some(c) = p.site.as_ref().and_then(|c| c.source.as_deref()) {
            let _ = writeln!(out, "- **Line:** {}", code(c.trim()));
        }
        if let Some(r) = &p.route {
            let _ = writeln!(out, "- **Route:** {}", code(r));
        }
        let _ = writeln!(out, "- **Waits in:** {}", code(&p.resource));
        let _ = writeln!(out, "- **Impact:** {}", wording::wait_impact(f));
        let _ = writeln!(out, "- **Fix:** {}\n", f.fix.summary);
    }
}

/// One finding: where, its facts ([`wording::facts`]), impact and fix.
fn write_finding(out: &mut String, rank: usize, f: &Finding) {
    let site = f
        .call_site
        .as_ref()
        .map(|c| code(&wording::site(c)))
        .unwrap_or_else(|| "(no application frame)".into());
    let _ = writeln!(out, "### {}. {} (`{}`)\n", rank, f.title, f.category);
    let _ = writeln!(out, "- **Where:** {site}");
    for fact in wording::facts(f) {
        let _ = match fact {
            Fact::Line(src) => writeln!(out, "- **Line:** {}", code(src)),
            Fact::BlockingCall(b) => writeln!(out, "- **Blocking call:** {}", code(b)),
            Fact::WaitsOn(w) => writeln!(out, "- **Waits on:** {}", code(w)),
            Fact::WaitsFor(t) => writeln!(out, "- **Waits for:** {}", code(&t)),
            Fact::Route(r) => writeln!(out, "- **Route:** {}", code(r)),
            Fact::Endpoint(e) => writeln!(out, "- **Endpoint:** {}", code(e)),
            Fact::GilHeldBy(c) => writeln!(
                out,
                "- **GIL held by:** {} ({:.0}% of the waits)",
                code(&c.name),
                c.share_pct
            ),
        };
    }
    let impact = if let Some(i) = wording::pool_impact(f) {
        i
    } else if f.stalls > 0 {
        format!(
            "{} stalls, {:.0} ms blocked (max {:.0} ms, p95 {:.0} ms)",
            f.stalls, f.blocked_ms, f.max_stall_ms, f.p95_stall_ms
        )
    } else {
        format!(
            "{} short blocks, {:.0} ms in total",
            f.short_blocks, f.short_blocked_ms
        )
    };
    let state = wording::state(f);
    let _ = writeln!(
        out,
        "- **Impact:** {impact}; {:.1}% of the loop's time; loop was {state}",
        f.share_pct
    );
    let _ = writeln!(out, "- **Fix:** {}\n", f.fix.summary);
}

/// The "Verify the fix" commands, as fenced blocks (target strings are shell-quoted).
fn write_verify(out: &mut String, rec: &Recording, before: Option<&str>) {
    // Fenced blocks: the commands paste as they are (target strings are shell-quoted).
    let v = super::verify::steps(rec, before.unwrap_or("BEFORE"));
    let _ = writeln!(
        out,
        "### Verify the fix\n\nAfter deploying the fix, with the same load, record the restarted server into a new directory, then compare (`--fail-on regression` in CI):\n\n```sh\n{}\n{}\n```\n",
        v.record.replace('`', "'"),
        v.diff.replace('`', "'")
    );
    if let Some(n) = &v.note {
        let _ = writeln!(out, "{n}\n");
    }
}

/// The "What was measured" section: the recording, its processes, the settings, the probes,
/// the command and versions.
fn write_measured(out: &mut String, rec: &Recording, d: &Diagnosis, command: Option<&str>) {
    let _ = writeln!(out, "<details><summary>What was measured</summary>\n");
    let _ =
        writeln!(
        out,
        "- Recorded {:.1} s at {} Hz per process from {} (UTC); {} samples, {} failed; ended: {}.",
        rec.duration_us() as f64 / 1e6,
        rec.header.rate_hz,
        rec.header.started_at,
        rec.samples.len(),
        rec.errors.len(),
        rec.end.as_ref().map(|e| e.reason.as_str()).unwrap_or("cut short")
    );
    for p in &rec.processes {
        let lp = d
            .loops
            .iter()
            .find(|l| l.pid == p.pid)
            .map(|l| format!("{:?}", l.kind).to_lowercase())
            .unwrap_or_else(|| "no loop".into());
        let _ = writeln!(
            out,
            "- Process {} (Python {}, {lp}): {}",
            p.pid,
            p.python_version,
            code(&p.cmdline.join(" "))
        );
    }
    let _ = writeln!(
        out,
        "- A stall is ≥ {:.0} ms of the event loop busy at one call site (CPU-starved time excluded); repeated short blocks count from {:.1}% of the loop's time.",
        d.threshold_ms, d.min_share_pct
    );
    for p in crate::analysis::probes::summarize(rec) {
        let _ = writeln!(
            out,
            "- Probe {}: {} requests, {} answered (p50 {:.0} ms, p99 {:.0} ms), {} timed out, {} failed.",
            code(&p.url), p.requests, p.answered, p.p50_ms, p.p99_ms, p.timeouts, p.errors
        );
    }
    if let Some(c) = command {
        let _ = writeln!(out, "- Command: {}", code(c));
    }
    let _ = writeln!(
        out,
        "- loopprof {}, py-spy {}.\n\n</details>",
        crate::VERSION,
        rec.header.py_spy_version
    );
}

fn write_gates(out: &mut String, gates: &[GateResult]) {
    if gates.is_empty() {
        return;
    }
    let failed = gates.iter().filter(|g| g.failed).count();
    let _ = writeln!(out, "**Gates:** {} of {} failed\n", failed, gates.len());
    for g in gates {
        let _ = writeln!(
            out,
            "- {} {} — {}",
            if g.failed { "❌ failed" } else { "✅ passed" },
            code(&g.gate),
            code(&g.because)
        );
    }
    out.push('\n');
}

fn fig(f: &Option<Figures>) -> String {
    match f {
        Some(f) if f.max_stall_ms > 0.0 => format!(
            "{:.1}% · {:.1} stalls/min · max {:.0} ms · p95 {:.0} ms",
            f.share_pct, f.stalls_per_min, f.max_stall_ms, f.p95_stall_ms
        ),
        Some(f) => format!("{:.1}% (short blocks)", f.share_pct),
        None => "–".into(),
    }
}

/// Renders `diff.md`: the verdicts, the loop figures before and after, and every finding
/// with its status.
pub fn diff(d: &Diff, gates: &[GateResult]) -> String {
    let mut out = String::new();
    let (b, a) = (&d.before, &d.after);
    let _ = writeln!(
        out,
        "## loopprof diff: {} → {}{}\n",
        b.verdict,
        a.verdict,
        if d.regression { " (regression)" } else { "" }
    );
    let _ = writeln!(
        out,
        "> {}\n",
        d.summary.replace(['\n', '\r'], " ").replace('<', "&lt;")
    );
    write_gates(&mut out, gates);
    let _ = writeln!(out, "| | before | after |\n| --- | --- | --- |");
    // Counts and milliseconds without decimals, shares and rates with one.
    let fmt = |x: f64, unit: &str, label: &str| {
        let decimals = usize::from(unit != " ms" && label != "findings");
        format!("{x:.decimals$}{unit}")
    };
    let figures = wording::diff_figures(b, a).into_iter().map(|f| {
        (
            f.label,
            fmt(f.before, f.unit, f.label),
            fmt(f.after, f.unit, f.label),
        )
    });
    let rows = std::iter::once(("verdict", b.verdict.to_string(), a.verdict.to_string()))
        .chain(figures)
        .chain([
            (
                "recorded",
                format!("{:.1} s at {} Hz", b.duration_s, b.rate_hz),
                format!("{:.1} s at {} Hz", a.duration_s, a.rate_hz),
            ),
            (
                "quality",
                b.quality.line().replace('<', "&lt;"),
                a.quality.line().replace('<', "&lt;"),
            ),
        ]);
    for (k, x, y) in rows {
        let _ = writeln!(out, "| {k} | {x} | {y} |");
    }
    // What users saw: each probed path's latency, one figure per row.
    for c in &d.probes {
        let fig = |p: &Option<crate::analysis::probes::ProbeSummary>,
                   f: &dyn Fn(&crate::analysis::probes::ProbeSummary) -> String| {
            p.as_ref().map(f).unwrap_or_else(|| "not probed".into())
        };
        let path = code(&c.path);
        let _ = writeln!(
            out,
            "| probe {path} p50 | {} | {} |",
            fig(&c.before, &|p| format!("{:.0} ms", p.p50_ms)),
            fig(&c.after, &|p| format!("{:.0} ms", p.p50_ms))
        );
        let _ = writeln!(
            out,
            "| probe {path} p99 | {} | {} |",
            fig(&c.before, &|p| format!("{:.0} ms", p.p99_ms)),
            fig(&c.after, &|p| format!("{:.0} ms", p.p99_ms))
        );
        let _ = writeln!(
            out,
            "| probe {path} timeouts | {} | {} |",
            fig(&c.before, &|p| format!("{} of {}", p.timeouts, p.requests)),
            fig(&c.after, &|p| format!("{} of {}", p.timeouts, p.requests))
        );
    }
    out.push('\n');
    if !d.requests.is_empty() {
        let _ = writeln!(out, "**Where requests wait:**\n");
        for w in &d.requests {
            let _ = writeln!(out, "- {}", code(&wording::wait_diff_line(w)));
        }
        out.push('\n');
    }
    if d.findings.is_empty() {
        let _ = writeln!(out, "No finding in either recording.\n");
    } else {
        let _ = writeln!(
            out,
            "| status | category | call site | before | after |\n| --- | --- | --- | --- | --- |"
        );
        for f in &d.findings {
            let site = f
                .call_site
                .as_ref()
                .map(|c| code(&wording::site(c)))
                .unwrap_or_else(|| "–".into());
            let site = match &f.route {
                Some(r) => format!("{site} · {}", code(r)),
                None => site,
            };
            let site = match &f.wait_target {
                Some(w) => format!("{site} · waits on {}", code(w)),
                None => site,
            };
            let _ = writeln!(
                out,
                "| **{}** | `{}` | {} | {} | {} |",
                f.status.name(),
                f.category,
                site,
                fig(&f.before),
                fig(&f.after)
            );
        }
        out.push('\n');
    }
    for r in &d.regression_reasons {
        let _ = writeln!(out, "- Regression: {}", code(r));
    }
    let _ = writeln!(
        out,
        "\nBEFORE: {} · AFTER: {} · loopprof {}. Shares are of the event loop's time, rates per minute of loop time, so recordings of different length and rate compare.",
        code(&b.recording),
        code(&a.recording),
        crate::VERSION
    );
    out
}
