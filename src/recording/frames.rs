//! What a frame is: its dotted module, and whether it is application code.
//!
//! Decided from the absolute file name py-spy reports, never from line numbers (they differ
//! between Python versions): files under `lib/pythonX.Y/` are the standard library, files under
//! `site-packages`/`dist-packages` are third-party, scripts in a `bin/` directory are entry
//! points, `<frozen ...>`/`<string>` are interpreter internals, and everything else is the
//! application.

/// Where a frame's code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The standard library.
    Stdlib,
    /// A third-party package (site-packages / dist-packages).
    Library,
    /// An entry-point script (`venv/bin/uvicorn`) or interpreter-internal code.
    Entry,
    /// The application's own code.
    App,
}

/// Classifies a file name.
pub fn origin(file: &str) -> Origin {
    if file.starts_with('<') {
        return Origin::Entry;
    }
    if file.contains("/site-packages/") || file.contains("/dist-packages/") {
        return Origin::Library;
    }
    if stdlib_relative(file).is_some() {
        return Origin::Stdlib;
    }
    // Entry scripts: a file without .py suffix in a bin/ directory (venv/bin/uvicorn).
    if let Some((dir, name)) = file.rsplit_once('/') {
        if dir.ends_with("/bin") && !name.ends_with(".py") {
            return Origin::Entry;
        }
    }
    Origin::App
}

/// The part of a standard-library path after `lib/pythonX.Y/`.
fn stdlib_relative(file: &str) -> Option<&str> {
    let idx = file.find("/lib/python")?;
    let rest = &file[idx + "/lib/python".len()..];
    // Version digits like "3.11" then "/".
    let slash = rest.find('/')?;
    let version = &rest[..slash];
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    Some(&rest[slash + 1..])
}

/// The dotted module path of a file: `requests.api`, `concurrent.futures.thread`,
/// `asyncio.base_events`, `posixpath` (from `<frozen posixpath>`), or the file stem for
/// application files (`stream` for `/srv/app/api/routes/stream.py`).
pub fn module(file: &str) -> String {
    if let Some(inner) = file
        .strip_prefix("<frozen ")
        .and_then(|s| s.strip_suffix('>'))
    {
        return inner.to_owned();
    }
    let rel = if let Some(i) = file.rfind("/site-packages/") {
        &file[i + "/site-packages/".len()..]
    } else if let Some(i) = file.rfind("/dist-packages/") {
        &file[i + "/dist-packages/".len()..]
    } else if let Some(r) = stdlib_relative(file) {
        r
    } else {
        file.rsplit('/').next().unwrap_or(file)
    };
    let rel = rel.strip_suffix(".py").unwrap_or(rel);
    let rel = rel.strip_suffix("/__init__").unwrap_or(rel);
    rel.replace('/', ".")
}

/// True when `module` is `prefix` or inside it (`requests.api` is in `requests`).
pub fn module_in(module: &str, prefix: &str) -> bool {
    module == prefix
        || (module.len() > prefix.len()
            && module.starts_with(prefix)
            && module.as_bytes()[prefix.len()] == b'.')
}

/// Matches a function name pattern with `*` wildcards against a qualified name. A pattern
/// with a class (`Popen.wait`) also matches the bare name Python ≤ 3.10 reports (`wait`).
pub fn function_matches(pattern: &str, qualname: &str) -> bool {
    if glob(pattern, qualname) {
        return true;
    }
    if !qualname.contains('.') {
        if let Some((_, last)) = pattern.rsplit_once('.') {
            return glob(last, qualname);
        }
    }
    false
}

/// `*`-only glob matching.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
}

/// A file name shortened for display: the last two path components.
pub fn short_file(path: &str) -> &str {
    let mut it = path.rsplitn(3, '/');
    let last = it.next().unwrap_or(path);
    match it.next() {
        Some(dir) => &path[path.len() - last.len() - dir.len() - 1..],
        None => last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_files() {
        assert_eq!(
            origin("/usr/lib/python3.11/asyncio/base_events.py"),
            Origin::Stdlib
        );
        assert_eq!(
            origin("/root/.pyenv/versions/3.12.1/lib/python3.12/threading.py"),
            Origin::Stdlib
        );
        assert_eq!(
            origin("/srv/venv/lib/python3.11/site-packages/requests/api.py"),
            Origin::Library
        );
        assert_eq!(
            origin("/usr/lib/python3/dist-packages/redis/client.py"),
            Origin::Library
        );
        assert_eq!(origin("/srv/venv/bin/uvicorn"), Origin::Entry);
        assert_eq!(origin("<frozen runpy>"), Origin::Entry);
        assert_eq!(origin("/srv/app/api/routes/stream.py"), Origin::App);
        assert_eq!(origin("/home/me/lib/pythonista/app.py"), Origin::App);
    }

    #[test]
    fn derives_modules() {
        assert_eq!(
            module("/v/lib/python3.11/site-packages/requests/api.py"),
            "requests.api"
        );
        assert_eq!(
            module("/v/lib/python3.11/site-packages/httpx/__init__.py"),
            "httpx"
        );
        assert_eq!(
            module("/usr/lib/python3.11/concurrent/futures/thread.py"),
            "concurrent.futures.thread"
        );
        assert_eq!(module("/usr/lib/python3.13/subprocess.py"), "subprocess");
        assert_eq!(module("<frozen posixpath>"), "posixpath");
        assert_eq!(module("/srv/app/stream.py"), "stream");
        assert!(module_in("requests.api", "requests"));
        assert!(!module_in("requests_toolbelt.x", "requests"));
        assert!(module_in("redis", "redis"));
    }

    #[test]
    fn matches_functions_across_python_versions() {
        assert!(function_matches("Popen.wait", "Popen.wait"));
        assert!(
            function_matches("Popen.wait", "wait"),
            "3.10 reports bare names"
        );
        assert!(!function_matches("Popen.wait", "Event.wait"));
        assert!(function_matches("*", "anything"));
        assert!(function_matches("Client.*", "Client.get"));
        assert!(!function_matches("Client.*", "AsyncClient.get"));
        assert!(function_matches("*.select", "EpollSelector.select"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }
}
