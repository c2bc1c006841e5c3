"""A stdlib-only asyncio HTTP server for loopprof's per-interpreter live test (CPython 3.8+).

    python plain_server.py PORT

Binds 127.0.0.1:PORT, prints "listening" (flushed) once ready. Routes (GET, HTTP/1.1
keep-alive):

    /health       200 at once
    /block?ms=N   blocks the event loop N ms in time.sleep (the bug loopprof must find)
    /wait?ms=N    awaits asyncio.sleep for N ms (the control: the loop stays free)
"""

import asyncio
import sys
import time
from urllib.parse import parse_qs, urlsplit


def rate_limited(ms):
    time.sleep(ms / 1000.0)


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            url = urlsplit(line.split(" ")[1])
            ms = int(parse_qs(url.query).get("ms", ["0"])[0])
            if url.path == "/block":
                rate_limited(ms)
            elif url.path == "/wait":
                await asyncio.sleep(ms / 1000.0)
            body = b"ok"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n" + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
