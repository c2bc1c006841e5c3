//! Rendering: one module per output format.
//!
//! [`text`] renders for the terminal (recording overview, diagnosis); [`json`] writes the
//! versioned `summary.json`; [`flamegraph`] draws interactive SVG flame graphs; [`html`]
//! renders the self-contained `report.html` (with the [`timeline`]); [`markdown`] writes
//! `report.md` for tickets.

pub mod chrome_trace;
pub mod flamegraph;
pub mod glossary;
pub mod html;
pub mod json;
pub mod markdown;
pub mod output;
pub mod palette;
pub mod pprof;
pub mod speedscope;
pub mod text;
pub mod timeline;
pub mod verify;
pub mod wording;

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
    /// An output could not be written (a full disk, a closed pipe).
    #[error("writing an output: {0}")]
    Write(#[source] std::io::Error),
    /// inferno could not draw a flame graph.
    #[error("drawing a flame graph: {0}. This is a bug in loopprof; please report it with the recording.")]
    FlameGraph(String),
}
