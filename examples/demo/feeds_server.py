"""Slow RSS feed server for the loopprof demo (stdlib only).

    python feeds_server.py PORT [--min-delay 0.5] [--max-delay 3.0]

Binds 127.0.0.1 only (PORT 0 picks a free port); prints
"listening on 127.0.0.1:<port>" once ready. GET /feeds/<name>.xml answers after
a random delay between --min-delay and --max-delay seconds with a small RSS 2.0
document; GET /health answers at once. Exits promptly on SIGTERM/SIGINT.
"""

import argparse
import random
import signal
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from xml.sax.saxutils import escape

HEADLINES = [
    "Markets steady ahead of central bank decision",
    "City council approves new cycling lanes",
    "Researchers report progress on battery recycling",
    "Local team clinches playoff spot in overtime",
    "Heatwave expected to ease by the weekend",
    "Startup raises funding for grid-scale storage",
    "Museum reopens after two-year renovation",
    "Rail operator announces timetable changes",
]


def render_feed(name, host):
    items = []
    for i, title in enumerate(random.sample(HEADLINES, 4)):
        items.append(
            "<item><title>%s</title><link>http://%s/%s/%d</link>"
            "<pubDate>%s</pubDate></item>"
            % (escape(title), host, escape(name), i, formatdate(time.time() - 600 * i))
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
        "<title>%s</title><link>http://%s/%s</link><description>%s news</description>%s"
        "</channel></rss>\n" % (escape(name.title()), host, escape(name), escape(name), "".join(items))
    ).encode("utf-8")


class ThreadingServer(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_handler(min_delay, max_delay):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass

        def _reply(self, status, body, ctype="text/plain"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            try:
                path = self.path.split("?", 1)[0]
                if path == "/health":
                    return self._reply(200, b"ok")
                if path.startswith("/feeds/") and path.endswith(".xml"):
                    name = path[len("/feeds/"):-len(".xml")] or "news"
                    time.sleep(random.uniform(min_delay, max_delay))
                    host = "%s:%d" % self.server.server_address[:2]
                    return self._reply(200, render_feed(name, host), "application/rss+xml")
                return self._reply(404, b"not found")
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("--min-delay", type=float, default=0.5)
    ap.add_argument("--max-delay", type=float, default=3.0)
    args = ap.parse_args(argv)
    if not 0 <= args.min_delay <= args.max_delay <= 60:
        ap.error("need 0 <= --min-delay <= --max-delay <= 60")
    server = ThreadingServer(("127.0.0.1", args.port), make_handler(args.min_delay, args.max_delay))

    def stop(signum, frame):
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
    sys.exit(main())
