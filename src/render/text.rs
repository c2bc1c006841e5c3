//! Plain-text rendering for the terminal: a recording's [`Overview`], the diagnosis, `dump`,
//! `diff` and the outcome of `--fail-on` gates.
//!
//! Target-controlled strings (command lines, thread and function names) are printed with
//! control characters replaced, so a hostile name cannot move the cursor or clear the screen.

use super::wording::{self, Fact};
use crate::analysis::diagnose::Diagnosis;
use crate::analysis::overview::Overview;
use crate::recording::frames::short_file;
use std::fmt::Write;

/// Replaces control characters (escape sequences, newlines...) with `?`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// How many threads per process the text overview shows.
const MAX_THREADS: usize = 6;

/// Renders the overview as a few lines per process and thread.
pub fn overview(o: &Overview) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Recorded {:.1} s at {} Hz{}; {} failed samples.",
        o.duration_s,
        o.rate_hz,
        match &o.end_reason {
            Some(r) => format!(" (ended: {r})"),
            None => " (cut short)".into(),
        },
        o.errors
    );
    let _ = writeln!(out, "{}", sanitize(&o.quality.line()));
    for p in &o.processes {
        let _ = writeln!(
            out,
            "\nprocess {} (Python {}): {}\n  {} samples, {:.1}/s achieved; stack read (target stopped) p50 {} µs, p99 {} µs; CPU {:.1}% of a core",
            p.pid,
            sanitize(&p.python_version),
            sanitize(&truncate(&p.cmdline, 90)),
            p.samples,
            p.achieved_hz,
            p.read_us_p50,
            p.read_us_p99,
            p.cpu_pct
        );
        // MainThread first, then the threads with most samples; the rest are counted.
        let mut threads: Vec<_> = p.threads.iter().collect();
        threads.sort_by_key(|t| (t.name != "MainThread", std::cmp::Reverse(t.samples), t.tid));
        let hidden = threads.len().saturating_sub(MAX_THREADS);
        for t in threads.into_iter().take(MAX_THREADS) {
            let states = t
                .states
                .iter()
                .map(|(k, v)| format!("{k} {v:.0}%"))
                .collect::<Vec<_>>()
                .join(", ");
            let syscalls = t
                .syscalls
                .iter()
                .map(|(k, v)| format!("{} {v:.0}%", sanitize(k)))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "  thread {} {:?}: {} samples; GIL {:.0}%; state {states}; syscall {syscalls}",
                t.tid,
                sanitize(&t.name),
                t.samples,
                t.gil_pct
            );
            for (leaf, share) in &t.top_leaves {
                let _ = writeln!(out, "      {share:5.1}%  {}", sanitize(leaf));
            }
        }
        if hidden > 0 {
            let _ = writeln!(
                out,
                "  ... and {hidden} more threads (`loopprof inspect --json` lists them all)"
            );
        }
    }
    for w in &o.warnings {
        let _ = writeln!(out, "\nwarning: {}", sanitize(w));
    }
    out
}

/// Renders the diagnosis in one screen: the verdict, then each finding with its call site,
/// what was called, how long it blocked, and the fix.
pub fn diagnosis(d: &Diagnosis) -> String {
    let mut out = String::new();
    let v = &d.verdict;
    let _ = writeln!(out, "{}", sanitize(&v.summary));
    let _ = writeln!(
        out,
        "  loop blocked {:.1}% · busy {:.1}% · GIL wait {:.1}% · CPU-starved {:.1}% · process CPU {:.1}% · worst stall {:.0} ms · {} loop thread{}",
        v.loop_blocked_pct,
        v.loop_busy_pct,
        v.gil_wait_pct,
        v.cpu_starved_pct,
        v.process_cpu_pct,
        v.worst_stall_ms,
        d.loops.len(),
        if d.loops.len() == 1 { "" } else { "s" }
    );
    let _ = writeln!(out, "  {}", sanitize(&d.quality.line()));
    for (i, f) in d.findings.iter().enumerate().take(8) {
        let _ = writeln!(out, "\n{}. [{}] {}", i + 1, f.category, sanitize(&f.title));
        // A garbage collection has no call site of its own (never the line that allocated).
        if let Some(c) = &f.call_site {
            let _ = writeln!(out, "   at {}", sanitize(&wording::site(c)));
        }
        for fact in wording::facts(f) {
            let _ = match fact {
                Fact::Line(src) => writeln!(out, "      {}", sanitize(src)),
                Fact::BlockingCall(b) => writeln!(out, "   calls {}", sanitize(b)),
                Fact::WaitsOn(w) => writeln!(out, "   waits on {}", sanitize(w)),
                Fact::WaitsFor(t) => writeln!(out, "   waits for {}", sanitize(&t)),
                Fact::Route(r) => writeln!(out, "   route {}", sanitize(r)),
                Fact::Endpoint(e) => writeln!(out, "   endpoint {}", sanitize(e)),
                Fact::GilHeldBy(c) => writeln!(
                    out,
                    "   GIL held by thread {:?}{} ({:.0}% of the waits)",
                    sanitize(&c.name),
                    sanitize(&wording::in_function(c.call_site.as_ref())),
                    c.share_pct
                ),
            };
        }
        let state = wording::state(f);
        if let Some(impact) = wording::pool_impact(f) {
            let _ = writeln!(out, "   {}; {}", sanitize(&impact), state);
        } else if f.stalls > 0 {
            let _ = writeln!(
                out,
                "   {} stall{}, {:.0} ms blocked (max {:.0}, p95 {:.0}); {}",
                f.stalls,
                wording::plural(f.stalls),
                f.blocked_ms,
                f.max_stall_ms,
                f.p95_stall_ms,
                state
            );
        } else {
            let _ = writeln!(
                out,
                "   {} short blocks adding up to {:.0} ms ({:.1}% of the window); {}",
                f.short_blocks, f.short_blocked_ms, f.share_pct, state
            );
        }
        let _ = writeln!(out, "   fix: {}", f.fix.summary);
    }
    for (i, f) in d.requests.findings.iter().enumerate().take(8) {
        let p = &f.place;
        let _ = writeln!(
            out,
            "\nrequests {}. [{}] {}",
            i + 1,
            f.category,
            sanitize(&f.title)
        );
        if let Some(c) = &p.site {
            let _ = writeln!(out, "   at {}", sanitize(&wording::site(c)));
            if let Some(src) = &c.source {
                let _ = writeln!(out, "      {}", sanitize(src.trim()));
            }
        }
        if let Some(r) = &p.route {
            let _ = writeln!(out, "   route {}", sanitize(r));
        }
        let _ = writeln!(out, "   waits in {}", sanitize(&p.resource));
        let _ = writeln!(out, "   {}", wording::wait_impact(f));
        let _ = writeln!(out, "   fix: {}", f.fix.summary);
    }
    if d.findings.len() > 8 {
        let _ = writeln!(
            out,
            "\n... and {} more findings in summary.json",
            d.findings.len() - 8
        );
    }
    out
}

/// Renders a `dump`: every thread's stack and state, then the verdict.
pub fn dump(d: &crate::analysis::dump::Dump) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} snapshots over {:.1} s\n", d.snapshots, d.window_s);
    for t in &d.threads {
        let state = match (&t.wait_reason, &t.wait_target) {
            (Some(r), Some(w)) => format!("{} ({r}) on {}", t.state, sanitize(w)),
            (Some(r), None) => format!("{} ({r})", t.state),
            _ => t.state.to_string(),
        };
        let _ = writeln!(
            out,
            "Process {} thread {} {:?}{}: {state} in {}/{} snapshots",
            t.pid,
            t.tid,
            sanitize(&t.name),
            if t.event_loop { " (event loop)" } else { "" },
            t.snapshots,
            t.of
        );
        if let Some(r) = &t.route {
            let _ = writeln!(out, "    serving {}", sanitize(r));
        }
        // The application's frame (the line to look at) is marked, as in the report.
        for (i, f) in t.stack.iter().enumerate() {
            let mark = if t.app_frame == Some(i) {
                "  ▶ "
            } else {
                "    "
            };
            let _ = writeln!(out, "{mark}{}", sanitize(f));
        }
        if let Some(src) = &t.source {
            let _ = writeln!(out, "    > {}", sanitize(src));
        }
        let _ = writeln!(out);
    }
    for tree in &d.tasks {
        task_tree(&mut out, tree);
    }
    let _ = writeln!(out, "{}", sanitize(&d.verdict));
    if !d.waited_for.is_empty() {
        let _ = writeln!(out, "The loop is probably waiting for:");
        for w in &d.waited_for {
            let _ = writeln!(
                out,
                "  thread {:?} ({}) at {}, {} in {}",
                sanitize(&w.name),
                w.tid,
                sanitize(&w.at),
                w.state,
                sanitize(&w.leaf)
            );
        }
    }
    out
}

/// Most tasks printed per tree (the rest are counted).
const MAX_TREE_TASKS: usize = 200;

/// One loop's task tree, as `asyncio pstree` draws it: each task with its state, route and
/// where it waits, its awaited tasks below it.
fn task_tree(out: &mut String, tree: &crate::analysis::tasks::TaskTree) {
    let _ = writeln!(
        out,
        "Process {} asyncio tasks (loop {:#x}, {} task{}{}):",
        tree.pid,
        tree.loop_id,
        tree.tasks,
        if tree.tasks == 1 { "" } else { "s" },
        if tree.unreadable > 0 {
            format!(", {} unreadable", tree.unreadable)
        } else {
            String::new()
        }
    );
    let mut printed = 0;
    for (i, root) in tree.roots.iter().enumerate() {
        task_node(out, root, "", i + 1 == tree.roots.len(), &mut printed);
    }
    if printed < tree.tasks {
        let _ = writeln!(out, "  … {} more", tree.tasks - printed);
    }
    let _ = writeln!(out);
}

fn task_node(
    out: &mut String,
    t: &crate::analysis::tasks::TaskNode,
    prefix: &str,
    last: bool,
    printed: &mut usize,
) {
    if *printed >= MAX_TREE_TASKS {
        return;
    }
    *printed += 1;
    let branch = if last { "└── " } else { "├── " };
    let at = t
        .app_frame
        .and_then(|i| t.stack.get(i))
        .or(t.stack.first())
        .map(|s| format!(" at {}", sanitize(s)))
        .unwrap_or_default();
    let route = t
        .route
        .as_deref()
        .map(|r| format!(" serving {}", sanitize(r)))
        .unwrap_or_default();
    let waits = match (t.state, &t.place) {
        (crate::recording::TaskState::Suspended, Some(p)) => {
            format!(" — {} (`{}`)", sanitize(p), sanitize(&t.resource))
        }
        (crate::recording::TaskState::Suspended, None) => {
            format!(" — waiting in `{}`", sanitize(&t.resource))
        }
        _ => String::new(),
    };
    let state = match t.state {
        crate::recording::TaskState::Created => "created",
        crate::recording::TaskState::Suspended => "suspended",
        crate::recording::TaskState::Running => "running",
    };
    let _ = writeln!(
        out,
        "  {prefix}{branch}{:?} [{state}]{route}{at}{waits}",
        sanitize(&t.name)
    );
    let inner = format!("{prefix}{}", if last { "    " } else { "│   " });
    for (i, c) in t.children.iter().enumerate() {
        task_node(out, c, &inner, i + 1 == t.children.len(), printed);
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// The outcome of `--fail-on` gates, one line each (`gate failed: ...` / `gate passed: ...`).
pub fn gates(results: &[crate::analysis::gates::GateResult]) -> String {
    let mut out = String::new();
    for r in results {
        let _ = writeln!(
            out,
            "gate {}: {} ({})",
            if r.failed { "FAILED" } else { "passed" },
            sanitize(&r.gate),
            sanitize(&r.because)
        );
    }
    out
}

fn site_line(f: &crate::analysis::diff::FindingDiff) -> String {
    let site = match &f.call_site {
        Some(c) => wording::site(c),
        None => "(no application frame)".into(),
    };
    match &f.route {
        Some(r) => format!("{site} · {r}"),
        None => site,
    }
}

/// The diff for the terminal: the summary, the two sides, and every finding's status.
pub fn diff(d: &crate::analysis::diff::Diff) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", sanitize(&d.summary));
    for (label, s) in [("before", &d.before), ("after ", &d.after)] {
        let _ = writeln!(
            out,
            "  {label}: {} · loop blocked {:.1}% · longest stall {:.0} ms · {:.1} stalls/min · process CPU {:.1}% · {:.1} s at {} Hz ({})",
            s.verdict,
            s.loop_blocked_pct,
            s.max_stall_ms,
            s.stalls_per_min,
            s.process_cpu_pct,
            s.duration_s,
            s.rate_hz,
            sanitize(&s.recording)
        );
        let _ = writeln!(out, "          {}", sanitize(&s.quality.line()));
    }
    for c in &d.probes {
        let fig = |p: &Option<crate::analysis::probes::ProbeSummary>| match p {
            Some(p) => format!(
                "p50 {:.0} ms, p99 {:.0} ms, {} timeouts of {}",
                p.p50_ms, p.p99_ms, p.timeouts, p.requests
            ),
            None => "not probed".into(),
        };
        let _ = writeln!(
            out,
            "  probe {}: {} → {}",
            sanitize(&c.path),
            fig(&c.before),
            fig(&c.after)
        );
    }
    for f in &d.findings {
        let _ = writeln!(
            out,
            "\n{:>9}  [{}] {}",
            f.status.name().to_uppercase(),
            f.category,
            sanitize(&site_line(f))
        );
        if let Some(b) = &f.before_call_site {
            let _ = writeln!(
                out,
                "           (was {}:{} in {})",
                sanitize(short_file(&b.file)),
                b.line,
                sanitize(&b.function)
            );
        }
        if let Some(w) = &f.wait_target {
            let _ = writeln!(out, "           waits on {}", sanitize(w));
        }
        let _ = writeln!(out, "           {}", sanitize(&f.why));
    }
    for w in &d.requests {
        let _ = writeln!(out, "\nrequests  {}", sanitize(&wording::wait_diff_line(w)));
    }
    for r in &d.regression_reasons {
        let _ = writeln!(out, "\nregression: {}", sanitize(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::overview::overview as analyse;
    use crate::recording::testing::tiny_recording;

    #[test]
    fn renders_threads_and_strips_control_characters() {
        let text = overview(&analyse(&tiny_recording()));
        assert!(
            text.contains("thread 100 \"MainThread\": 4 samples; GIL 25%"),
            "{text}"
        );
        assert!(
            text.contains("50.0%  rate_limited (app/views.py:12)"),
            "{text}"
        );
        assert_eq!(sanitize("a\u{1b}[2Jb\n"), "a?[2Jb?");
    }
}
