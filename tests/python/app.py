"""FastAPI fixture app for loopprof's live tests.

This is a *test fixture*: every endpoint below is a small, realistic example of
one way an async web app ends up blocking (or, for /ctl/*, correctly not
blocking) the asyncio event loop. loopprof attaches to a uvicorn/gunicorn
process serving this app and must find the blocking endpoints and stay quiet
about the controls.

Run:  UPSTREAM_URL=http://127.0.0.1:8001 uvicorn app:app --app-dir tests/python \
          --host 127.0.0.1 --port 8000 --loop asyncio   (or --loop uvloop)

UPSTREAM_URL is the base URL of tests/python/upstream.py, a *separate* slow
HTTP server (calling this app itself would deadlock while its loop is blocked).

Each endpoint times its own blocking call with time.perf_counter; cumulative
totals are served by GET /_stats as
    {"/sleep": {"count": 3, "total_ms": 601.2, "max_ms": 201.0, "blocks_loop": true}, ...}
keyed by route path. For blocking endpoints the number is time the loop thread
spent inside the call; for /ctl/* and /gil it is the wall time of work done off
the loop (blocks_loop false). POST /_stats/reset clears them.

Query parameters are clamped (ms <= 10000, mb <= 256) so nothing runs unbounded.
"""

import asyncio
import concurrent.futures
import contextlib
import gc
import hashlib
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from time import sleep
from typing import List

import httpx
import redis
import requests
from fastapi import BackgroundTasks, Depends, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, TypeAdapter

UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8001").rstrip("/")
UPSTREAM_TIMEOUT = 30.0
MAX_MS = 10_000
MAX_MB = 256
MIB = 1 << 20


def clamp_ms(ms: float) -> float:
    return max(0.0, min(float(ms), MAX_MS))


def clamp_mb(mb: int) -> int:
    return max(1, min(int(mb), MAX_MB))


def upstream(path: str) -> str:
    return UPSTREAM_URL + path


# --------------------------------------------------------------------------- stats


class Stats:
    """Cumulative per-endpoint timings, shared by the loop and worker threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._data = {}

    def record(self, name: str, seconds: float, blocks_loop: bool = True) -> None:
        ms = seconds * 1000.0
        with self._lock:
            entry = self._data.setdefault(
                name, {"count": 0, "total_ms": 0.0, "max_ms": 0.0, "blocks_loop": blocks_loop}
            )
            entry["count"] += 1
            entry["total_ms"] += ms
            entry["max_ms"] = max(entry["max_ms"], ms)

    @contextlib.contextmanager
    def measure(self, name: str, blocks_loop: bool = True):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record(name, time.perf_counter() - start, blocks_loop)

    def snapshot(self) -> dict:
        with self._lock:
            return {
                k: {**v, "total_ms": round(v["total_ms"], 3), "max_ms": round(v["max_ms"], 3)}
                for k, v in self._data.items()
            }

    def reset(self) -> None:
        with self._lock:
            self._data.clear()


stats = Stats()

# ------------------------------------------------------------------ app state

WORKDIR = tempfile.mkdtemp(prefix="loopprof-fixture-")
REPORT_DB = os.path.join(WORKDIR, "reports.sqlite3")

# Long-lived pool used by /future-result (the bug there is *waiting* on it).
report_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="report")

# Sync httpx client reused across requests (so /httpx-sync is pure network wait).
_sync_http = httpx.Client(timeout=UPSTREAM_TIMEOUT)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
_redis = redis.Redis.from_url(REDIS_URL, socket_timeout=UPSTREAM_TIMEOUT)

shared_client: httpx.AsyncClient = None  # created in lifespan, used by /ctl/shared-client


@contextlib.asynccontextmanager
async def lifespan(app):
    global shared_client
    shared_client = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT)
    try:
        yield
    finally:
        await shared_client.aclose()
        _sync_http.close()
        report_pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(WORKDIR, ignore_errors=True)


app = FastAPI(title="loopprof live-test fixture", lifespan=lifespan)


# ------------------------------------------------------- helpers (blocking code)


def rate_limited(ms: float) -> None:
    """Crude client-side rate limiting: wait before calling a partner API."""
    time.sleep(ms / 1000.0)


def wait_before_retry(ms: float) -> None:
    """Back off before a retry (uses `from time import sleep`)."""
    sleep(ms / 1000.0)


def find_primes(budget_ms: float) -> int:
    """Pure-Python trial division for about budget_ms milliseconds; returns the count."""
    deadline = time.perf_counter() + budget_ms / 1000.0
    primes = []
    candidate = 2
    while True:
        for _ in range(64):
            is_prime = True
            for p in primes:
                if p * p > candidate:
                    break
                if candidate % p == 0:
                    is_prime = False
                    break
            if is_prime:
                primes.append(candidate)
            candidate += 1
        if time.perf_counter() >= deadline:
            return len(primes)


def fetch_upstream(url: str) -> int:
    response = requests.get(url, timeout=UPSTREAM_TIMEOUT)
    return response.status_code


def fetch_with_httpx(url: str) -> int:
    return _sync_http.get(url).status_code


def fetch_with_urllib(url: str) -> int:
    with urllib.request.urlopen(url, timeout=UPSTREAM_TIMEOUT) as resp:
        resp.read()
        return resp.status


def write_export(path: str, mb: int) -> int:
    """Write an export file durably, then read it back to verify its size."""
    chunk = b"x" * MIB
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    with open(path, "rb") as f:
        size = len(f.read())
    os.unlink(path)
    return size


def convert_document(ms: float) -> int:
    """Shell out to an external tool (here: sleep) and wait for it."""
    return subprocess.run(["sleep", "%.3f" % (ms / 1000.0)], check=True).returncode


_sql_rows_per_ms = None
_sql_calibration_lock = threading.Lock()
_COUNTER_SQL = (
    "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?) "
    "SELECT count(*), sum(n % 7) FROM seq"
)


def _sql_rows_for(ms: float) -> int:
    """Rows the counter query must generate to take about ms (calibrated once)."""
    global _sql_rows_per_ms
    with _sql_calibration_lock:
        if _sql_rows_per_ms is None:
            con = sqlite3.connect(":memory:")
            con.execute(_COUNTER_SQL, (50_000,)).fetchone()  # warm-up
            timings = []
            for _ in range(3):
                start = time.perf_counter()
                con.execute(_COUNTER_SQL, (200_000,)).fetchone()
                timings.append(max((time.perf_counter() - start) * 1000.0, 0.01))
            con.close()
            _sql_rows_per_ms = 200_000 / sorted(timings)[1]  # median of 3
    return max(1, int(_sql_rows_per_ms * ms))


# Calibrated at import, before the server serves: done in the first request, on a loaded
# machine it was the longest stall of the /sqlite case (three 200,000-row queries on the
# loop of every worker), outranking the request's own query the tests look for.
_sql_rows_for(1.0)


def report_sql(db_path: str, rows: int):
    """Run a slow reporting query against the on-disk database."""
    con = sqlite3.connect(db_path)
    try:
        return con.execute(_COUNTER_SQL, (rows,)).fetchone()
    finally:
        con.close()


def build_report(ms: float) -> str:
    """Stand-in for slow work handed to a thread pool (I/O wait)."""
    time.sleep(ms / 1000.0)
    return "report-ready"


def resolve_backends(count: int) -> int:
    found = 0
    for _ in range(count):
        found += len(socket.getaddrinfo("localhost", 80))
    return found


class HTTPLogShipper(logging.Handler):
    """Ships every log record to a remote collector with a synchronous HTTP POST.

    The collector is upstream.py's /slow; a record may carry `collector_latency_ms`
    (via `extra=`) to make the simulated collector respond that slowly.
    """

    def __init__(self, url: str):
        super().__init__()
        self.url = url

    def emit(self, record: logging.LogRecord) -> None:
        latency = getattr(record, "collector_latency_ms", 0)
        try:
            requests.post(
                "%s?ms=%d" % (self.url, latency),
                json={"logger": record.name, "level": record.levelname, "msg": self.format(record)},
                timeout=UPSTREAM_TIMEOUT,
            )
        except Exception:
            self.handleError(record)


audit_log = logging.getLogger("fixture.audit")
audit_log.setLevel(logging.INFO)
audit_log.propagate = False
audit_log.addHandler(HTTPLogShipper(upstream("/slow")))


def crunch_in_background(ms: float) -> None:
    with stats.measure("/gil", blocks_loop=False):
        find_primes(ms)


_cruncher = None
_cruncher_lock = threading.Lock()


# ------------------------------------------------------------------ endpoints


@app.get("/health")
async def health():
    loop = asyncio.get_running_loop()
    return {"status": "ok", "pid": os.getpid(), "loop": type(loop).__module__}


@app.get("/_stats")
async def get_stats():
    return stats.snapshot()


@app.post("/_stats/reset")
async def reset_stats():
    stats.reset()
    return {"reset": True}


@app.get("/sleep")
async def sleep_endpoint(ms: float = 200):
    with stats.measure("/sleep"):
        rate_limited(clamp_ms(ms))
    return {"slept_ms": ms}


async def load_account(account_id: int, ms: float = 200):
    """An async dependency that blocks: the frame on the loop is this dependency, not an
    endpoint; the route (`GET /accounts/{account_id}`) comes from the ASGI scope."""
    with stats.measure("/accounts/{account_id}"):
        time.sleep(clamp_ms(ms) / 1000)
    return {"id": account_id}


@app.get("/accounts/{account_id}")
async def get_account(account: dict = Depends(load_account)):
    return account


async def send_welcome_email(ms: float):
    """An async background task that blocks (a sync SMTP client in real code)."""
    with stats.measure("/signup-bg"):
        time.sleep(clamp_ms(ms) / 1000)


@app.get("/signup-bg")
async def signup_bg(background_tasks: BackgroundTasks, ms: float = 100):
    background_tasks.add_task(send_welcome_email, ms)
    return {"queued": True}


@app.get("/sleep-from-import")
async def sleep_from_import(ms: float = 200):
    with stats.measure("/sleep-from-import"):
        wait_before_retry(clamp_ms(ms))
    return {"slept_ms": ms}


@app.get("/cpu")
async def cpu(ms: float = 200):
    with stats.measure("/cpu"):
        count = find_primes(clamp_ms(ms))
    return {"primes": count}


@app.get("/requests")
async def call_with_requests(ms: float = 300):
    with stats.measure("/requests"):
        status = fetch_upstream(upstream("/slow?ms=%d" % clamp_ms(ms)))
    return {"upstream_status": status}


@app.get("/httpx-sync")
async def call_with_httpx_sync(ms: float = 300):
    with stats.measure("/httpx-sync"):
        status = fetch_with_httpx(upstream("/slow?ms=%d" % clamp_ms(ms)))
    return {"upstream_status": status}


@app.get("/urllib")
async def call_with_urllib(ms: float = 300):
    with stats.measure("/urllib"):
        status = fetch_with_urllib(upstream("/slow?ms=%d" % clamp_ms(ms)))
    return {"upstream_status": status}


@app.get("/file")
async def export_report(mb: int = 8):
    path = os.path.join(WORKDIR, "export-%d-%d.bin" % (os.getpid(), threading.get_ident()))
    with stats.measure("/file"):
        size = write_export(path, clamp_mb(mb))
    return {"bytes": size}


@app.get("/subprocess")
async def run_subprocess(ms: float = 200):
    with stats.measure("/subprocess"):
        rc = convert_document(clamp_ms(ms))
    return {"returncode": rc}


@app.get("/sqlite")
async def sqlite_report(ms: float = 200):
    rows = _sql_rows_for(clamp_ms(ms))  # calibrated at import
    with stats.measure("/sqlite"):
        count, total = report_sql(REPORT_DB, rows)
    return {"rows": count, "checksum": total}


@app.get("/executor-shutdown")
async def executor_shutdown(ms: float = 300):
    """SSE stream that fans work out to a per-request pool and never waits for it.

    Leaving the `with ThreadPoolExecutor` block (generator finished *or* closed
    because the client went away) calls pool.shutdown(wait=True) on the loop,
    which waits for the still-running upstream call.
    """
    url = upstream("/slow?ms=%d" % clamp_ms(ms))

    async def event_generator():
        exit_started = None
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                try:
                    pool.submit(fetch_upstream, url)
                    yield "event: accepted\ndata: {\"job\": \"refresh\"}\n\n"
                finally:
                    exit_started = time.perf_counter()
                # <- Executor.__exit__ -> shutdown(wait=True) blocks here
        finally:
            if exit_started is not None:
                stats.record("/executor-shutdown", time.perf_counter() - exit_started)

    return StreamingResponse(event_generator(), media_type="text/event-stream")


@app.get("/future-result")
async def future_result(ms: float = 200):
    with stats.measure("/future-result"):
        future = report_pool.submit(build_report, clamp_ms(ms))
        result = future.result(timeout=UPSTREAM_TIMEOUT)
    return {"result": result}


@app.get("/log")
async def log_endpoint(ms: float = 200):
    with stats.measure("/log"):
        audit_log.info("order %s viewed", 1234, extra={"collector_latency_ms": clamp_ms(ms)})
    return {"logged": True}


def next_job(wait_ms: float):
    """Wait for a job on a Redis list with the synchronous client (BLPOP blocks server-side)."""
    return _redis.blpop(["jobs:pending"], timeout=wait_ms / 1000.0)


@app.get("/redis")
async def redis_job(ms: float = 200):
    with stats.measure("/redis"):
        job = next_job(clamp_ms(ms))
    return {"job": job}


@app.get("/dns")
async def dns(count: int = 200):
    with stats.measure("/dns"):
        found = resolve_backends(max(1, min(count, 10_000)))
    return {"addresses": found}


@app.get("/client-per-request")
async def client_per_request():
    with stats.measure("/client-per-request"):
        client = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT)  # builds a fresh SSL context
    async with client:
        response = await client.get(upstream("/slow?ms=1"))
    return {"upstream_status": response.status_code}


@app.get("/gil")
async def start_cruncher(ms: float = 2000):
    global _cruncher
    with _cruncher_lock:
        if _cruncher is not None and _cruncher.is_alive():
            return {"started": False, "pid": os.getpid()}
        _cruncher = threading.Thread(
            target=crunch_in_background, args=(clamp_ms(ms),), name="cruncher", daemon=True
        )
        _cruncher.start()
    return {"started": True, "pid": os.getpid()}


@app.get("/hash")
async def checksum(mb: int = 64):
    payload = bytes(clamp_mb(mb) * MIB)
    with stats.measure("/hash"):
        digest = hashlib.sha256(payload).hexdigest()
    return {"sha256": digest}


# ------------------------------- library code on the loop: response serialization


class Item(BaseModel):
    id: int
    name: str
    tags: list
    price: float


# Built once at import: the handlers below return it at once, so what runs on the loop for
# /big-response is FastAPI's validation and serialization of the response_model, not the
# application's own code.
CATALOG_ITEMS = [
    {"id": i, "name": "item %d" % i, "tags": ["a", "b", "c"], "price": i * 1.5}
    for i in range(100_000)
]
# Keep these long-lived objects out of every later collection: without this, each
# generation-2 collection (in any thread, holding the GIL) walks them for ~100 ms.
gc.freeze()
_items_adapter = TypeAdapter(List[Item])


@app.get("/big-response", response_model=List[Item])
async def big_response(n: int = 20_000):
    return CATALOG_ITEMS[: max(1, min(n, len(CATALOG_ITEMS)))]


@app.post("/bulk-items")
async def bulk_items(items: List[Item]):
    # the request body (thousands of items) is parsed and validated by FastAPI on the loop
    # before this handler runs: no application frame is on the stack while it happens
    return {"received": len(items)}


@app.post("/ctl/bulk-items-offloaded")
async def ctl_bulk_items_offloaded(request: Request):
    # control: the same body read as bytes and validated in a worker thread
    body = await request.body()
    items = await asyncio.to_thread(_items_adapter.validate_json, body)
    return {"received": len(items)}


@app.get("/ctl/big-response-offloaded")
async def ctl_big_response_offloaded(n: int = 20_000):
    # control: the same response validated and serialized in a worker thread
    items = CATALOG_ITEMS[: max(1, min(n, len(CATALOG_ITEMS)))]
    body = await asyncio.to_thread(
        lambda: _items_adapter.dump_json(_items_adapter.validate_python(items))
    )
    return Response(body, media_type="application/json")


# ------------------------------- a child process's output read on the loop


def _ticker_command(ms: float) -> list:
    # a child that prints a line every `ms` milliseconds, three times
    return ["sh", "-c", "for i in 1 2 3; do sleep %.3f; echo tick $i; done" % (clamp_ms(ms) / 1000.0)]


@app.get("/pipe-stream")
async def pipe_stream(ms: float = 150):
    async def ticks():
        proc = subprocess.Popen(_ticker_command(ms), stdout=subprocess.PIPE, text=True)
        try:
            for line in iter(proc.stdout.readline, ""):  # blocks the loop on the child's pipe
                yield "data: %s\n\n" % line.strip()
        finally:
            proc.kill()
            proc.wait()

    return StreamingResponse(ticks(), media_type="text/event-stream")


@app.get("/ctl/pipe-stream-to-thread")
async def ctl_pipe_stream_to_thread(ms: float = 150):
    # control: the same pipe read in a worker thread
    async def ticks():
        proc = subprocess.Popen(_ticker_command(ms), stdout=subprocess.PIPE, text=True)
        try:
            while True:
                line = await asyncio.to_thread(proc.stdout.readline)
                if not line:
                    break
                yield "data: %s\n\n" % line.strip()
        finally:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    return StreamingResponse(ticks(), media_type="text/event-stream")


# ------------------------------- the loop waiting for itself


@app.get("/self-wait")
async def self_wait(ms: float = 200):
    # schedules a coroutine on this very loop, then blocks the loop waiting for it: only the
    # timeout ends the wait
    loop = asyncio.get_running_loop()
    future = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop)
    try:
        future.result(timeout=clamp_ms(ms) / 1000.0)
    except concurrent.futures.TimeoutError:
        pass
    return {"waited_ms": ms}


# ------------------------------- worker-thread pool: `def` routes behind AnyIO's limiter


@app.get("/def-upstream")
def def_upstream(ms: float = 300):
    # plain `def`: runs on an AnyIO worker thread (40 at most by default); the loop stays
    # idle, but at high concurrency every worker waits on the upstream and requests queue
    with stats.measure("/def-upstream", blocks_loop=False):
        status = fetch_upstream(upstream("/slow?ms=%d" % clamp_ms(ms)))
    return {"upstream_status": status}


# ----------------------------------------------- controls: must not block the loop


@app.get("/ctl/def-sleep")
def ctl_def_sleep(ms: float = 200):
    # plain `def`: FastAPI runs it in the AnyIO worker thread pool
    with stats.measure("/ctl/def-sleep", blocks_loop=False):
        rate_limited(clamp_ms(ms))
    return {"slept_ms": ms}


@app.get("/ctl/async-sleep")
async def ctl_async_sleep(ms: float = 200):
    with stats.measure("/ctl/async-sleep", blocks_loop=False):
        await asyncio.sleep(clamp_ms(ms) / 1000.0)
    return {"slept_ms": ms}


@app.get("/ctl/to-thread")
async def ctl_to_thread(ms: float = 200):
    with stats.measure("/ctl/to-thread", blocks_loop=False):
        await asyncio.to_thread(time.sleep, clamp_ms(ms) / 1000.0)
    return {"slept_ms": ms}


@app.get("/ctl/async-subprocess")
async def ctl_async_subprocess(ms: float = 200):
    with stats.measure("/ctl/async-subprocess", blocks_loop=False):
        proc = await asyncio.create_subprocess_exec("sleep", "%.3f" % (clamp_ms(ms) / 1000.0))
        rc = await proc.wait()
    return {"returncode": rc}


@app.get("/ctl/shared-client")
async def ctl_shared_client(ms: float = 100):
    with stats.measure("/ctl/shared-client", blocks_loop=False):
        response = await shared_client.get(upstream("/slow?ms=%d" % clamp_ms(ms)))
    return {"upstream_status": response.status_code}
