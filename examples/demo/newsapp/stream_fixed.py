"""GET /news/stream, fixed (enabled with NEWSAPP_FIXED=1).

Same events as stream.py, following the runbook's non-blocking executor pattern:
  * one bounded executor for the whole app, created once (no `with` per request,
    so no implicit shutdown(wait=True) on the event loop, and no new threads per
    request piling up behind a slow feed server);
  * work is dispatched with loop.run_in_executor, so the generator awaits it;
  * on client disconnect (or any exit) the pending futures are cancelled: queued
    downloads never start, running ones finish in the background, bounded by
    their own timeout, and never hold up the event loop.
"""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from .feeds import SOURCES, fetch_feed

router = APIRouter()

# Shared by every request; its size bounds the threads a slow feed server can tie up.
executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="feeds")


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
