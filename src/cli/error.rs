//! The one error type of the command line and its one mapping to exit codes ([`super::exit`]).
//!
//! Each stage's error keeps its own fix-it message; this type only says which stage failed,
//! adds the context the stage could not know (which input), and decides the exit code.

use super::exit;
use crate::capture::CaptureError;
use crate::recording::{outdir::OutputError, RecordingError};
use crate::render::RenderError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad command-line usage found after parsing (clap reports its own): exit 2.
    #[error("{0}")]
    Usage(String),
    /// Recording a live target failed: exit 3, 4, 5 or 2 ([`capture_exit_code`]).
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// An input recording cannot be read: exit 5.
    #[error(transparent)]
    Input(#[from] RecordingError),
    /// One of two input recordings (`diff`) cannot be read: exit 5.
    #[error("loading {label} ({path}): {source}")]
    InputOf {
        /// `BEFORE` or `AFTER`.
        label: &'static str,
        /// The path given.
        path: String,
        /// Why.
        source: RecordingError,
    },
    /// An output file or directory cannot be written: exit 5.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A temporary directory cannot be created: exit 5.
    #[error("cannot create a temporary directory in {dir}: {source}. Set TMPDIR to a writable directory.")]
    TempDir {
        /// The temporary directory tried.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// An output could not be rendered (a bug, not the user's input): exit 1.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// `record`: the recording was written but the report could not be.
    #[error("the recording is saved but could not be analysed: {0}")]
    Unanalysed(#[source] Box<CliError>),
}

/// A private, unpredictable temporary directory (mkdtemp), removed when dropped.
pub fn private_temp_dir(prefix: &str) -> Result<tempfile::TempDir, CliError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| CliError::TempDir {
            dir: std::env::temp_dir().display().to_string(),
            source,
        })
}

impl CliError {
    /// The documented exit code of this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Capture(e) => capture_exit_code(e),
            CliError::Input(_)
            | CliError::InputOf { .. }
            | CliError::Output(_)
            | CliError::TempDir { .. } => exit::IO,
            CliError::Render(_) => exit::ERROR,
            CliError::Unanalysed(inner) => inner.exit_code(),
        }
    }
}

/// The exit code for a capture error.
pub fn capture_exit_code(e: &CaptureError) -> i32 {
    match e {
        CaptureError::PermissionDenied { .. } | CaptureError::AlreadyTraced { .. } => {
            exit::PERMISSION
        }
        CaptureError::Output { .. } | CaptureError::Recording(_) => exit::IO,
        CaptureError::BadPattern { .. } | CaptureError::EmptyCommand => exit::USAGE,
        _ => exit::TARGET,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_maps_to_its_documented_code() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), exit::USAGE);
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            CliError::Input(RecordingError::Write(io())).exit_code(),
            exit::IO
        );
        assert_eq!(
            CliError::Capture(CaptureError::NoSuchProcess { pid: 1 }).exit_code(),
            exit::TARGET
        );
        assert_eq!(
            CliError::Capture(CaptureError::EmptyCommand).exit_code(),
            exit::USAGE
        );
        assert_eq!(
            CliError::Render(RenderError::FlameGraph("x".into())).exit_code(),
            exit::ERROR,
            "a render failure is a bug, not I/O"
        );
        assert_eq!(
            CliError::Unanalysed(Box::new(CliError::Input(RecordingError::Write(io()))))
                .exit_code(),
            exit::IO
        );
    }
}
