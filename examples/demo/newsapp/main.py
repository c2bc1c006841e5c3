"""News service (loopprof demo).

    FEEDS_BASE=http://127.0.0.1:8002 uvicorn newsapp.main:app --app-dir examples/demo

NEWSAPP_FIXED=1 serves the fixed /news/stream (stream_fixed.py) instead of the
buggy one (stream.py).
"""

import asyncio
import os
from email.utils import parsedate_to_datetime

from fastapi import FastAPI

from .feeds import SOURCES, fetch_feed

FIXED = os.environ.get("NEWSAPP_FIXED") == "1"
if FIXED:
    from .stream_fixed import router as stream_router
else:
    from .stream import router as stream_router

app = FastAPI(title="newsapp")
app.include_router(stream_router)


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.get("/")
async def index():
    return {
        "service": "newsapp",
        "stream": "fixed" if FIXED else "original",
        "endpoints": ["/health", "/news/latest", "/news/stream"],
        "sources": SOURCES,
    }


@app.get("/news/latest")
async def latest(limit: int = 10):
    """Latest headlines across all feeds (downloads run in worker threads)."""
    results = await asyncio.gather(
        *(asyncio.to_thread(fetch_feed, source) for source in SOURCES), return_exceptions=True
    )
    items = [
        dict(item, source=feed["source"])
        for feed in results
        if not isinstance(feed, BaseException)
        for item in feed["items"]
    ]
    items.sort(key=lambda item: parsedate_to_datetime(item["published"]).timestamp(), reverse=True)
    errors = sum(isinstance(feed, BaseException) for feed in results)
    return {"items": items[: max(1, min(limit, 100))], "failed_feeds": errors}
