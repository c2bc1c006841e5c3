//! The recording: the versioned, gzip-compressed JSON Lines file between capture and analysis.
//!
//! [`format`] holds the wire types, [`writer`] interns strings/frames/stacks and streams
//! records out (flushing regularly so that a killed recorder leaves a readable prefix), and
//! [`reader`] streams records back, stopping with a warning at the first incomplete record of
//! a file that was cut short. [`Recording`] is a fully loaded, resolved recording for analysis.
//! The format is documented in `docs/recording-format.md`.

pub mod cmdline;
pub mod derived;
pub mod format;
pub mod frames;
pub mod import;
pub mod outdir;
pub mod reader;
pub mod testing;
pub mod writer;

pub use format::*;
pub use reader::{load, load_from, Recording, RecordingReader};
pub use writer::{RawFrame, RawTask, RawThread, RecordingWriter, TickMeta};

use std::path::PathBuf;

/// The file name of the recording inside an output directory.
pub const RECORDING_FILE: &str = "recording.jsonl.gz";

/// Errors of reading or writing a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The file could not be opened or created.
    #[error("cannot open {path}: {source}. Check the path exists and you may read/write it.")]
    Open {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The output directory or file cannot be created safely.
    #[error(transparent)]
    Output(#[from] outdir::OutputError),
    /// Writing failed (disk full, file removed...).
    #[error("cannot write the recording: {0}. Check free disk space and the output directory.")]
    Write(#[source] std::io::Error),
    /// The file is not a loopprof recording.
    #[error("{path} is not a loopprof recording ({why}). Pass the recording.jsonl.gz written by `loopprof record`, or its output directory.")]
    NotARecording {
        /// The path.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The file is from a newer, incompatible format.
    #[error("{path} uses recording format version {found}, this loopprof reads version {supported}. Upgrade loopprof.")]
    Version {
        /// The path.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A record refers to an id that was never defined.
    #[error("corrupt recording {path}: {why}")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
}
