#!/usr/bin/env bash
# Instructions per request, for the whole gateway process and for each pipeline stage, counted
# by valgrind's callgrind (repeatable where wall-clock throughput on a shared machine is not).
# Runs apiguard under callgrind with CONFIG, sends N keep-alive requests with wrk (one
# connection; the GET of scripts/bench-policy.sh, or its 2 KB POST with POST=1), and prints
# the inclusive instruction count per request of the process and of every `Stage::inspect`.
#
# usage: scripts/stage-instructions.sh CONFIG     (after `cargo build --release`; the backend
#        of scripts/bench-policy.sh must listen on :9000)
# environment: APIGUARD_BIN (target/release/apiguard), DURATION (20s), POST (0), OUT
# (/tmp/apiguard-callgrind)
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${1:?usage: scripts/stage-instructions.sh CONFIG}
BIN=${APIGUARD_BIN:-target/release/apiguard}
DURATION=${DURATION:-20s}
OUT=${OUT:-/tmp/apiguard-callgrind}
TOKEN=$(tr -d '\n' <examples/bench-policy/token)
PORT=$(sed -n 's/^ *address: *127\.0\.0\.1:\([0-9]*\).*/\1/p' "$CONFIG" | head -1)
PATH_=/api/users/42?q=hello
SCRIPT=()
if [ "${POST:-0}" = 1 ]; then
    PATH_=/api/orders
    SCRIPT=(-s examples/bench-policy/post-json-2k.lua)
fi
command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null && command -v wrk >/dev/null \
    || { echo "needs valgrind (callgrind_annotate, callgrind_control) and wrk" >&2; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT"/callgrind.out.*
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" \
    "$BIN" run --config "$CONFIG" >"$OUT/apiguard.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT
for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
HDRS=(-H 'Host: localhost' -H 'Accept: application/json' -H "Authorization: Bearer $TOKEN")
# Warm up (first token verification, connection pool, lazily built state), then count.
wrk -t1 -c1 -d3s "${HDRS[@]}" "${SCRIPT[@]}" "http://127.0.0.1:$PORT$PATH_" >/dev/null
callgrind_control -z "$PID" >/dev/null
RESULT=$(wrk -t1 -c1 -d"$DURATION" "${HDRS[@]}" "${SCRIPT[@]}" "http://127.0.0.1:$PORT$PATH_")
callgrind_control -d "$PID" >/dev/null
sleep 1
N=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$RESULT")
if grep -q "Non-2xx" <<<"$RESULT"; then
    echo "some requests were refused:" >&2
    echo "$RESULT" >&2
    exit 1
fi
DUMP=$(ls -t "$OUT"/callgrind.out.* | head -1)
echo "config $CONFIG, ${PATH_}, $N requests, dump $DUMP"
callgrind_annotate --inclusive=yes --threshold=100 "$DUMP" 2>/dev/null | python3 -c '
import re, sys
n = int(sys.argv[1])
total = None
stages = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
    if not m:
        continue
    ir = int(m.group(1).replace(",", ""))
    rest = m.group(2)
    if rest.strip() == "PROGRAM TOTALS":
        total = ir
        continue
    name = re.sub(r"\s+\[[^\]]*\]$", "", rest.split(":", 1)[-1]).strip()
    s = re.match(r"^<(\w+)::(?:\w+::)*(\w+) as apiguard_model::pipeline::Stage>::inspect$", name)
    if s:
        key = f"{s.group(1)}::{s.group(2)}::inspect"
    elif name == "apiguard_gateway::pipeline::Pipeline::run":
        key = "Pipeline::run (all stages)"
    else:
        continue
    stages[key] = stages.get(key, 0) + ir
print(f"{total / n:10.0f}  instructions per request, whole process")
for key, ir in sorted(stages.items(), key=lambda kv: -kv[1]):
    print(f"{ir / n:10.0f}  {key}")
' "$N"
