"""Soak: loopprof recording `gunicorn -w 4` uvicorn workers for a long time under maximum
loopback load, with worker restarts (`--max-requests`). Not part of the test run; the figures
go into docs/benchmarks.md ("Soak").

    target/venvs/py3.11/bin/python benches/soak.py [--secs 600] [--loopprof target/release/loopprof]

Checks, and prints as one JSON line at the end:
  - the rate each worker was sampled at (from the recording), and the failed-tick share;
  - loopprof's resident memory (VmRSS every 5 s): the largest while sampling, and the peak
    (VmHWM), which includes the report built from the whole recording at the end;
  - no thread of the server left stopped or traced when loopprof ended (state `t`, TracerPid);
  - the recording reads back whole (`loopprof inspect --json` exit 0, no warning);
  - how many workers were restarted by gunicorn and picked up by loopprof.
Exit status 1 when a check fails.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from benchlib import free_port, wait_health  # noqa: E402


def proc_status(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return line.split()[1]
    except OSError:
        return None
    return None


def tree(pid):
    """pid and its descendants."""
    out, todo = [], [pid]
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def stopped_or_traced(pids):
    bad = []
    for pid in pids:
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for t in tids:
            try:
                with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                with open("/proc/%d/task/%s/status" % (pid, t)) as f:
                    tracer = [l.split()[1] for l in f if l.startswith("TracerPid:")][0]
            except (OSError, IndexError):
                continue
            if state == "t" or tracer != "0":
                bad.append((pid, int(t), state, tracer))
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=float, default=600)
    ap.add_argument("--loopprof", default=os.path.join(ROOT, "target/release/loopprof"))
    ap.add_argument("--python", default="3.11")
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    venv = os.path.join(ROOT, "target/venvs/py%s" % args.python)
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(venv, "bin/gunicorn"), "-k", "uvicorn.workers.UvicornWorker", "-w", "4",
         "-b", "127.0.0.1:%d" % port, "--max-requests", "3000", "--max-requests-jitter", "500",
         "--graceful-timeout", "2", "app:app"],
        cwd=os.path.join(ROOT, "tests/python"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tempfile.mkdtemp(prefix="loopprof-soak-")
    result = {"secs": args.secs, "workers": 4}
    ok = True
    try:
        wait_health(port)
        time.sleep(2)
        first_workers = set(tree(server.pid)) - {server.pid}
        # Maximum load: cheap requests and some that block the loop 20 ms, back to back.
        load = subprocess.Popen(
            [os.path.join(venv, "bin/python"), os.path.join(ROOT, "tests/python/load.py"),
             "--url", "http://127.0.0.1:%d/health" % port,
             "--url", "http://127.0.0.1:%d/sleep?ms=20" % port,
             "--concurrency", str(args.concurrency), "--duration", str(args.secs + 30), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(2)
        rec = subprocess.Popen(
            [args.loopprof, "record", "--pid", str(server.pid), "--duration", str(args.secs),
             "-o", os.path.join(out, "rec")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        rss = []
        hwm = 0
        t0 = time.monotonic()
        sampling_rss = 0
        seen_workers = set(first_workers)
        while rec.poll() is None:
            r = proc_status(rec.pid, "VmRSS")
            h = proc_status(rec.pid, "VmHWM")
            if r:
                rss.append(int(r))
                hwm = max(hwm, int(h or 0))
                if time.monotonic() - t0 < args.secs - 2:
                    sampling_rss = max(sampling_rss, int(r))
            seen_workers |= set(tree(server.pid)) - {server.pid}
            time.sleep(5)
        stderr = rec.stderr.read().decode(errors="replace")
        result["loopprof_exit"] = rec.returncode
        result["loopprof_rss_kb_while_sampling_max"] = sampling_rss
        result["loopprof_rss_kb_series"] = rss[::12]
        result["loopprof_rss_kb_peak"] = hwm
        result["worker_pids_seen"] = len(seen_workers)
        bad = stopped_or_traced(tree(server.pid))
        result["threads_left_stopped_or_traced"] = bad
        load.send_signal(signal.SIGTERM)
        try:
            lo = load.communicate(timeout=30)[0].decode().strip().splitlines()
            result["load"] = json.loads(lo[-1]) if lo else None
        except Exception:  # noqa: BLE001
            load.kill()
        ins = subprocess.run([args.loopprof, "inspect", "--json", os.path.join(out, "rec")],
                             capture_output=True)
        result["inspect_exit"] = ins.returncode
        result["inspect_warnings"] = ins.stderr.decode(errors="replace").strip()
        if ins.returncode == 0:
            o = json.loads(ins.stdout)
            procs = [p for p in o["processes"] if p["samples"] > 0]
            result["processes_sampled"] = len(procs)
            result["achieved_hz_min"] = min(p["achieved_hz"] for p in procs)
            result["achieved_hz_median"] = sorted(p["achieved_hz"] for p in procs)[len(procs) // 2]
            result["failed_ticks"] = o["errors"]
            result["samples"] = sum(p["samples"] for p in procs)
        with open(os.path.join(out, "rec", "summary.json")) as f:
            s = json.load(f)
        result["quality"] = {k: s["quality"][k] for k in
                             ("trusted", "failed_pct", "lost_pct", "stopped_pct", "problems")}
        result["recording_bytes"] = os.path.getsize(os.path.join(out, "rec", "recording.jsonl.gz"))
        ok = (rec.returncode == 0 and not bad and ins.returncode == 0
              and not result["inspect_warnings"] and s["quality"]["trusted"])
        if not ok:
            result["loopprof_stderr"] = stderr[-2000:]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    result["ok"] = ok
    result["output"] = out
    print(json.dumps(result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
