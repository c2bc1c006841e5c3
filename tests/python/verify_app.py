"""Fixture for the verify-the-fix test (tests/live_record.rs): one route that blocks the event
loop with time.sleep, or, with VERIFY_APP_FIXED=1 (the deployed fix), awaits asyncio.sleep.
A module of its own, so that the `--name` pattern loopprof derives from the command line
(`verify_app:app`) matches this server only."""

import asyncio
import os
import time

from fastapi import FastAPI

FIXED = os.environ.get("VERIFY_APP_FIXED") == "1"
app = FastAPI()


@app.get("/health")
async def health():
    return {"status": "ok", "fixed": FIXED}


@app.get("/report")
async def report(ms: float = 150):
    if FIXED:
        await asyncio.sleep(min(ms, 1000) / 1000)
    else:
        time.sleep(min(ms, 1000) / 1000)
    return {"ok": True}
