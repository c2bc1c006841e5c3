"""Helpers shared by the benchmark scripts in this directory (loopback only)."""

import os
import socket
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def proc_cpu_s(pid):
    """utime+stime of one process from /proc/PID/stat, seconds (None once it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def poll_cpu_until_exit(p, timeout):
    """Polls p's CPU every 50 ms until it exits: [(wall time, cpu seconds)]. Raises when p
    outlives timeout (it is killed) or fails."""
    polls = []
    deadline = time.monotonic() + timeout
    while p.poll() is None:
        if time.monotonic() > deadline:
            p.kill()
            raise RuntimeError("%s did not finish in time" % p.args)
        c = proc_cpu_s(p.pid)
        if c is not None:
            polls.append((time.time(), c))
        time.sleep(0.05)
    if p.returncode != 0:
        raise RuntimeError("%s exited with %s" % (p.args, p.returncode))
    return polls


def steady_cpu(polls, t0, t1):
    """CPU seconds used between the first poll >= t0 and the last poll <= t1, and that span."""
    inside = [(t, c) for t, c in polls if t0 <= t <= t1]
    if len(inside) < 2:
        return None, None
    return inside[-1][1] - inside[0][1], inside[-1][0] - inside[0][0]
