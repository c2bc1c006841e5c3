//! Analysis: pure functions over a loaded [`crate::recording::Recording`]; no I/O.
//!
//! [`overview`] summarises what was recorded per process and thread. The diagnosis finds the
//! event-loop threads and classifies their samples ([`loops`]), names code by module and origin
//! ([`frames`]), groups busy samples into stalls and findings and gives the verdict
//! ([`diagnose`]), and maps each call site to a fix with the [`catalog`] (data in
//! `catalog.json`). [`diff`] compares two diagnoses, and [`gates`] evaluates `--fail-on`
//! expressions on either. [`pools`] finds exhausted worker-thread pools. [`memo`] caches per-file and per-stack facts on the recording.

pub mod catalog;
pub mod diagnose;
pub mod diff;
pub mod dump;
pub mod gates;
pub mod loops;
pub mod memo;
pub mod overview;
pub mod pools;
pub mod probes;
pub mod quality;
pub mod stats;
pub mod tasks;
