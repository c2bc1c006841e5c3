"""Helpers shared by the benchmark scripts in this directory (loopback only)."""

import socket
import time
import urllib.request


def free_port():
    """A free TCP port on 127.0.0.1."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_health(port, timeout=30):
    """Waits until GET /health on 127.0.0.1:port answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=1) as r:
                r.read()
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def q(values, p):
    """The p-quantile of values (nearest rank)."""
    values = sorted(values)
    return values[min(len(values) - 1, int(round((len(values) - 1) * p)))]
