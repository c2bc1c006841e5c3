"""loopprof vs the PyPI py-spy CLI: cost to the target, analysis speed, recording size.

    target/venvs/py3.11/bin/python benches/compare.py [--secs 10] [--repeat 5] [--size-secs 60]
                                                      [--quick] [--json OUT]

(run `scripts/venv.sh 3.11`, `cargo build --release` and
`cargo build --release --examples` first; prints Markdown tables on stdout, progress on stderr)

1. Cost to the target. One uvicorn server of tests/python/app.py (`--loop uvloop`, one
   worker, `--no-access-log`) under bounded loopback load (tests/python/load.py,
   `/cpu?ms=5`, 4 connections: the event loop is CPU-bound and saturated, so throughput tracks
   the share of time the loop can run). Conditions, in rotating order per repeat:
   `none`, `py-spy record` (default = blocking), `loopprof record` (default) and
   `loopprof record --nonblocking`, at 100 Hz and 1000 Hz. The load runs only inside the
   profiling window (it starts once the profiler is sampling and stops 0.5 s before the
   recording ends); `none` runs the same load without a profiler. Reported: throughput and
   p99 (and their ratio to `none` of the same repeat), loopprof's stopped time per sample
   (`read_us`), achieved sampling rate, failed ticks, share of complete stacks (MainThread's
   outermost frame is `<module>` of the uvicorn script), loop time lost and sampler CPU per
   sample. App pinned to core 1, load generator + profiler + this script to core 0.
2. Analysis speed: `loopprof report` of a synthetic 1-minute and 60-minute recording
   (examples/synth_recording) vs inferno rendering the equivalent folded stacks
   (examples/inferno_reference), wall time and peak RSS (`/usr/bin/time -v`).
3. Size: loopprof's recording.jsonl.gz vs py-spy `--format raw` and `--format speedscope`
   (and both gzip -9), bytes per minute at 100 Hz of the same load, from one `--size-secs`
   (default 60) window each.

`--quick`: 1 repeat, 3 s windows, 10 s size windows, 100 Hz only (a smoke run). Medians and min-max over repeats.
Only 127.0.0.1 is used; every process started is killed at the end.
"""

import argparse
import datetime
import gzip
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from benchlib import free_port, proc_cpu_s, q, steady_cpu, wait_health

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.dirname(os.path.dirname(sys.executable))
LOOPPROF = os.environ.get("LOOPPROF", os.path.join(ROOT, "target/release/loopprof"))
SYNTH = os.path.join(ROOT, "target/release/examples/synth_recording")
INFERNO = os.path.join(ROOT, "target/release/examples/inferno_reference")
PYSPY = os.path.join(VENV, "bin/py-spy")
UVICORN = os.path.join(VENV, "bin/uvicorn")
LOAD = os.path.join(ROOT, "tests/python/load.py")
ENDPOINT = "/cpu?ms=5"
CONCURRENCY = 4
APP_CORE, TOOL_CORE = 1, 0
PYSPY_FLAGS = ["--idle", "--threads"]  # record every sample of every thread, like loopprof

PROCS = []  # every Popen started (each in its own session), killed in main's finally


def log(msg):
    sys.stderr.write("[compare %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# ---------------------------------------------------------------- helpers (from stop_cost.py)


# ---------------------------------------------------------------- process helpers


PIN = {"ok": False, "why": ""}


def pinned(core, cmd):
    return (["taskset", "-c", str(core)] + cmd) if PIN["ok"] else cmd


def spawn(cmd, **kw):
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.DEVNULL)
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    PROCS.append(p)
    return p


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def watch_until_exit(p, polls, timeout):
    """Poll p's CPU every 50 ms into polls [(wall, cpu_s)] until it exits; reap it with
    wait4 and return its own rusage (exact total CPU, independent of other children)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return ru
        if time.monotonic() > deadline:
            kill_group(p)
            raise RuntimeError("%s did not finish in time" % p.args)
        c = proc_cpu_s(p.pid)
        if c is not None:
            polls.append((time.time(), c))
        time.sleep(0.05)


def start_load(port, secs):
    cmd = pinned(TOOL_CORE, [sys.executable, LOAD, "--url", "http://127.0.0.1:%d%s" % (port, ENDPOINT),
                             "--concurrency", str(CONCURRENCY), "--duration", "%.2f" % secs, "--json"])
    return spawn(cmd, stdout=subprocess.PIPE)


def finish_load(p):
    out, _ = p.communicate(timeout=60)
    line = out.decode().strip().splitlines()[-1]
    return json.loads(line)


# ---------------------------------------------------------------- recordings


def parse_loopprof(path, pid):
    strings, frames, stacks = {}, {}, {}
    reads, complete, total, end, header = [], 0, 0, {}, {}
    with gzip.open(path, "rt") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                break  # cut short
            t, d = rec.get("type"), rec.get("data", {})
            if t == "string":
                strings[d["id"]] = d["s"]
            elif t == "frame":
                frames[d["id"]] = (d["name"], d["file"])
            elif t == "stack":
                stacks[d["id"]] = d["frames"]
            elif t == "header":
                header = d
            elif t == "end":
                end = d
            elif t in ("sample", "tick") and d["pid"] == pid:  # tick: format v2+
                reads.append(d["read_us"])
                threads = d["threads"]
                main = [th for th in threads if strings.get(th.get("name")) == "MainThread"]
                main = main or [th for th in threads if th["tid"] == pid] or threads[:1]
                total += 1
                if main:
                    fr = stacks.get(main[0]["stack"], [])
                    if fr:
                        name, file = frames[fr[-1]]  # innermost first: outermost is last
                        if strings.get(name) == "<module>" and os.path.basename(strings.get(file, "")) == "uvicorn":
                            complete += 1
    return {"reads": reads, "samples": total, "complete": complete, "end": end, "header": header}


PYSPY_MODULE = re.compile(r"^<module> \((.*):\d+\)$")


def parse_pyspy_raw(path, pid):
    """py-spy raw: `frame;frame;... count`, outermost first; with --threads the first element is
    `thread (TID): NAME`."""
    total = complete = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            try:
                n = int(count)
            except ValueError:
                continue
            parts = stack.split(";")
            if parts and parts[0].startswith("thread ("):
                th = parts.pop(0)
                m = re.match(r"thread \((\d+)\)(?:: (.*))?", th)
                if m and not (m.group(2) == "MainThread" or int(m.group(1)) == pid):
                    continue
            total += n
            m = PYSPY_MODULE.match(parts[0]) if parts else None
            if m and os.path.basename(m.group(1)) == "uvicorn":
                complete += n
    return {"samples": total, "complete": complete}


# ---------------------------------------------------------------- part 1


def run_condition(cond, port, server_pid, secs, tmp, tag):
    """One profiling window. Returns a dict of measurements."""
    kind, rate = cond["kind"], cond["rate"]
    load_secs = max(1.0, secs - 0.5)
    res = {"cond": cond["name"], "rate": rate}
    if kind == "none":
        lp = start_load(port, load_secs)
        res["load"] = finish_load(lp)
        return res

    polls, lines = [], []
    if kind == "pyspy":
        out = os.path.join(tmp, tag + ".raw")
        cmd = [PYSPY, "record", "--pid", str(server_pid), "--rate", str(rate), "--duration", str(secs),
               "--format", cond.get("format", "raw"), "-o", out] + PYSPY_FLAGS
        p = spawn(pinned(TOOL_CORE, cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def reader():
            for raw in p.stdout:
                lines.append((time.time(), raw.decode(errors="replace").rstrip()))
        rt = threading.Thread(target=reader, daemon=True)
        rt.start()
        deadline = time.monotonic() + 20
        while not any("Sampling process" in l for _, l in lines):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("py-spy did not start sampling: %s" % [l for _, l in lines])
            time.sleep(0.005)
        started = [t for t, l in lines if "Sampling process" in l][0]
    else:
        out = os.path.join(tmp, tag)
        cmd = [LOOPPROF, "record", "--pid", str(server_pid), "--rate", str(rate), "--duration", str(secs),
               "-o", out] + (["--nonblocking"] if kind == "loopprof-nb" else [])
        p = spawn(pinned(TOOL_CORE, cmd))
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(out, "recording.jsonl.gz")):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("loopprof did not start recording (exit %s)" % p.returncode)
            time.sleep(0.005)
        started = time.time()
    load = start_load(port, load_secs)
    ru = watch_until_exit(p, polls, timeout=secs * 4 + 60)
    ended = time.time()
    res["load"] = finish_load(load)
    if p.returncode != 0:
        raise RuntimeError("%s exited with %s" % (cmd[0], p.returncode))
    res["cpu_total_s"] = ru.ru_utime + ru.ru_stime
    cpu, span = steady_cpu(polls, started + 0.5, started + secs - 0.3)

    if kind == "pyspy":
        rt.join(5)
        wrote = [t for t, l in lines if l.startswith("py-spy> Wrote")]
        m = [re.search(r"Samples: (\d+) Errors: (\d+)", l) for _, l in lines]
        m = [x for x in m if x]
        wall = (wrote[0] if wrote else ended) - started
        res["wall_s"] = wall
        res["errors"] = int(m[-1].group(2)) if m else None
        res["bytes"] = os.path.getsize(out)
        with open(out, "rb") as f:
            res["gz9_bytes"] = len(gzip.compress(f.read(), 9))
        if cond.get("format", "raw") == "raw":
            st = parse_pyspy_raw(out, server_pid)
            res["samples"] = st["samples"]
            res["complete_share"] = st["complete"] / st["samples"] if st["samples"] else None
        else:
            res["samples"] = int(m[-1].group(1)) if m else None
    else:
        st = parse_loopprof(os.path.join(out, "recording.jsonl.gz"), server_pid)
        end = st["end"]
        wall = end.get("duration_us", secs * 1e6) / 1e6
        res["wall_s"] = wall
        res["samples"] = st["samples"]
        res["errors"] = end.get("errors")
        res["missed"] = end.get("missed")
        res["stopped_us_total"] = end.get("stopped_us")
        res["read_us_p50"] = statistics.median(st["reads"]) if st["reads"] else None
        res["read_us_p99"] = q(st["reads"], 0.99) if st["reads"] else None
        res["complete_share"] = st["complete"] / st["samples"] if st["samples"] else None
        res["bytes"] = os.path.getsize(os.path.join(out, "recording.jsonl.gz"))
        res["format_version"] = st["header"].get("version")
        res["dir_bytes"] = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    res["rate_hz"] = res["samples"] / wall if res.get("samples") and wall > 0 else None
    if cpu is not None and res["rate_hz"]:
        res["cpu_steady_ms_per_sample"] = 1e3 * cpu / (span * res["rate_hz"])
    if res.get("samples"):
        res["cpu_total_ms_per_sample"] = 1e3 * res["cpu_total_s"] / res["samples"]
    if kind == "loopprof":
        res["lost_est"] = res["read_us_p50"] * 1e-6 * res["rate_hz"] if res["read_us_p50"] else None
        res["lost_sum"] = (res["stopped_us_total"] or 0) / 1e6 / wall
    elif kind == "loopprof-nb":
        res["lost_est"] = res["lost_sum"] = 0.0
    return res


def conditions(rates):
    out = [{"name": "none", "kind": "none", "rate": None}]
    for r in rates:
        out += [
            {"name": "py-spy record (default, blocking)", "kind": "pyspy", "rate": r},
            {"name": "loopprof record (default)", "kind": "loopprof", "rate": r},
            {"name": "loopprof record --nonblocking", "kind": "loopprof-nb", "rate": r},
        ]
    return out


def part1(args, tmp):
    conds = conditions(args.rates)
    port = free_port()
    server = spawn(pinned(APP_CORE, [UVICORN, "app:app", "--host", "127.0.0.1", "--port", str(port),
                                     "--loop", "uvloop", "--workers", "1", "--no-access-log"]),
                   cwd=os.path.join(ROOT, "tests/python"))
    wait_health(port)
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, ENDPOINT), timeout=5) as r:
        assert r.status == 200, "endpoint %s missing" % ENDPOINT
    log("server pid %d on 127.0.0.1:%d; warm-up load 2 s" % (server.pid, port))
    finish_load(start_load(port, 2))
    runs = []
    for rep in range(args.repeat):
        k = rep % len(conds)
        order = conds[k:] + conds[:k]
        for i, cond in enumerate(order):
            tag = "r%d-%s-%s" % (rep, cond["kind"], cond["rate"])
            log("repeat %d/%d: %s%s" % (rep + 1, args.repeat, cond["name"],
                                        " @ %d Hz" % cond["rate"] if cond["rate"] else ""))
            res = run_condition(cond, port, server.pid, args.secs, tmp, tag)
            res["repeat"] = rep
            res["position"] = i
            runs.append(res)
            time.sleep(0.5)  # let the server drain

    # part 3: one longer window per output, same load: definitions (strings, frames, stacks,
    # source lines) are written once, so a short window overstates the size per minute.
    ss = []
    for cond in ({"name": "loopprof record (default)", "kind": "loopprof", "rate": 100},
                 {"name": "py-spy record (default, blocking)", "kind": "pyspy", "rate": 100},
                 {"name": "py-spy speedscope", "kind": "pyspy", "rate": 100, "format": "speedscope"}):
        log("size: %s @ 100 Hz for %d s" % (cond["name"], args.size_secs))
        ss.append(run_condition(cond, port, server.pid, args.size_secs, tmp, "size-%d" % len(ss)))
        time.sleep(0.5)
    kill_group(server)
    server.wait()
    return conds, runs, ss


# ---------------------------------------------------------------- part 2


def timed(cmd, tmp, keep_stdout=True):
    """Wall seconds (own clock), user+sys seconds and peak RSS MB of one command."""
    tfile = os.path.join(tmp, "time.txt")
    use_time = os.path.exists("/usr/bin/time")
    full = (["/usr/bin/time", "-v", "-o", tfile] + cmd) if use_time else cmd
    t0 = time.monotonic()
    p = spawn(full, stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL)
    out, _ = p.communicate(timeout=600)
    out = out or b""
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError("%s exited with %s" % (cmd, p.returncode))
    res = {"wall_s": wall, "stdout": out.decode(errors="replace").strip()}
    if use_time:
        txt = open(tfile).read()
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", txt)
        res["rss_mb"] = int(m.group(1)) / 1024 if m else None
        u = re.search(r"User time \(seconds\): ([\d.]+)", txt)
        s = re.search(r"System time \(seconds\): ([\d.]+)", txt)
        res["cpu_s"] = float(u.group(1)) + float(s.group(1)) if u and s else None
        res["rss_via"] = "/usr/bin/time -v"
    else:
        import resource
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        res["rss_mb"] = ru.ru_maxrss / 1024  # max over all children so far: an upper bound
        res["cpu_s"] = None
        res["rss_via"] = "getrusage(RUSAGE_CHILDREN) (max over all children so far)"
    return res


def part2(tmp, repeat):
    rows = []
    for minutes in (1, 60):
        rec = os.path.join(tmp, "synth-%d.jsonl.gz" % minutes)
        folded = os.path.join(tmp, "synth-%d.folded" % minutes)
        log("synth_recording %d min" % minutes)
        subprocess.run([SYNTH, str(minutes), rec, folded], check=True, stdout=subprocess.DEVNULL)
        info = {"minutes": minutes, "rec_bytes": os.path.getsize(rec),
                "folded_lines": sum(1 for _ in open(folded)), "samples": 100 * 60 * minutes}
        for _ in range(repeat):
            log("loopprof report (%d min)" % minutes)
            info.setdefault("report", []).append(
                timed([LOOPPROF, "report", rec, "-o", os.path.join(tmp, "report-%d" % minutes)], tmp))
            log("inferno_reference (%d min)" % minutes)
            info.setdefault("inferno", []).append(
                timed([INFERNO, folded, os.path.join(tmp, "synth-%d.svg" % minutes)], tmp))
            if shutil.which("gzip"):
                info.setdefault("gunzip", []).append(timed(["gzip", "-dc", rec], tmp, keep_stdout=False))
        rows.append(info)
    return rows


# ---------------------------------------------------------------- formatting


def spread(values, fmt="%.1f"):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt % med
    return "%s (%s–%s)" % (fmt % med, fmt % min(values), fmt % max(values))


def overlaps(a, b):
    a, b = [x for x in a if x is not None], [x for x in b if x is not None]
    if len(a) < 2 or len(b) < 2:
        return None
    return min(a) <= max(b) and min(b) <= max(a)


def noise_tag(a, b):
    o = overlaps(a, b)
    if o is None:
        return " (1 repeat: no spread)"
    return " — within noise" if o else ""


def by(runs, name, rate):
    return sorted([r for r in runs if r["cond"] == name and r["rate"] == rate], key=lambda r: r["repeat"])


def ratios(runs, base, key):
    base_by_rep = {r["repeat"]: r["load"][key] for r in base}
    return [r["load"][key] / base_by_rep[r["repeat"]] for r in runs
            if base_by_rep.get(r["repeat"]) and r["load"][key] is not None]


def pct(x):
    return None if x is None else 100.0 * x


def print_part1(args, conds, runs):
    none = by(runs, "none", None)
    print("## 1. Cost to the target\n")
    print("uvicorn `tests/python/app.py` (`--loop uvloop --workers 1 --no-access-log`), load: "
          "`tests/python/load.py --concurrency %d` on `%s` (loop CPU-bound, saturated); %d s profiling "
          "windows, load inside the window (%.1f s, started once the profiler samples), %d repeat(s) in "
          "rotating order; median (min–max over repeats). py-spy runs as `py-spy record --pid PID --rate HZ "
          "--duration S --format raw %s` (its default blocking mode)."
          % (CONCURRENCY, ENDPOINT, args.secs, max(1.0, args.secs - 0.5), args.repeat, " ".join(PYSPY_FLAGS)))
    print()
    print("Pinning: " + (("app on core %d, load generator + profiler + harness on core %d (taskset)."
                          % (APP_CORE, TOOL_CORE)) if PIN["ok"] else "none (%s)." % PIN["why"]))
    print()
    print("### Throughput and latency of the app\n")
    print("| condition | rate | req/s | vs none | p99 (ms) | p99 vs none |")
    print("| --- | --- | --- | --- | --- | --- |")
    for c in conds:
        rs = by(runs, c["name"], c["rate"])
        rps = [r["load"]["rps"] for r in rs]
        p99 = [r["load"]["p99_ms"] for r in rs]
        if c["kind"] == "none":
            print("| none | – | %s | 1 | %s | 1 |" % (spread(rps, "%.0f"), spread(p99)))
            continue
        print("| %s | %d Hz | %s | %s%s | %s | %s%s |" % (
            c["name"], c["rate"], spread(rps, "%.0f"),
            spread(ratios(rs, none, "rps"), "%.2f"), noise_tag(rps, [r["load"]["rps"] for r in none]),
            spread(p99), spread(ratios(rs, none, "p99_ms"), "%.2f"),
            noise_tag(p99, [r["load"]["p99_ms"] for r in none])))
    print()
    print("### The sampler\n")
    print("| condition | rate | target stopped per sample (µs, median of `read_us`) | achieved rate (Hz) "
          "| failed ticks | complete MainThread stacks | loop time lost | sampler CPU per sample (ms), "
          "steady (incl. attach + exit work) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in conds:
        if c["kind"] == "none":
            continue
        rs = by(runs, c["name"], c["rate"])
        if c["kind"] == "pyspy":
            stop = "not observable"
            loss = [1 - x for x in ratios(rs, none, "rps")]
            lost = "not observable; ≈ 1 − req/s ratio = %s%%" % spread([pct(x) for x in loss])
        elif c["kind"] == "loopprof":
            stop = spread([r["read_us_p50"] for r in rs], "%.0f")
            lost = "%s%% (Σ read_us / wall %s%%)" % (spread([pct(r["lost_est"]) for r in rs]),
                                                    spread([pct(r["lost_sum"]) for r in rs]))
        else:
            stop = "0 (read %s)" % spread([r["read_us_p50"] for r in rs], "%.0f")
            lost = "0%"
        print("| %s | %d Hz | %s | %s | %s | %s%% | %s | %s (%s) |" % (
            c["name"], c["rate"], stop, spread([r["rate_hz"] for r in rs], "%.0f"),
            spread([r.get("errors") for r in rs], "%.0f"),
            spread([pct(r.get("complete_share")) for r in rs]), lost,
            spread([r.get("cpu_steady_ms_per_sample") for r in rs], "%.2f"),
            spread([r.get("cpu_total_ms_per_sample") for r in rs], "%.2f")))
    print()
    print("### loopprof vs py-spy at the same rate (same repeat)\n")
    print("| loopprof mode | rate | req/s ratio to py-spy | p99 ratio to py-spy |")
    print("| --- | --- | --- | --- |")
    for rate in args.rates:
        ps = by(runs, "py-spy record (default, blocking)", rate)
        for name in ("loopprof record (default)", "loopprof record --nonblocking"):
            rs = by(runs, name, rate)
            rr = ratios(rs, ps, "rps")
            pr = ratios(rs, ps, "p99_ms")
            print("| %s | %d Hz | %s%s | %s%s |" % (
                name, rate, spread(rr, "%.2f"),
                noise_tag([r["load"]["rps"] for r in rs], [r["load"]["rps"] for r in ps]),
                spread(pr, "%.2f"),
                noise_tag([r["load"]["p99_ms"] for r in rs], [r["load"]["p99_ms"] for r in ps])))
    print()
    print("Notes: *within noise* = the min–max ranges over repeats of the two conditions overlap. "
          "Stopped time is what loopprof writes per sample (`read_us`); with `--nonblocking` nothing "
          "is stopped and the figure is the read time. Loop time lost for loopprof = median stopped "
          "time × achieved rate (Σ = total `stopped_us` / recording length); py-spy does not report "
          "its pauses, so only the throughput loss stands in for it. Complete stacks: MainThread's "
          "outermost frame is `<module>` of the uvicorn script (py-spy: first frame of each raw line, "
          "weighted by count). Achieved rate: samples / recording length (py-spy: raw counts / time "
          "from its `Sampling process` line to its `Wrote` line). Sampler CPU steady = /proc/PID/stat "
          "utime+stime between 0.5 s after the start and 0.3 s before the end of the window / samples "
          "in that span; in brackets the whole process (wait4 rusage) / samples, which adds the attach "
          "and, for loopprof, the end-of-recording diagnosis and report rendering.")
    print()


def print_part2(rows, repeat):
    print("## 2. Analysis speed\n")
    print("Synthetic recording (examples/synth_recording: one uvicorn process at 100 Hz, MainThread "
          "loop + 3 worker threads, 25–40-frame stacks). `loopprof report` parses the recording, "
          "diagnoses it and writes summary.json, report.html/.md and its flame graphs; "
          "`inferno_reference` renders one flame graph from the already-aggregated folded stacks "
          "(rendering only, the reference for the SVG part); `gzip -dc` is the floor for just "
          "decompressing the recording. %d run(s) each, median (min–max), unpinned.\n" % repeat)
    print("| recording | input | command | wall (s) | CPU (s) | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        inp = "%d samples, %.1f MB gz, %d folded lines" % (r["samples"], r["rec_bytes"] / 1e6, r["folded_lines"])
        for label, key in (("loopprof report", "report"), ("inferno_reference (1 SVG)", "inferno"),
                           ("gzip -dc (decompress only)", "gunzip")):
            ts = r.get(key)
            if not ts:
                continue
            extra = ""
            if key == "inferno":
                rend = [float(t["stdout"].splitlines()[-1]) for t in ts if t.get("stdout")]
                extra = " (render %s s)" % spread(rend, "%.3f") if rend else ""
            print("| %d min | %s | %s | %s%s | %s | %s |" % (
                r["minutes"], inp, label, spread([t["wall_s"] for t in ts], "%.2f"), extra,
                spread([t.get("cpu_s") for t in ts], "%.2f"), spread([t.get("rss_mb") for t in ts])))
    via = rows[0]["report"][0].get("rss_via", "")
    print("\nPeak RSS via %s.\n" % via)


def print_part3(args, runs, ss, tmp):
    print("## 3. Size at 100 Hz\n")
    print("Same load as part 1, one %d s window per output (`--size-secs`), scaled to one minute "
          "(py-spy's raw output is aggregated counts, so it grows less than linearly with length; "
          "speedscope and loopprof's recording grow about linearly once their definitions are "
          "written). gzip -9 of py-spy's outputs for a like-for-like compressed size. The short "
          "windows of part 1, where one-off definitions weigh more, in the last rows.\n" % args.size_secs)

    rows = []

    def add(name, rs, key):
        rows.append({"output": name, "bytes": [r[key] for r in rs],
                     "bytes_per_min": [r[key] * 60 / r["wall_s"] for r in rs],
                     "bytes_per_sample": [r[key] / r["samples"] for r in rs if r.get("samples")]})

    lp, raw, speed = ss
    add("loopprof record: recording.jsonl.gz (format v%s)" % lp.get("format_version", "?"), [lp], "bytes")
    add("py-spy --format raw", [raw], "bytes")
    add("py-spy --format raw, gzip -9", [raw], "gz9_bytes")
    add("py-spy --format speedscope", [speed], "bytes")
    add("py-spy --format speedscope, gzip -9", [speed], "gz9_bytes")
    for name in ("loopprof record (default)", "loopprof record --nonblocking"):
        add("%s: recording.jsonl.gz, %d s windows of part 1" % (name, args.secs), by(runs, name, 100), "bytes")
    ps = by(runs, "py-spy record (default, blocking)", 100)
    add("py-spy --format raw, gzip -9, %d s windows of part 1" % args.secs, ps, "gz9_bytes")
    print("| output | KB per window | KB per minute | bytes per sample |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print("| %s | %s | %s | %s |" % (r["output"], spread([x / 1e3 for x in r["bytes"]]),
                                         spread([x / 1e3 for x in r["bytes_per_min"]]),
                                         spread(r["bytes_per_sample"], "%.1f")))
    dirs = [r["dir_bytes"] for r in by(runs, "loopprof record (default)", 100)]
    print("\nloopprof's whole output directory (recording + report.html/.md, summary.json, flame-graph "
          "SVGs, written when the recording ends) was %s KB per %d s window; the report part is mostly "
          "fixed-size, so it is not scaled per minute. The part-1 rows are over its %d 100 Hz run(s).\n"
          % (spread([d / 1e3 for d in dirs], "%.0f"), args.secs, args.repeat))
    return rows


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--secs", type=int, default=10, help="profiling window, seconds (default 10)")
    ap.add_argument("--repeat", type=int, default=5, help="repeats of part 1 (default 5)")
    ap.add_argument("--size-secs", type=int, default=60, help="window of the size comparison, seconds (default 60)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 3 s windows, 100 Hz only")
    ap.add_argument("--json", metavar="OUT", help="also write all measurements as JSON here")
    args = ap.parse_args()
    args.rates = [100, 1000]
    if args.quick:
        args.repeat, args.secs, args.rates, args.size_secs = 1, 3, [100], 10
    args.analysis_repeat = 1 if args.quick else 3
    if args.secs < 2:
        ap.error("--secs must be >= 2")
    for path in (LOOPPROF, PYSPY, UVICORN, SYNTH, INFERNO):
        if not os.path.exists(path):
            raise SystemExit("missing %s (see the header of this script)" % path)

    cpus = os.sched_getaffinity(0)
    if not shutil.which("taskset"):
        PIN["why"] = "taskset not found"
    elif not {APP_CORE, TOOL_CORE} <= cpus:
        PIN["why"] = "cores %d and %d not both available (have %s)" % (APP_CORE, TOOL_CORE, sorted(cpus))
    else:
        PIN["ok"] = True
        os.sched_setaffinity(0, {TOOL_CORE})

    n_runs = args.repeat * (1 + 3 * len(args.rates))
    log("part 1: %d profiling windows of %d s and 3 of %d s for part 3 (estimate %.0f s), then part 2 (~%d s)"
        % (n_runs, args.secs, args.size_secs, n_runs * (args.secs + 1.5) + 3 * (args.size_secs + 1.5),
           25 + 15 * args.analysis_repeat))

    def on_term(signum, frame):
        raise SystemExit("terminated")
    signal.signal(signal.SIGTERM, on_term)

    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="loopprof-compare-")
    try:
        conds, runs, ss = part1(args, tmp)
        if PIN["ok"]:
            os.sched_setaffinity(0, cpus)  # part 2 runs unpinned
        rows2 = part2(tmp, args.analysis_repeat)
        env = {
            "date": datetime.date.today().isoformat(),
            "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "loopprof": subprocess.run([LOOPPROF, "--version"], capture_output=True, text=True).stdout.strip(),
            "py-spy": subprocess.run([PYSPY, "--version"], capture_output=True, text=True).stdout.strip(),
        }
        print("# loopprof vs py-spy\n")
        print("`%s` · %s · %d cores · Linux %s · Python %s · %s · %s\n" % (
            " ".join(["benches/compare.py"] + sys.argv[1:]), env["cpu"], env["cores"], env["kernel"],
            env["python"], env["loopprof"], env["py-spy"]))
        print_part1(args, conds, runs)
        print_part2(rows2, args.analysis_repeat)
        rows3 = print_part3(args, runs, ss, tmp)
        elapsed = time.monotonic() - t_start
        print("Total run time: %.0f s.\n" % elapsed)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"env": env, "args": {"secs": args.secs, "repeat": args.repeat, "rates": args.rates,
                                                "quick": args.quick, "pinning": PIN},
                           "part1": runs, "speedscope": ss, "part2": rows2,
                           "part3": rows3,
                           "elapsed_s": elapsed}, f, indent=1)
    finally:
        for p in PROCS:
            kill_group(p)
            try:
                p.wait(timeout=5)
            except (subprocess.TimeoutExpired, ChildProcessError):
                pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
