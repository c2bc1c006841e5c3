//! Live test bench: real uvicorn/gunicorn servers on loopback, bounded load, and loopprof runs.
//!
//! Every process started here is put in its own process group and killed (the whole group)
//! when its guard drops, so a failing test leaves nothing behind. Venvs come from
//! `scripts/venv.sh` (the test command creates them); a missing venv is a test failure with
//! the command to fix it, never a skip.
#![allow(dead_code)]

use loopprof::recording::{self, Recording};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv for Python `version` ("3.11", "3.12", ...), created by `scripts/venv.sh`.
pub fn venv(version: &str) -> PathBuf {
    let v = root().join("target/venvs").join(format!("py{version}"));
    assert!(
        v.join("bin/python").exists(),
        "no venv for Python {version} at {}: run `scripts/venv.sh {version}` (scripts/test.sh does this)",
        v.display()
    );
    v
}

/// The loopprof binary under test.
pub fn loopprof() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loopprof"))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A started process; its whole process group is killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Starts `cmd` in a new process group.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.into(),
        }
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the process (not the group).
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Waits for exit up to `timeout`; returns the exit status code if it exited.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 GET over loopback: (status, body). Only 127.0.0.1 is allowed.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    http_request(port, "GET", path, timeout)
}

/// A minimal HTTP/1.0 request with an empty body over loopback: (status, body).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

/// Waits until GET /health answers 200 (bounded).
pub fn wait_healthy(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok((200, _)) = http_get(port, "/health", Duration::from_secs(1)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server on port {port} did not become healthy within {timeout:?}");
}

/// How to serve the fixture app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `uvicorn --loop asyncio`
    UvicornAsyncio,
    /// `uvicorn --loop uvloop`
    UvicornUvloop,
    /// `uvicorn --workers 2` (asyncio loop)
    UvicornWorkers,
    /// `gunicorn -k uvicorn.workers.UvicornWorker -w 2`
    Gunicorn,
}

/// A running fixture server.
pub struct App {
    pub proc: Proc,
    pub port: u16,
    pub python: String,
}

/// The command line that serves the fixture app in `venv` on `port`.
pub fn server_command(kind: Server, venv: &Path, port: u16) -> Vec<String> {
    let bin = |b: &str| venv.join("bin").join(b).to_string_lossy().into_owned();
    let port = port.to_string();
    let mut cmd = match kind {
        Server::Gunicorn => vec![
            bin("gunicorn"),
            "-k".into(),
            "uvicorn.workers.UvicornWorker".into(),
            "-w".into(),
            "2".into(),
            "-b".into(),
            format!("127.0.0.1:{port}"),
            "--graceful-timeout".into(),
            "2".into(),
        ],
        _ => vec![
            bin("uvicorn"),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port,
            "--no-access-log".into(),
        ],
    };
    match kind {
        Server::UvicornAsyncio => cmd.extend(["--loop".into(), "asyncio".into()]),
        Server::UvicornUvloop => cmd.extend(["--loop".into(), "uvloop".into()]),
        Server::UvicornWorkers => cmd.extend([
            "--loop".into(),
            "asyncio".into(),
            "--workers".into(),
            "2".into(),
        ]),
        Server::Gunicorn => {}
    }
    cmd.push("app:app".into());
    cmd
}

/// Starts the fixture app and waits until it is healthy.
pub fn start_app(kind: Server, python: &str, upstream_port: Option<u16>) -> App {
    start_app_with(kind, python, upstream_port, &[])
}

/// Like [`start_app`], with extra environment variables for the app.
pub fn start_app_with(
    kind: Server,
    python: &str,
    upstream_port: Option<u16>,
    env: &[(&str, String)],
) -> App {
    start_module(kind, python, "app:app", upstream_port, env)
}

/// Starts the ASGI app `module` (`gc_app:app`) of `tests/python` and waits until it answers
/// `/health`.
pub fn start_module(
    kind: Server,
    python: &str,
    module: &str,
    upstream_port: Option<u16>,
    env: &[(&str, String)],
) -> App {
    let venv = venv(python);
    let port = free_port();
    let mut cmd = server_command(kind, &venv, port);
    if let Some(last) = cmd.last_mut() {
        *last = module.to_owned();
    }
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .current_dir(root().join("tests/python"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(up) = upstream_port {
        c.env("UPSTREAM_URL", format!("http://127.0.0.1:{up}"));
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let proc = Proc::spawn("server", &mut c);
    wait_healthy(port, Duration::from_secs(30));
    if matches!(kind, Server::UvicornWorkers | Server::Gunicorn) {
        // Both workers must be up: give the second one a moment after the first answers.
        std::thread::sleep(Duration::from_millis(1500));
    }
    App {
        proc,
        port,
        python: python.into(),
    }
}

/// Starts the slow upstream server; returns it and its port.
pub fn start_upstream(python: &str) -> (Proc, u16) {
    let port = free_port();
    let proc = Proc::spawn(
        "upstream",
        Command::new(venv(python).join("bin/python"))
            .arg(root().join("tests/python/upstream.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "upstream did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (proc, port)
}

/// Starts a throwaway Redis server (Debian's redis-server) on loopback; returns it and its
/// port. No persistence, no config file.
pub fn start_redis() -> (Proc, u16) {
    assert!(
        Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok(),
        "redis-server is missing: run scripts/test.sh (it installs Debian's redis-server)"
    );
    let port = free_port();
    let proc = Proc::spawn(
        "redis",
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (proc, port)
}

/// Starts bounded load on `paths` of the app: `concurrency` clients per path, `secs` long.
pub fn start_load(app: &App, paths: &[&str], concurrency: u32, secs: f64) -> Proc {
    start_load_think(app, paths, concurrency, secs, 0)
}

/// Like [`start_load`], each client pausing `think_ms` after every request.
pub fn start_load_think(
    app: &App,
    paths: &[&str],
    concurrency: u32,
    secs: f64,
    think_ms: u32,
) -> Proc {
    start_load_post(app, paths, concurrency, secs, think_ms, 0)
}

/// Like [`start_load_think`], each request a POST of a JSON list of `post_items` items
/// (`{id, name, tags, price}`; 0: GET).
pub fn start_load_post(
    app: &App,
    paths: &[&str],
    concurrency: u32,
    secs: f64,
    think_ms: u32,
    post_items: u32,
) -> Proc {
    let mut c = Command::new(venv(&app.python).join("bin/python"));
    c.arg(root().join("tests/python/load.py"));
    c.args(["--think-ms", &think_ms.to_string()]);
    c.args(["--post-json-items", &post_items.to_string()]);
    for p in paths {
        c.arg("--url")
            .arg(format!("http://127.0.0.1:{}{p}", app.port));
    }
    c.args([
        "--concurrency",
        &concurrency.to_string(),
        "--duration",
        &secs.to_string(),
        "--max-requests",
        "20000",
        "--timeout",
        "10",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    Proc::spawn("load", &mut c)
}

/// A fresh output directory under the target dir.
pub fn out_dir(test: &str) -> PathBuf {
    let d = root().join("target/test-output").join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.parent().unwrap()).unwrap();
    d
}

/// Starts loopprof in the background (output discarded); the caller signals or waits for it.
pub fn spawn_loopprof(args: &[&str]) -> Proc {
    Proc::spawn(
        "loopprof",
        Command::new(loopprof())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// Runs loopprof to completion with a time limit.
pub fn run_loopprof(args: &[&str], limit: Duration) -> Output {
    let mut p = Proc::spawn(
        "loopprof",
        Command::new(loopprof())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let status = p.wait_timeout(limit);
    assert!(
        status.is_some(),
        "loopprof {args:?} did not finish within {limit:?}"
    );
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    p.child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    p.child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status: status.unwrap(),
        stdout,
        stderr,
    }
}

/// Runs `loopprof record --pid PID --duration SECS -o DIR EXTRA...` and returns its output,
/// whatever its exit code (for tests of gates and messages).
pub fn record_output(pid: u32, secs: f64, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "record".to_string(),
        "--pid".into(),
        pid.to_string(),
        "--duration".into(),
        secs.to_string(),
        "-o".into(),
        dir.to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    run_loopprof(&args, Duration::from_secs_f64(secs + 30.0))
}

/// Records `pid` for `secs` into `dir` and loads the recording; panics with loopprof's
/// output when it fails.
pub fn record_pid(pid: u32, secs: f64, dir: &Path, extra: &[&str]) -> Recording {
    let out = record_output(pid, secs, dir, extra);
    assert!(
        out.status.success(),
        "loopprof failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    recording::load(dir).expect("recording loads")
}

/// Stack of a thread sample as `function` names, innermost first.
pub fn names(rec: &Recording, stack: u32) -> Vec<String> {
    rec.stack(stack)
        .map(|f| rec.str(f.name).to_owned())
        .collect()
}

/// Text of the output, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a copy of loopprof as user `nobody` (uid/gid 65534, no groups, no inheritable
/// capabilities) with `args`; `{dir}` in an argument is replaced by a scratch directory that
/// nobody may write. The copy and the directory are removed afterwards.
pub fn run_as_nobody(args: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!(
        "loopprof-nobody-{}-{}",
        std::process::id(),
        NOBODY_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("loopprof");
    std::fs::copy(loopprof(), &bin).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rwx", dir.to_str().unwrap()])
        .status()
        .unwrap();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{dir}", dir.to_str().unwrap()))
        .collect();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&bin)
        .args(&args)
        .output()
        .expect("setpriv runs");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

static NOBODY_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// CPython interpreters of this machine: every pyenv 3.8+ build present, Debian's own
/// `/usr/bin/python3`, and the test venv's 3.11 (always there).
pub fn python_interpreters() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/root/.pyenv/versions") {
        let mut found: Vec<_> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let mut parts = name.split('.');
                parts.next() == Some("3")
                    && parts
                        .next()
                        .and_then(|m| m.parse::<u32>().ok())
                        .is_some_and(|m| m >= 8)
            })
            .map(|p| p.join("bin/python3"))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        out.extend(found);
    }
    if std::path::Path::new("/usr/bin/python3").exists() {
        out.push("/usr/bin/python3".into());
    }
    // The test venv's interpreter is always there (scripts/test.sh creates it).
    out.push(venv("3.11").join("bin/python"));
    out
}

/// Runs the script `tests/python/SCRIPT` with `python` and `args` (stdout piped, stderr
/// discarded) and waits for its first line, which must be `ready_line`.
pub fn spawn_script(python: &Path, script: &str, args: &[&str], ready_line: &str) -> Proc {
    let mut c = Command::new(python);
    c.arg(root().join("tests/python").join(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut p = Proc::spawn(script, &mut c);
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(p.child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        ready_line,
        "{script} on {} did not start",
        python.display()
    );
    p
}
