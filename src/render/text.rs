//! Plain-text rendering of a recording [`Overview`] for the terminal.
//!
//! Target-controlled strings (command lines, thread and function names) are printed with
//! control characters replaced, so a hostile name cannot move the cursor or clear the screen.

use crate::analysis::overview::Overview;
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

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
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
