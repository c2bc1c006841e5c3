"""Runs as pid 1 of a pid namespace of the test's own (`unshare -p -f --mount-proc`).

Starts decoy processes first, so that they get the low pids (2, 3, ...) that the target's
threads carry inside its own, nested pid namespace; then the target (a Python process with a
second thread, in a nested namespace, where its threads are 1 and 2); then records the
target with loopprof by the pid this namespace gives it. Each decoy sits in epoll_wait and
counts the times it returns EINTR: a ptrace interrupt (or any stop) makes it return EINTR, so
a count above zero means loopprof stopped a process that is not its target.

usage: pidns_harness.py LOOPPROF OUTDIR SECONDS
Prints one JSON object on stdout.
"""
import json
import os
import subprocess
import sys
import time

DECOY = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
ep = libc.epoll_create1(0)
buf = ctypes.create_string_buffer(64)
n = 0
while True:
    r = libc.epoll_wait(ep, buf, 4, 100)
    if r < 0 and ctypes.get_errno() == 4:
        n += 1
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(n))
    import os
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
"""

TARGET = r"""
import threading, time
def worker():
    while True:
        time.sleep(0.05)
threading.Thread(target=worker, name="worker", daemon=True).start()
while True:
    time.sleep(0.05)
"""


def main():
    loopprof, outdir, secs = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(outdir, exist_ok=True)
    decoys = []
    for i in range(3):
        path = os.path.join(outdir, f"decoy{i}.count")
        p = subprocess.Popen([sys.executable, "-c", DECOY, path])
        decoys.append((p, path))
    for _, path in decoys:
        deadline = time.time() + 10
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.02)
    unshare = subprocess.Popen(
        ["unshare", "-p", "-f", "--mount-proc", sys.executable, "-c", TARGET]
    )
    # The target is unshare's child; wait for it and its second thread.
    target, tids = None, []
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with open(f"/proc/{unshare.pid}/task/{unshare.pid}/children") as f:
                kids = f.read().split()
            if kids:
                target = int(kids[0])
                tids = sorted(int(t) for t in os.listdir(f"/proc/{target}/task"))
                if len(tids) >= 2:
                    break
        except OSError:
            pass
        time.sleep(0.05)
    with open(f"/proc/{target}/status") as f:
        nspid = [l for l in f if l.startswith("NSpid:")][0].split()[1:]
    time.sleep(0.3)
    rec = os.path.join(outdir, "rec")
    run = subprocess.run(
        [loopprof, "record", "--pid", str(target), "--duration", secs, "-o", rec],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    time.sleep(0.3)
    counts = []
    for p, path in decoys:
        with open(path) as f:
            counts.append(int(f.read() or 0))
    result = {
        "target_pid": target,
        "target_tids": tids,
        "target_nspid": [int(x) for x in nspid],
        "decoy_pids": [p.pid for p, _ in decoys],
        "decoy_eintr": counts,
        "loopprof_exit": run.returncode,
        "loopprof_stderr": run.stderr[-4000:],
        "recording": rec,
    }
    for p, _ in decoys:
        p.kill()
    unshare.kill()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
