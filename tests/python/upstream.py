"""Slow HTTP upstream for loopprof's live tests (stdlib only, any Python 3).

    python upstream.py PORT          # PORT 0 picks a free port

Binds 127.0.0.1 only. Prints "listening on 127.0.0.1:<port>" (flushed) once
ready. Routes (GET or POST; a POST body is read and discarded):

    /slow?ms=N   sleep N ms (capped at 60000), then 200 "ok"
    /hang        sleep 30 s, then 200 "ok"
    /health      200 "ok" immediately
    anything else: 404

Each request is served on its own daemon thread. Exits promptly on SIGTERM
or SIGINT (in-flight sleeps are abandoned).
"""

import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs, urlsplit

MAX_SLOW_MS = 60_000


class ThreadingServer(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def _reply(self, status, body=b"ok"):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/slow":
            try:
                ms = int(float(query.get("ms", ["0"])[0]))
            except ValueError:
                return self._reply(400, b"bad ms")
            time.sleep(max(0, min(ms, MAX_SLOW_MS)) / 1000.0)
            return self._reply(200)
        if url.path == "/hang":
            time.sleep(30)
            return self._reply(200)
        if url.path == "/health":
            return self._reply(200)
        return self._reply(404, b"not found")

    def do_GET(self):
        try:
            self._handle()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 16 << 20))
        self.do_GET()


def main(argv):
    if len(argv) != 2:
        print("usage: upstream.py PORT", file=sys.stderr)
        return 2
    server = ThreadingServer(("127.0.0.1", int(argv[1])), Handler)

    def stop(signum, frame):
        # shutdown() must not run on the serve_forever thread; close from a helper.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
