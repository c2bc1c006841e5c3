//! loopprof: find what blocks the asyncio event loop of a running uvicorn/gunicorn server.
//!
//! The crate is a pipeline whose modules are its stages:
//! [`capture`] (a live process tree → samples) → [`recording`] (the versioned file between
//! capture and everything else) → [`analysis`] (pure functions over a recording) →
//! [`render`] (one module per output format). [`cli`] turns command-line arguments into the
//! plain option structs each stage takes; `main.rs` only calls [`cli::main`].

pub mod analysis;
pub mod capture;
pub mod cli;
pub mod fuzz_targets;
pub mod recording;
pub mod render;

/// The version of loopprof, as written into recordings.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version of the py-spy crate loopprof reads stacks with (kept in step with Cargo.toml).
pub const PY_SPY_VERSION: &str = "0.4.3";
