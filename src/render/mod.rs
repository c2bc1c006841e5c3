//! Rendering: one module per output format.
//!
//! [`text`] renders the recording overview for the terminal.

pub mod text;
