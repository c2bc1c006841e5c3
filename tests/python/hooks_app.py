"""FastAPI fixture: metrics and telemetry hooks that run on the event loop.

A *test fixture* for loopprof's live tests (tests/live_diagnose_kinds.rs). Two library hooks
that real services run on every request or scrape, configured by environment variables:

* GET /metrics/  prometheus_client's own ASGI app in multiprocess mode
  (PROMETHEUS_MULTIPROC_DIR). Each scrape reads and merges every per-process file in the
  directory. STALE_WORKERS=N leaves the files of N dead worker processes there first, as a
  gunicorn server with max_requests and no `mark_process_dead` hook accumulates them; 0 (the
  fix) leaves only this process's own files.
* GET /traced    an `async def` route wrapped in an OpenTelemetry span. SPAN_PROCESSOR=simple
  exports each span when it ends, synchronously, with the OTLP/HTTP exporter to
  EXPORT_URL (a slow collector: tests/python/upstream.py /slow); =batch (the fix) queues it
  for the BatchSpanProcessor's own thread.

Run:  STALE_WORKERS=2000 SPAN_PROCESSOR=simple EXPORT_URL=http://127.0.0.1:8001/slow?ms=100 \\
      uvicorn hooks_app:app --app-dir tests/python --port 8000
"""

import asyncio
import os
import shutil
import tempfile

MULTIPROC_DIR = tempfile.mkdtemp(prefix="loopprof-prom-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = MULTIPROC_DIR

from fastapi import FastAPI  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor  # noqa: E402
from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app, multiprocess  # noqa: E402
from prometheus_client.mmap_dict import MmapedDict, mmap_key  # noqa: E402

STALE_WORKERS = max(0, min(int(os.environ.get("STALE_WORKERS", "0")), 20000))
SPAN_PROCESSOR = os.environ.get("SPAN_PROCESSOR", "batch")
EXPORT_URL = os.environ.get("EXPORT_URL", "http://127.0.0.1:9/v1/traces")

REQUESTS = Counter("app_requests_total", "Requests", ["route", "status"])
LATENCY = Histogram("app_request_seconds", "Latency", ["route"])


def leave_stale_files(n):
    """The files n dead workers would have left: a counter and a histogram file each, with a
    few labelled series, written with prometheus_client's own file format."""
    routes = ["/", "/items", "/items/{item_id}", "/users/{user_id}", "/health"]
    buckets = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "+Inf"]
    for k in range(n):
        pid = 100000 + k
        counters = MmapedDict(os.path.join(MULTIPROC_DIR, f"counter_{pid}.db"))
        for route in routes:
            key = mmap_key("app_requests", "app_requests_total", ["route", "status"], [route, "200"], "Requests")
            counters.write_value(key, float(k % 97), 0.0)
        counters.close()
        hist = MmapedDict(os.path.join(MULTIPROC_DIR, f"histogram_{pid}.db"))
        for route in routes:
            for b in buckets:
                key = mmap_key(
                    "app_request_seconds", "app_request_seconds_bucket", ["route", "le"], [route, b], "Latency"
                )
                hist.write_value(key, 1.0, 0.0)
        hist.close()


leave_stale_files(STALE_WORKERS)

provider = TracerProvider()
exporter = OTLPSpanExporter(endpoint=EXPORT_URL, timeout=5)
processor = SimpleSpanProcessor(exporter) if SPAN_PROCESSOR == "simple" else BatchSpanProcessor(exporter)
provider.add_span_processor(processor)
tracer = provider.get_tracer("hooks_app")

registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)

app = FastAPI()
app.mount("/metrics", make_asgi_app(registry))


@app.on_event("shutdown")
def cleanup():
    shutil.rmtree(MULTIPROC_DIR, ignore_errors=True)


@app.get("/health")
async def health():
    REQUESTS.labels("/health", "200").inc()
    return {"status": "ok", "pid": os.getpid(), "stale_workers": STALE_WORKERS, "spans": SPAN_PROCESSOR}


@app.get("/traced")
async def traced(ms: float = 5):
    with tracer.start_as_current_span("traced"):
        await asyncio.sleep(min(ms, 1000) / 1000)
    REQUESTS.labels("/traced", "200").inc()
    return {"ok": True}
