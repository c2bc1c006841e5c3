"""A FastAPI service with a large long-lived heap, for loopprof's GC-pause test.

    HEAP_OBJECTS=600000 GC_FREEZE=0 uvicorn gc_app:app --app-dir tests/python ...

At import it builds HEAP_OBJECTS dicts (each holding a list: two container objects apiece),
like a cache loaded at start-up. /churn allocates a batch of small containers per request and keeps
the last few batches, so survivors reach the oldest generation and full (generation-2)
collections keep happening; each walks the whole heap, on whatever line allocated. With
GC_FREEZE=1 the heap is frozen after start-up (gc.freeze()), the documented fix: the same
collections then skip it and stay short.
"""

import gc
import os

from fastapi import FastAPI

HEAP = [{"id": i, "tags": [i]} for i in range(int(os.environ.get("HEAP_OBJECTS", "600000")))]
if os.environ.get("GC_FREEZE") == "1":
    gc.collect()
    gc.freeze()

app = FastAPI()
_recent = []


@app.get("/health")
async def health():
    return {"status": "ok", "heap": len(HEAP)}


@app.get("/churn")
async def churn(n: int = 3000):
    # Containers (a dict holding a list) stay tracked by the collector; {"i": i} alone would
    # be untracked at its first collection and never reach the oldest generation.
    batch = [{"i": i, "tags": [i]} for i in range(max(1, min(n, 100_000)))]
    _recent.append(batch)
    # A few recent batches only: they reach the oldest generation (pushing the full
    # collections that walk HEAP), yet stay small enough that, with HEAP frozen, a full
    # collection is short.
    if len(_recent) > 4:
        del _recent[:2]
    return {"n": len(batch)}
