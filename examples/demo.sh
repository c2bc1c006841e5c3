#!/usr/bin/env bash
# loopprof quickstart demo: profile a FastAPI news service whose SSE route
# blocks the event loop (ThreadPoolExecutor shutdown(wait=True) on disconnect).
#
#   examples/demo.sh
#
# Environment:
#   DURATION=10          seconds loopprof records (load runs DURATION+5 s)
#   OUT=loopprof-demo-<time>  output directory (relative to the current directory)
#   PYTHON=python3       interpreter for the venv (or a version such as 3.12)
#   LOOPPROF=...         loopprof command to run instead of building and using
#                        target/release/loopprof (may include arguments)
#   NEWSAPP_FIXED=1      run the fixed stream route instead (before/after)
#
# Everything binds 127.0.0.1 only; all started processes are stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
OUT="${OUT:-loopprof-demo-$(date +%Y%m%d-%H%M%S)}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
LOGDIR="$ROOT/target/demo-logs"

[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -ge 1 && "$DURATION" -le 600 ]] \
    || { echo "demo: DURATION must be an integer in 1..600" >&2; exit 2; }

log() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }

PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((${#PIDS[@]})); then
        log "stopping ${#PIDS[@]} background process(es)"
        kill -TERM "${PIDS[@]}" 2>/dev/null || true
        local waited=0 alive
        while ((waited < 50)); do          # up to 5 s for a graceful exit
            alive=0
            for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            ((alive)) || break
            sleep 0.1; waited=$((waited + 1))
        done
        kill -KILL "${PIDS[@]}" 2>/dev/null || true
        wait "${PIDS[@]}" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'log "command failed (line $LINENO): $BASH_COMMAND"' ERR

cd "$ROOT"
mkdir -p "$LOGDIR"

# (a) Python environment
log "preparing the Python venv"
VENV="$(scripts/venv.sh "${PYTHON:-python3}" | tail -n 1)"
PY="$VENV/bin/python"

# (b) loopprof itself
if [[ -n "${LOOPPROF:-}" ]]; then
    read -r -a LOOPPROF_CMD <<<"$LOOPPROF"
    log "using LOOPPROF=${LOOPPROF}"
else
    log "building loopprof (cargo build --release)"
    cargo build --release
    LOOPPROF_CMD=("$ROOT/target/release/loopprof")
fi

# (c) feed server + news app
PORTS="$(scripts/free_port.py 2)"
FEEDS_PORT="${PORTS%%$'\n'*}"
APP_PORT="${PORTS##*$'\n'}"
"$PY" examples/demo/feeds_server.py "$FEEDS_PORT" >"$LOGDIR/feeds.log" 2>&1 &
PIDS+=($!)
FEEDS_BASE="http://127.0.0.1:$FEEDS_PORT" "$VENV/bin/uvicorn" newsapp.main:app \
    --app-dir examples/demo --host 127.0.0.1 --port "$APP_PORT" \
    --timeout-graceful-shutdown 2 --no-access-log >"$LOGDIR/uvicorn.log" 2>&1 &
APP_PID=$!
PIDS+=("$APP_PID")
log "feeds on 127.0.0.1:$FEEDS_PORT, news app (pid $APP_PID) on 127.0.0.1:$APP_PORT"

"$PY" - "$APP_PORT" "$FEEDS_PORT" "$APP_PID" <<'EOF' || { tail -n 20 "$LOGDIR/uvicorn.log" >&2; exit 1; }
import os, sys, time, urllib.request
app_port, feeds_port, app_pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 20
pending = ["http://127.0.0.1:%s/health" % feeds_port, "http://127.0.0.1:%s/health" % app_port]
while pending:
    try:
        os.kill(app_pid, 0)
    except OSError:
        sys.exit("demo: the news app exited during startup; log follows")
    if time.monotonic() > deadline:
        sys.exit("demo: %s did not answer within 20 s; uvicorn log follows" % pending[0])
    try:
        with urllib.request.urlopen(pending[0], timeout=2) as r:
            r.read()
        pending.pop(0)
    except OSError:
        time.sleep(0.2)
EOF
log "servers are up"

# (d) load: SSE clients that disconnect after the first event, plus health checks. Each
# client pauses between requests (~10 streams/s and ~80 health checks/s in all), a steady
# staging-like load that leaves a healthy server idle most of the time; without pauses the
# closed-loop clients would saturate the 2-core machine whatever the code does.
LOAD_SECS=$((DURATION + 5))
"$PY" tests/python/load.py --url "http://127.0.0.1:$APP_PORT/news/stream" \
    --concurrency 2 --think-ms 200 --duration "$LOAD_SECS" --disconnect-after-first-chunk --json \
    >"$LOGDIR/load-stream.json" 2>"$LOGDIR/load-stream.err" &
PIDS+=($!)
"$PY" tests/python/load.py --url "http://127.0.0.1:$APP_PORT/health" \
    --concurrency 2 --think-ms 25 --duration "$LOAD_SECS" --json \
    >"$LOGDIR/load-health.json" 2>"$LOGDIR/load-health.err" &
PIDS+=($!)
log "load running for ${LOAD_SECS}s (2x /news/stream with disconnect, 2x /health, with pauses)"

# (e) record
log "recording: ${LOOPPROF_CMD[*]} record --pid $APP_PID --duration $DURATION -o $OUT --probe http://127.0.0.1:$APP_PORT/health"
# Run it in the background and `wait`, so Ctrl-C/TERM reach the cleanup trap at once.
"${LOOPPROF_CMD[@]}" record --pid "$APP_PID" --duration "$DURATION" -o "$OUT" \
    --probe "http://127.0.0.1:$APP_PORT/health" &
LOOPPROF_PID=$!
PIDS+=("$LOOPPROF_PID")
LOOPPROF_RC=0
wait "$LOOPPROF_PID" || LOOPPROF_RC=$?
if ((LOOPPROF_RC != 0)); then
    log "loopprof failed (exit $LOOPPROF_RC); its message is above. Logs: $LOGDIR"
    if ((LOOPPROF_RC == 4)); then
        log "Attaching needs ptrace permission: run as root (sudo), or see docs/permissions.md."
    fi
    exit 1
fi

# (g) where the results are
log "done. open $OUT/report.html (or read $OUT/report.md)"
log "server/load logs: $LOGDIR"
echo "$OUT"
