//! Rendering: one module per output format.
//!
//! [`text`] renders for the terminal (recording overview, diagnosis); [`json`] writes the
//! versioned `summary.json`; [`flamegraph`] draws interactive SVG flame graphs; [`html`]
//! renders the self-contained `report.html` (with the [`timeline`]); [`markdown`] writes
//! `report.md` for tickets.

pub mod flamegraph;
pub mod html;
pub mod json;
pub mod markdown;
pub mod text;
pub mod timeline;
