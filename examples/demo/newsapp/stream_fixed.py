"""GET /news/stream, fixed (enabled with NEWSAPP_FIXED=1).

Same events as stream.py, following the runbook's non-blocking executor pattern:
  * the executor is created explicitly (no `with`, so no implicit shutdown(wait=True));
  * work is dispatched with loop.run_in_executor, so the generator awaits it;
  * on client disconnect (or any exit) the pending futures are cancelled;
  * finally: executor.shutdown(wait=False, cancel_futures=True) - downloads
    already running finish in the background, bounded by their own timeout,
    and never hold up the event loop.
"""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from .feeds import SOURCES, fetch_feed

router = APIRouter()


def sse(event: str, data) -> str:
    return "event: %s\ndata: %s\n\n" % (event, json.dumps(data))


@router.get("/news/stream")
async def news_stream(request: Request):
    async def event_generator():
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=5, thread_name_prefix="feeds")
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
            executor.shutdown(wait=False, cancel_futures=True)

    return StreamingResponse(event_generator(), media_type="text/event-stream")
