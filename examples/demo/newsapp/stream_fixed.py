"""GET /news/stream, fixed (enabled with NEWSAPP_FIXED=1).

Same events as stream.py, following the runbook's non-blocking executor pattern:
  * one bounded executor for the whole app, created once (no `with` per request,
    so no implicit shutdown(wait=True) on the event loop, and no new threads per
    request piling up behind a slow feed server), with its threads started at import:
    ThreadPoolExecutor starts workers lazily, inside submit(), and Thread.start()
    waits until the new thread runs, which under load held the event loop for ~50 ms
    (loopprof reported it as a thread-sync-wait at the run_in_executor line);
  * work is dispatched with loop.run_in_executor, so the generator awaits it;
  * on client disconnect (or any exit) the pending futures are cancelled: queued
    downloads never start, running ones finish in the background, bounded by
    their own timeout, and never hold up the event loop.
"""

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from .feeds import SOURCES, fetch_feed

router = APIRouter()

# Shared by every request; its size bounds the threads a slow feed server can tie up.
WORKERS = 16
executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="feeds")


def _start_workers() -> None:
    """Start every worker now (at import, before the server serves), not on the loop."""
    barrier = threading.Barrier(WORKERS + 1)
    for _ in range(WORKERS):
        executor.submit(barrier.wait)  # each waits for the others: no idle thread to reuse
    barrier.wait()


_start_workers()


def sse(event: str, data) -> str:
    return "event: %s\ndata: %s\n\n" % (event, json.dumps(data))


@router.get("/news/stream")
async def news_stream(request: Request):
    async def event_generator():
        loop = asyncio.get_running_loop()
        sources = {loop.run_in_executor(executor, fetch_feed, source): source for source in SOURCES}
        pending = set(sources)
        try:
            yield sse("hello", {"sources": SOURCES})
            while pending:
                if await request.is_disconnected():
                    break
                done, pending = await asyncio.wait(pending, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    try:
                        yield sse("feed", future.result())
                    except Exception as exc:
                        yield sse("error", {"source": sources[future], "error": str(exc)})
            if not pending:
                yield sse("done", {})
        finally:
            for future in pending:
                future.cancel()

    return StreamingResponse(event_generator(), media_type="text/event-stream")
