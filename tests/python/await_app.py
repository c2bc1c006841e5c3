"""FastAPI app for loopprof's task-view live tests: requests that wait on something awaited
while the event loop idles ("where requests wait").

    UPSTREAM_URL=http://127.0.0.1:PORT uvicorn await_app:app

Routes (the upstream is tests/python/upstream.py):

    /health      200 at once
    /pooled      GET the upstream's /slow?ms=300 through a shared httpx.AsyncClient whose
                 pool allows 2 connections: under concurrency, requests queue for one
    /roomy       the same through a client with 200 connections (control: no queue)
    /guarded     sleeps 300 ms holding one of 2 slots of an asyncio.Semaphore
    /fanout      gathers 3 upstream calls of 200 ms (a gather fan-out: tasks awaiting tasks)
    /audited     POST: reads the request body, which a middleware already consumed, so the
                 read waits for a body that never comes (until the client gives up)

Binds nothing itself; run it under uvicorn on 127.0.0.1.
"""

import asyncio
import os

import httpx
from fastapi import FastAPI, Request

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:9")

app = FastAPI()
tight = httpx.AsyncClient(
    limits=httpx.Limits(max_connections=2), timeout=httpx.Timeout(60.0)
)
roomy = httpx.AsyncClient(
    limits=httpx.Limits(max_connections=200), timeout=httpx.Timeout(60.0)
)
_slots = None


def slots():
    # Created on first use, inside the server's loop (3.8/3.9 bind a semaphore to a loop).
    global _slots
    if _slots is None:
        _slots = asyncio.Semaphore(2)
    return _slots


class ConsumeBody:
    """A raw ASGI middleware that reads /audited's body and does not replay it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/audited":
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
        await self.app(scope, receive, send)


app.add_middleware(ConsumeBody)


@app.get("/health")
async def health():
    return {"ok": True}


@app.get("/pooled")
async def pooled():
    r = await tight.get(f"{UPSTREAM}/slow?ms=300")
    return {"status": r.status_code}


@app.get("/roomy")
async def roomy_route():
    r = await roomy.get(f"{UPSTREAM}/slow?ms=300")
    return {"status": r.status_code}


@app.get("/guarded")
async def guarded():
    async with slots():
        await asyncio.sleep(0.3)
    return {"ok": True}


@app.get("/fanout")
async def fanout():
    replies = await asyncio.gather(
        *(roomy.get(f"{UPSTREAM}/slow?ms=200") for _ in range(3))
    )
    return {"status": [r.status_code for r in replies]}


@app.post("/audited")
async def audited(request: Request):
    body = await request.body()
    return {"bytes": len(body)}
