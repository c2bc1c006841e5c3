#!/usr/bin/env python3
"""Bounded loopback HTTP load generator for loopprof's tests and demo.

Stdlib only (threads + http.client), runs on any Python 3.6+.

    load.py --url http://127.0.0.1:8000/health [--url ...] --concurrency 4 \
            --duration 10 [--max-requests 1000] [--timeout 10] \
            [--disconnect-after-first-chunk] [--json]

* Only http://127.0.0.1 / http://localhost URLs are accepted.
* --concurrency N starts N worker threads *per --url*; each sends requests
  back to back (keep-alive) until --duration seconds have passed or
  --max-requests (total over all URLs) have been started.
* --disconnect-after-first-chunk: each request uses a fresh connection, reads
  the status line, headers and the first body chunk, then closes the socket
  (a client going away mid-stream, e.g. an SSE consumer). Latency is then
  time to first chunk.
* A request in flight at the deadline may take up to --timeout more; the
  process always finishes within duration + timeout + 2 s (or soon after
  SIGTERM/SIGINT).
* At the end one JSON line is printed on stdout:
  {"requests", "errors", "timeouts", "p50_ms", "p99_ms", "max_ms", "rps",
   "elapsed_s", "status", "per_url"}. Without --json a human-readable
  summary is also printed on stderr.
"""

import argparse
import http.client
import json
import signal
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

ALLOWED_HOSTS = ("127.0.0.1", "localhost")


class Target(object):
    def __init__(self, url):
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError("only http:// URLs are supported: %r" % url)
        if parts.hostname not in ALLOWED_HOSTS:
            raise ValueError(
                "refusing non-loopback host %r (allowed: %s)" % (parts.hostname, ", ".join(ALLOWED_HOSTS))
            )
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path or "/"
        if parts.query:
            self.path += "?" + parts.query


class Results(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []
        self.requests = 0
        self.errors = 0
        self.timeouts = 0
        self.status = {}
        self.per_url = {}
        self.started = 0

    def claim(self, max_requests):
        """Reserve one request slot; False once --max-requests is reached."""
        with self.lock:
            if max_requests and self.started >= max_requests:
                return False
            self.started += 1
            return True

    def add(self, url, latency_s, status=None, error=False, timeout=False):
        with self.lock:
            self.requests += 1
            u = self.per_url.setdefault(url, {"requests": 0, "errors": 0, "timeouts": 0})
            u["requests"] += 1
            if timeout:
                self.timeouts += 1
                u["timeouts"] += 1
            elif error or status is None or status >= 400:
                self.errors += 1
                u["errors"] += 1
            if status is not None:
                key = str(status)
                self.status[key] = self.status.get(key, 0) + 1
            if not timeout and not error:
                self.latencies.append(latency_s * 1000.0)


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return round(sorted_values[idx], 3)


def worker(target, args, deadline, stop, results):
    conn = None
    while not stop.is_set() and time.monotonic() < deadline:
        if not results.claim(args.max_requests):
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if conn is None:
            conn = http.client.HTTPConnection(target.host, target.port, timeout=args.timeout)
        start = time.monotonic()
        try:
            if args.post_body is not None:
                conn.request(
                    "POST",
                    target.path,
                    body=args.post_body,
                    headers={"User-Agent": "loopprof-load", "Content-Type": "application/json"},
                )
            else:
                conn.request("GET", target.path, headers={"User-Agent": "loopprof-load"})
            resp = conn.getresponse()
            if args.disconnect_after_first_chunk:
                if hasattr(resp, "read1"):
                    resp.read1(65536)
                else:
                    resp.read(1)
                results.add(target.url, time.monotonic() - start, status=resp.status)
                conn.close()  # drop the connection mid-stream
                conn = None
            else:
                resp.read()
                results.add(target.url, time.monotonic() - start, status=resp.status)
                if resp.will_close:
                    conn.close()
                    conn = None
        except socket.timeout:
            results.add(target.url, time.monotonic() - start, timeout=True)
            conn.close()
            conn = None
        except (OSError, http.client.HTTPException):
            results.add(target.url, time.monotonic() - start, error=True)
            conn.close()
            conn = None
            # don't spin on a dead server
            stop.wait(0.05)
        if args.think_ms > 0:
            stop.wait(args.think_ms / 1000.0)
    if conn is not None:
        conn.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description="bounded loopback HTTP load generator")
    ap.add_argument("--url", action="append", required=True, help="http://127.0.0.1:PORT/path (repeatable)")
    ap.add_argument("--concurrency", type=int, default=1, help="worker threads per --url (default 1)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds to run (default 10)")
    ap.add_argument("--max-requests", type=int, default=0, help="stop after this many requests in total (0 = no limit)")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-request socket timeout, seconds (default 10)")
    ap.add_argument("--disconnect-after-first-chunk", action="store_true", help="read the first body chunk, then close")
    ap.add_argument("--json", action="store_true", help="print only the JSON summary line")
    ap.add_argument("--think-ms", type=float, default=0.0, help="pause after each request, per worker (default 0)")
    ap.add_argument("--post-json-items", type=int, default=0, help="POST a JSON list of this many items ({id, name, tags, price}) instead of GET")
    args = ap.parse_args(argv)
    args.post_body = None
    if args.post_json_items > 0:
        n = min(args.post_json_items, 1_000_000)
        args.post_body = json.dumps(
            [{"id": i, "name": f"item {i}", "tags": ["a", "b"], "price": i * 0.5} for i in range(n)]
        ).encode()

    if not (0 < args.duration <= 3600):
        ap.error("--duration must be in (0, 3600]")
    if not (1 <= args.concurrency <= 256):
        ap.error("--concurrency must be in [1, 256]")
    if not (0 < args.timeout <= 300):
        ap.error("--timeout must be in (0, 300]")
    if args.max_requests < 0:
        ap.error("--max-requests must be >= 0")
    try:
        targets = [Target(u) for u in args.url]
    except ValueError as e:
        ap.error(str(e))

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    results = Results()
    t0 = time.monotonic()
    deadline = t0 + args.duration
    threads = []
    for target in targets:
        for i in range(args.concurrency):
            t = threading.Thread(target=worker, args=(target, args, deadline, stop, results), name="load-%d" % i)
            t.daemon = True
            t.start()
            threads.append(t)

    hard_deadline = deadline + args.timeout + 2.0
    while any(t.is_alive() for t in threads):
        if stop.is_set() or time.monotonic() >= hard_deadline:
            break
        stop.wait(0.05)
    stop.set()
    # after a signal, give in-flight requests a short grace period only
    grace_end = min(hard_deadline, time.monotonic() + 1.0)
    for t in threads:
        t.join(max(0.0, grace_end - time.monotonic()))
    elapsed = time.monotonic() - t0

    with results.lock:
        lat = sorted(results.latencies)
        summary = {
            "requests": results.requests,
            "errors": results.errors,
            "timeouts": results.timeouts,
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
            "max_ms": round(lat[-1], 3) if lat else None,
            "rps": round(results.requests / elapsed, 2) if elapsed > 0 else 0.0,
            "elapsed_s": round(elapsed, 3),
            "status": results.status,
            "per_url": results.per_url,
        }
    if not args.json:
        sys.stderr.write(
            "load: %(requests)d requests, %(errors)d errors, %(timeouts)d timeouts, "
            "p50 %(p50_ms)s ms, p99 %(p99_ms)s ms, %(rps)s req/s over %(elapsed_s)s s\n" % summary
        )
    sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
