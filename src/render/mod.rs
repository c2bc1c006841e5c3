//! Rendering: one module per output format.
//!
//! [`text`] renders for the terminal (recording overview, diagnosis); [`json`] writes the
//! versioned `summary.json`; [`flamegraph`] draws interactive SVG flame graphs.

pub mod flamegraph;
pub mod json;
pub mod text;
