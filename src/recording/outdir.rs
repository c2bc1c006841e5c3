//! Output directories and files, created so that nobody else can redirect them.
//!
//! loopprof often runs as root in a shared directory (`/tmp`, a project checkout), under a
//! predictable default name (`loopprof-YYYYmmdd-HHMMSS`). So:
//! * the output directory is created with `mkdir` (mode 0700), never through an existing
//!   symbolic link; an existing path is used only when it is a real directory owned by the
//!   user running loopprof, and never when loopprof chose the name itself ([`DirPolicy`]);
//! * the recording is created with create-new semantics (`O_CREAT | O_EXCL | O_NOFOLLOW`,
//!   mode 0600): a planted file or symlink makes it fail instead of being written through;
//! * every other output is written to a new temporary file in the same directory (mode 0600)
//!   and renamed over its final name only when complete, so a planted symlink is replaced,
//!   never followed, and a failed write (a full disk) never leaves a truncated file behind;
//! * run through `sudo`, what loopprof creates is handed to the invoking user (`SUDO_UID` /
//!   `SUDO_GID`), who can then open the report without root.
//!
//! docs/permissions.md states these rules.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Whether an output directory may already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirPolicy {
    /// loopprof chose the (predictable) name: the directory must not exist yet.
    New,
    /// The user named it: an existing real directory owned by the user is used.
    Named,
}

/// Errors of creating outputs, each saying how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The path is a symbolic link.
    #[error("{path} is a symbolic link; loopprof never writes through one. Choose another directory with -o DIR.")]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// The path exists but is not a directory.
    #[error("{path} exists and is not a directory. Choose another with -o DIR.")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The directory belongs to another user.
    #[error("{path} belongs to uid {owner}, not to you (uid {me}); loopprof writes only into its own directories. Choose another with -o DIR.")]
    NotOwned {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The user loopprof runs as.
        me: u32,
    },
    /// loopprof chose the name, and something already has it.
    #[error("{path} already exists (loopprof's default output name was taken before it could create it). Choose a directory with -o DIR.")]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// The directory cannot be created.
    #[error("cannot create output directory {path}: {source}. Choose another with -o DIR.")]
    CreateDir {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The output path names a device, pipe, socket or directory.
    #[error("{path} exists and is not a regular file (a device, pipe, socket or directory); loopprof replaces only regular files. Choose another file name (or write to stdout and redirect it).")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// An I/O error.
    #[error("cannot write {path}: {source}. Check free disk space and that you may write there.")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The user that ran `sudo loopprof`, when loopprof runs as root through sudo.
fn invoker() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |k: &str| std::env::var(k).ok()?.parse::<u32>().ok();
    Some((id("SUDO_UID")?, id("SUDO_GID")?)).filter(|(u, _)| *u != 0)
}

/// Hands a file or directory loopprof just created to the sudo invoker (no-op otherwise).
fn hand_over(file: &File) {
    if let Some((uid, gid)) = invoker() {
        let _ = std::os::unix::fs::fchown(file, Some(uid), Some(gid));
    }
}

/// Checks, without creating anything, that [`prepare_dir`] would accept `path`: an existing
/// path must pass the same checks; a missing one is accepted (its creation can still fail).
/// Lets a command refuse a bad output directory before it starts work, and create it only
/// once there is something to put in it.
pub fn check_dir(path: &Path, policy: DirPolicy) -> Result<(), OutputError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
        Ok(meta) => check_existing(path, &meta, policy),
    }
}

/// The checks on an existing output path.
fn check_existing(
    path: &Path,
    meta: &std::fs::Metadata,
    policy: DirPolicy,
) -> Result<(), OutputError> {
    if meta.file_type().is_symlink() {
        return Err(OutputError::Symlink {
            path: path.to_path_buf(),
        });
    }
    if !meta.is_dir() {
        return Err(OutputError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    if policy == DirPolicy::New {
        return Err(OutputError::Exists {
            path: path.to_path_buf(),
        });
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let owner = meta.uid();
    if owner != me && invoker().map(|(u, _)| u) != Some(owner) {
        return Err(OutputError::NotOwned {
            path: path.to_path_buf(),
            owner,
            me,
        });
    }
    Ok(())
}

/// Creates directory `path` (its missing parents too) or checks an existing one against
/// `policy`. Errors: [`OutputError`] naming the path and what to do.
pub fn prepare_dir(path: &Path, policy: DirPolicy) -> Result<(), OutputError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::create_dir_all(parent).map_err(|source| OutputError::CreateDir {
                path: path.to_path_buf(),
                source,
            })?;
        }
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {
            if let Ok(d) = File::open(path) {
                hand_over(&d);
            }
            return Ok(());
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(OutputError::CreateDir {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    check_existing(path, &meta, policy)
}

/// Creates `path` for writing; fails if anything (a file, a symlink) already has the name.
pub fn create_new(path: &Path) -> Result<File, OutputError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io(path))?;
    hand_over(&f);
    Ok(f)
}

/// Writes `bytes` as `dir/name`: into a new temporary file in `dir`, renamed over the name
/// once complete (replacing a file or symlink of that name, never writing through it).
/// Returns the final path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, OutputError> {
    let path = dir.join(name);
    // The file is replaced by a rename: never over a device (`-o /dev/null` would turn the
    // host's /dev/null into a regular file), a pipe, a socket or a directory. A symbolic
    // link is replaced, never followed.
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_file() && !meta.file_type().is_symlink() {
            return Err(OutputError::NotAFile { path });
        }
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(&path))?;
    tmp.write_all(bytes).map_err(io(&path))?;
    tmp.as_file().sync_data().map_err(io(&path))?;
    hand_over(tmp.as_file());
    tmp.persist(&path).map_err(|e| io(&path)(e.error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_or_pipe_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(matches!(
            write_file(dir.path(), "fifo", b"x"),
            Err(OutputError::NotAFile { .. })
        ));
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        assert!(matches!(
            write_file(Path::new("/dev"), "null", b"x"),
            Err(OutputError::NotAFile { .. })
        ));
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(matches!(
            write_file(dir.path(), "sub", b"x"),
            Err(OutputError::NotAFile { .. })
        ));
        write_file(dir.path(), "plain", b"x").unwrap();
        write_file(dir.path(), "plain", b"y").unwrap();
        assert_eq!(std::fs::read(dir.path().join("plain")).unwrap(), b"y");
    }

    #[test]
    fn a_symlinked_or_taken_directory_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let link = base.path().join("loopprof-20261130-120000");
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
        for policy in [DirPolicy::New, DirPolicy::Named] {
            assert!(matches!(
                prepare_dir(&link, policy),
                Err(OutputError::Symlink { .. })
            ));
        }
        let taken = base.path().join("taken");
        std::fs::create_dir(&taken).unwrap();
        assert!(matches!(
            prepare_dir(&taken, DirPolicy::New),
            Err(OutputError::Exists { .. })
        ));
        prepare_dir(&taken, DirPolicy::Named).expect("an own directory the user named");
        let file = base.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            prepare_dir(&file, DirPolicy::Named),
            Err(OutputError::NotADirectory { .. })
        ));
        let fresh = base.path().join("a/b/out");
        prepare_dir(&fresh, DirPolicy::New).unwrap();
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().mode() & 0o777,
            0o700,
            "created private"
        );
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // only root can make a directory owned by someone else
        }
        let base = tempfile::tempdir().unwrap();
        let theirs = base.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        assert!(matches!(
            prepare_dir(&theirs, DirPolicy::Named),
            Err(OutputError::NotOwned { owner: 65534, .. })
        ));
    }

    #[test]
    fn files_never_write_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let planted = dir.path().join("report.html");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let rec = dir.path().join("recording.jsonl.gz");
        std::os::unix::fs::symlink(&victim, &rec).unwrap();

        assert!(
            create_new(&rec).is_err(),
            "create-new refuses a planted name"
        );
        let written = write_file(dir.path(), "report.html", b"<html>").unwrap();
        assert_eq!(written, planted);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!std::fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&planted).unwrap(), b"<html>");
        assert_eq!(std::fs::metadata(&planted).unwrap().mode() & 0o777, 0o600);
        // Rewriting replaces; no temporary file is left.
        write_file(dir.path(), "report.html", b"<html>2").unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}
