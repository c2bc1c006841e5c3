//! Printing: `out!` writes a line on stdout, `err!` on stderr. A closed stdout
//! (`loopprof report DIR | head -1`) is a normal end, as in ripgrep: later output is dropped
//! quietly and the exit code stays the one the command earned (every file is written before
//! anything is printed).

use std::sync::atomic::{AtomicBool, Ordering};

/// Prints one line on stdout; see the module documentation.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::print_line(format_args!($($arg)*))
    };
}

/// Prints one line on stderr, ignoring errors (a closed stderr must not panic).
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether writing to stdout failed other than by a closed pipe (a full disk behind a
/// redirection, a closed descriptor): the command then exits 5, its output being incomplete.
pub fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}

/// Records a failed write to stdout; a closed pipe (`| head`) is a normal end.
pub fn stdout_error(e: &std::io::Error) {
    STDOUT_CLOSED.store(true, Ordering::Relaxed);
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        STDOUT_FAILED.store(true, Ordering::Relaxed);
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "loopprof: cannot write to stdout: {e}");
    }
}

/// Writes `args` and a newline to stdout; see [`out!`]. Other write errors are reported once
/// on stderr.
pub fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let r = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = r {
        stdout_error(&e);
    }
}
