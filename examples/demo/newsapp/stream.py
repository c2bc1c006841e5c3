"""GET /news/stream: server-sent events with the latest headlines of every feed.

BUG (kept on purpose, this is what the demo profiles): the generator uses
`with ThreadPoolExecutor(...)`. When the client disconnects, or the stream ends
early, leaving the `with` block calls executor.shutdown(wait=True) *on the
event loop thread*, which then waits for every feed download still in flight
(up to the 60 s request timeout). While it waits, no other request - not even
/health - is served. See stream_fixed.py for the fix (NEWSAPP_FIXED=1).
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
        with ThreadPoolExecutor(max_workers=5) as executor:
            pending = {executor.submit(fetch_feed, source): source for source in SOURCES}
            yield sse("hello", {"sources": SOURCES})
            while pending:
                if await request.is_disconnected():
                    break
                for future in [f for f in pending if f.done()]:
                    source = pending.pop(future)
                    try:
                        yield sse("feed", future.result())
                    except Exception as exc:  # one bad feed must not end the stream
                        yield sse("error", {"source": source, "error": str(exc)})
                await asyncio.sleep(0.2)
            yield sse("done", {})

    return StreamingResponse(event_generator(), media_type="text/event-stream")
