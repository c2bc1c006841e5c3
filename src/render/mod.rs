//! Rendering: one module per output format.
//!
//! [`text`] renders for the terminal (recording overview, diagnosis); [`json`] writes the
//! versioned `summary.json`; [`flamegraph`] draws interactive SVG flame graphs; [`html`]
//! renders the self-contained `report.html` (with the [`timeline`]); [`markdown`] writes
//! `report.md` for tickets.

pub mod flamegraph;
pub mod glossary;
pub mod html;
pub mod json;
pub mod markdown;
pub mod text;
pub mod timeline;
pub mod verify;

use crate::analysis::diagnose::{Finding, WaitedThread};

/// A report that could not be rendered: a bug in loopprof or a dependency, never the user's
/// input (target strings are escaped, not rejected). The CLI exits 1 on it.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A handlebars template failed.
    #[error("rendering {file}: {source}. This is a bug in loopprof; please report it with the recording.")]
    Template {
        /// The file being rendered (`report.html`).
        file: &'static str,
        /// handlebars's error.
        source: Box<handlebars::RenderError>,
    },
    /// inferno could not draw a flame graph.
    #[error("drawing a flame graph: {0}. This is a bug in loopprof; please report it with the recording.")]
    FlameGraph(String),
}

/// The impact line of a saturated worker-pool finding (its figures are saturation episodes,
/// not loop stalls); `None` for other findings.
pub fn pool_impact(f: &Finding) -> Option<String> {
    (f.kind == crate::analysis::diagnose::FindingKind::PoolSaturated).then(|| {
        format!(
            "all of {} busy for {:.0} ms ({:.1}% of the time) in {} episode{}, longest {:.0} ms",
            f.thread,
            f.blocked_ms,
            f.share_pct,
            f.stalls,
            if f.stalls == 1 { "" } else { "s" },
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
        crate::recording::frames::short_file(&t.call_site.file),
        t.call_site.line,
        t.state,
        t.wait_target
            .as_deref()
            .map(|w| format!(" on {w}"))
            .unwrap_or_default(),
        t.share_pct
    )
}
