//! Analysis: pure functions over a loaded [`crate::recording::Recording`]; no I/O.
//!
//! [`overview`] summarises what was recorded per process and thread (sample counts, achieved
//! rate, stop time, CPU, OS states, syscalls, GIL ownership, most frequent leaf frames).

pub mod overview;
