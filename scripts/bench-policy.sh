#!/usr/bin/env bash
# Throughput with the zero-trust set on versus off, as ratios measured in one run (issue 5):
# two apiguard processes side by side in front of the same backend, the same requests
# (compare.sh's GET and 2 KB JSON POST, with a bearer token), rounds alternating in order.
#
#   off: examples/bench.yaml          (127.0.0.1:8080): detection at its defaults, nothing else
#   on:  examples/bench-policy.yaml   (127.0.0.1:8081): the same plus JWT authentication,
#        per-client and per-identity rate limits, Cedar authorisation, OpenAPI validation
#
# usage: scripts/bench-policy.sh        (after `cargo build --release`)
# environment: APIGUARD_BIN (target/release/apiguard), ROUNDS (3), DURATION (10s), CONNS (64)
# Last line: `summary: get_on_vs_off=<ratio> post2k_on_vs_off=<ratio> ...`.
set -u -o pipefail
cd "$(dirname "$0")/.."

BIN=${APIGUARD_BIN:-target/release/apiguard}
OFF_CONFIG=examples/bench.yaml
ON_CONFIG=examples/bench-policy.yaml
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
RUN=${BENCH_RUN:-/tmp/apiguard-bench-policy}
POST_BODY=examples/bench-policy/post-json-2k.lua
TOKEN=$(tr -d '\n' <examples/bench-policy/token)
HDRS=(-H 'Host: localhost' -H 'Accept: application/json' -H "Authorization: Bearer $TOKEN")
PIDS=()
SUMMARY=()

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { local i; for i in $(seq 1 100); do port_open "$1" && return 0; sleep 0.1; done; return 1; }

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    [ -s "$RUN/nginx.pid" ] && kill -QUIT "$(cat "$RUN/nginx.pid")" 2>/dev/null
    return 0
}
trap cleanup EXIT

command -v wrk >/dev/null && command -v nginx >/dev/null || {
    log "installing wrk and nginx"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null \
        || die "apt-get install wrk nginx failed"
}
[ -x "$BIN" ] || die "no apiguard binary at $BIN (cargo build --release, or set APIGUARD_BIN)"
mkdir -p "$RUN"

# The backend of ../shared/bench (200 {"ok":true} for anything), unless it already runs.
if ! port_open 9000; then
    cat >"$RUN/nginx.conf" <<CONF
worker_processes 2;
daemon on;
pid $RUN/nginx.pid;
error_log $RUN/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 100000;
    client_max_body_size 1m;
    client_body_buffer_size 1m;
    client_body_temp_path $RUN/client_body;
    server {
        listen 127.0.0.1:9000 backlog=4096;
        location / { default_type application/json; return 200 '{"ok":true}'; }
    }
}
CONF
    nginx -e "$RUN/error.log" -c "$RUN/nginx.conf" || die "the backend (nginx) did not start"
    wait_port 9000 || die "the backend did not listen on :9000"
fi

for config in "$OFF_CONFIG" "$ON_CONFIG"; do
    "$BIN" run --config "$config" >"$RUN/$(basename "$config" .yaml).log" 2>&1 &
    PIDS+=($!)
done
wait_port 8080 && wait_port 8081 || { tail -5 "$RUN"/*.log >&2; die "apiguard did not start"; }

wrk_run() { # url [script] -> "rps p99_ms non2xx"
    local sargs=() out
    [ -n "${2:-}" ] && sargs=(-s "$2")
    out=$(wrk -t2 -c"$CONNS" -d"$DURATION" --timeout 10s --latency "${sargs[@]}" "${HDRS[@]}" "$1" 2>&1)
    python3 - "$out" <<'PY'
import re, sys
o = sys.argv[1]
rps = re.search(r"Requests/sec:\s+([\d.]+)", o)
p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", o, re.M)
non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", o)
ms = 0.0
if p99:
    v, u = float(p99.group(1)), p99.group(2)
    ms = v / 1000 if u == "us" else v * 1000 if u == "s" else v
print(f"{float(rps.group(1)) if rps else 0:.0f} {ms:.2f} {non.group(1) if non else 0}")
PY
}
median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.3f}" if v else "nan")' "$@"; }

# Every request must pass on both: a refusal would make "on" look cheap.
for port in 8080 8081; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "${HDRS[@]}" "http://127.0.0.1:$port/api/users/42?q=hello")
    [ "$code" = 200 ] || die "GET through :$port answered $code, not 200 (see $RUN/*.log)"
done

for c in "get|/api/users/42?q=hello|" "post2k|/api/orders|$POST_BODY"; do
    IFS='|' read -r name path script <<<"$c"
    declare -A RPS=() P99=()
    ratios=()
    for port in 8080 8081; do DURATION=2s wrk_run "http://127.0.0.1:$port$path" "$script" >/dev/null; done
    for r in $(seq 1 "$ROUNDS"); do
        order=(off on); [ $((r % 2)) = 0 ] && order=(on off)
        for which in "${order[@]}"; do
            port=8080; [ "$which" = on ] && port=8081
            read -r rps p99 non <<<"$(wrk_run "http://127.0.0.1:$port$path" "$script")"
            [ "$non" != 0 ] && die "$name $which: $non non-2xx responses"
            RPS[$which]=$rps; P99[$which]+="$p99 "
            log "$name round $r $which: $rps req/s, p99 $p99 ms"
        done
        ratios+=("$(python3 -c "print(${RPS[on]}/${RPS[off]} if ${RPS[off]} else 0)")")
    done
    # shellcheck disable=SC2086
    SUMMARY+=("${name}_on_vs_off=$(median "${ratios[@]}")" "${name}_p99_ms_off=$(median ${P99[off]})" "${name}_p99_ms_on=$(median ${P99[on]})")
done
echo "summary: ${SUMMARY[*]}"
