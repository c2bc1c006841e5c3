//! Source lines of sampled frames, read once per distinct (file, line).
//!
//! Files are read through `/proc/<pid>/root/<file>` so paths inside a container resolve to
//! the container's files; a file is read at most once (size-capped) and unreadable or
//! pseudo files (`<frozen ...>`, `<string>`) are remembered as missing.

use std::collections::HashMap;

const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Lines recorded before and after the line of an application frame.
pub const CONTEXT_LINES: i32 = 3;
const MAX_LINE_CHARS: usize = 400;

/// Caches the lines of every source file read so far.
#[derive(Default)]
pub struct SourceCache {
    files: HashMap<String, Option<Vec<String>>>,
    given: std::collections::HashSet<(String, i32)>,
}

impl SourceCache {
    /// Like [`SourceCache::line`], but each (file, line) is returned only the first time.
    pub fn line_once(&mut self, pid: u32, file: &str, line: i32) -> Option<String> {
        if !self.given.insert((file.to_owned(), line)) {
            return None;
        }
        self.line(pid, file, line)
    }

    /// The text of `line` (1-based) of `file` as process `pid` sees it, trimmed of its newline
    /// and capped in length; `None` when unreadable.
    pub fn line(&mut self, pid: u32, file: &str, line: i32) -> Option<String> {
        if line <= 0 {
            return None;
        }
        let lines = self
            .files
            .entry(file.to_owned())
            .or_insert_with(|| read_lines(pid, file))
            .as_ref()?;
        let text = lines.get(line as usize - 1)?;
        Some(if text.chars().count() > MAX_LINE_CHARS {
            text.chars().take(MAX_LINE_CHARS).collect()
        } else {
            text.clone()
        })
    }
}

fn read_lines(pid: u32, file: &str) -> Option<Vec<String>> {
    if !file.starts_with('/') {
        return None;
    }
    let via_root = format!("/proc/{pid}/root{file}");
    let path = if std::path::Path::new(&via_root).exists() {
        via_root
    } else {
        file.to_owned()
    };
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
    Some(
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_through_proc_root_and_remembers_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.py");
        std::fs::write(&f, "import time\n    time.sleep(1)\r\n").unwrap();
        let mut c = SourceCache::default();
        let me = std::process::id();
        let file = f.to_str().unwrap();
        assert_eq!(c.line(me, file, 2).as_deref(), Some("    time.sleep(1)"));
        assert_eq!(c.line(me, file, 3), None);
        assert_eq!(c.line(me, "<frozen runpy>", 1), None);
        assert_eq!(c.line(me, "/nonexistent/x.py", 1), None);
    }
}
