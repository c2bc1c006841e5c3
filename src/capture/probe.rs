//! `--probe URL`: while recording, GET a URL every 200 ms with a timeout, like the runbook's
//! `curl -m 5 /health` — the user-visible proof that a blocked loop stops answering.
//!
//! A minimal HTTP/1.1 client over a plain TCP socket (`http://` only), one thread per URL.
//! Each result (latency, status, or timeout/error) goes to the writer as a `probe` record.

use crate::recording::{ProbeResult, PROBE_TIMEOUT};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time between probe requests.
pub const INTERVAL: Duration = Duration::from_millis(200);

/// A parsed `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUrl {
    /// The URL as given.
    pub url: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query.
    pub path: String,
}

/// Parses a probe URL; only `http://` is supported (no TLS), with a clear message otherwise.
pub fn parse(url: &str) -> Result<ProbeUrl, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("--probe {url:?}: only http:// URLs are supported (probe the server's plain HTTP port, e.g. http://127.0.0.1:8000/health)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("--probe {url:?}: bad port {p:?}"))?,
        ),
        _ => (authority, 80),
    };
    if host.is_empty() || path.contains(['\r', '\n', ' ']) {
        return Err(format!("--probe {url:?}: not a valid http URL"));
    }
    Ok(ProbeUrl {
        url: url.to_owned(),
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        path: path.to_owned(),
    })
}

fn get(u: &ProbeUrl, timeout: Duration) -> (Option<u16>, Option<String>) {
    let deadline = Instant::now() + timeout;
    let addr = match (u.host.as_str(), u.port)
        .to_socket_addrs()
        .map(|mut a| a.next())
    {
        Ok(Some(a)) => a,
        _ => return (None, Some(format!("cannot resolve {}", u.host))),
    };
    let left = |d: Instant| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s = match TcpStream::connect_timeout(&addr, left(deadline)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            return (None, Some(PROBE_TIMEOUT.into()))
        }
        Err(e) => return (None, Some(e.to_string())),
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: loopprof-probe\r\nConnection: close\r\n\r\n",
        u.path, u.host, u.port
    );
    let _ = s.set_write_timeout(Some(left(deadline)));
    if let Err(e) = s.write_all(req.as_bytes()) {
        return (None, Some(e.to_string()));
    }
    // Read until the status line is complete.
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    loop {
        let _ = s.set_read_timeout(Some(left(deadline)));
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (None, Some(PROBE_TIMEOUT.into()))
            }
            Err(e) => return (None, Some(e.to_string())),
        }
    }
    let status = std::str::from_utf8(&got)
        .ok()
        .and_then(|t| t.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok());
    match status {
        Some(code) => (Some(code), None),
        None => (None, Some("no HTTP response".into())),
    }
}

/// Probes `url` every [`INTERVAL`] until `stop`, sending each result to `tx`.
pub fn run(
    url: ProbeUrl,
    timeout: Duration,
    start: Instant,
    stop: Arc<AtomicBool>,
    tx: Sender<ProbeResult>,
) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next = now + INTERVAL;
        let t_us = start.elapsed().as_micros() as u64;
        let sent = Instant::now();
        let (status, error) = get(&url, timeout);
        let latency_ms = sent.elapsed().as_secs_f64() * 1000.0;
        if tx
            .send(ProbeResult {
                t_us,
                url: url.url.clone(),
                latency_ms: (latency_ms * 10.0).round() / 10.0,
                status,
                error,
            })
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls_and_refuses_others() {
        let u = parse("http://127.0.0.1:8000/health?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8000, "/health?x=1")
        );
        let u = parse("http://localhost").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert!(parse("https://example.com/")
            .unwrap_err()
            .contains("only http://"));
        assert!(parse("http://h:notaport/").is_err());
    }

    #[test]
    fn measures_a_real_local_server_and_times_out_on_a_silent_one() {
        use std::net::TcpListener;
        let answering = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = answering.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut c in answering.incoming().flatten().take(1) {
                let mut b = [0u8; 256];
                let _ = c.read(&mut b);
                let _ = c.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
            }
        });
        let u = parse(&format!("http://127.0.0.1:{port}/health")).unwrap();
        assert_eq!(get(&u, Duration::from_secs(2)), (Some(204), None));
        // Accepts (backlog) but never answers: a hung server.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let u = parse(&format!(
            "http://127.0.0.1:{}/",
            silent.local_addr().unwrap().port()
        ))
        .unwrap();
        let t = Instant::now();
        assert_eq!(
            get(&u, Duration::from_millis(300)),
            (None, Some(PROBE_TIMEOUT.into()))
        );
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
