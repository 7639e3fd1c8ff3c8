#!/usr/bin/env bash
# A/B in one run: two jaring builds (or one build two ways, e.g. plaintext against TLS) on the same
# bench, rounds interleaved so drift hits both alike. Prints the medians and every round's B/A.
#
# Cores: the server under test is pinned to CPU 0 and B's `jaring bench` to CPU 1 (taskset); one
# server runs at a time.
#
# Usage: bench/ab.sh A_BINARY B_BINARY
#   env: WORKLOAD=chat|time|echo (chat)  ROUNDS=5  DURATION=5  CONNECTIONS (chat 100, time 50,
#        echo 1)  SIZE (chat 64 bytes)  TLS=none|b|both (none): with b, side B's bench speaks TLS
#        (the server takes both on one port: time, chat; echo: its TLS port); with both, both do.
# e.g.   cargo build --release -p jaring && WORKLOAD=time bench/ab.sh /tmp/base/jaring target/release/jaring
#        TLS=b bench/ab.sh target/release/jaring target/release/jaring     (TLS against plaintext)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
A=$(realpath "$1") B=$(realpath "$2")
defaults WORKLOAD=chat ROUNDS=5 DURATION=5 TLS=none
case $WORKLOAD in
  chat) CONNECTIONS=${CONNECTIONS:-100} ;;
  time) CONNECTIONS=${CONNECTIONS:-50} ;;
  echo) CONNECTIONS=${CONNECTIONS:-1} ;;
  *) echo "WORKLOAD must be chat, time or echo" >&2; exit 2 ;;
esac
SIZE=${SIZE:-64}
RECEIVERS=$(( (CONNECTIONS + 9) / 10 ))
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding them.
PORT=23310 TLS_PORT=23311
need taskset util-linux
OUT=$(mktemp -d)
pid=
cleanup() { stop_pid "$pid"; wait 2>/dev/null || true; rm -rf "$OUT"; }
trap cleanup EXIT

tls_serve=() tls_bench=()
if [ "$TLS" != none ]; then
  "$B" tls init --dir "$OUT/tls" server > /dev/null
  tls_serve=(--tls-cert "$OUT/tls/server.pem" --tls-key "$OUT/tls/server-key.pem")
  tls_bench=(--tls --ca "$OUT/tls/ca.pem")
fi
if [ "$WORKLOAD" = chat ]; then
  # Made by A, the older build as a rule: B opens (and migrates) what A wrote.
  make_users "$OUT" "$A" $(( CONNECTIONS + RECEIVERS ))
  bench_realm $PORT > "$OUT/realm.toml"
fi

# serve BINARY: starts the server under test on CPU 0 (pid in $pid).
serve() {
  case $WORKLOAD in
    chat)
      rm -rf "$OUT/data" && cp -r "$OUT/template" "$OUT/data"
      RUST_LOG=warn taskset -c 0 "$1" chat serve --config "$OUT/realm.toml" "${tls_serve[@]}" & pid=$! ;;
    time)
      RUST_LOG=warn taskset -c 0 "$1" time serve --bind 127.0.0.1 --port $PORT --tz UTC "${tls_serve[@]}" & pid=$! ;;
    echo)
      local t=()
      [ "$TLS" != none ] && t=("${tls_serve[@]}" --tls-port "$TLS_PORT")
      RUST_LOG=warn taskset -c 0 "$1" echo serve --bind 127.0.0.1 --port $PORT "${t[@]}" & pid=$!
      [ "$TLS" != none ] && wait_port $TLS_PORT ;;
  esac
  wait_port $PORT
}

# bench SIDE: B's load generator on CPU 1 against the running server.
bench() {
  local side=$1 port=$PORT flags=()
  if [ "$TLS" = both ] || { [ "$TLS" = b ] && [ "$side" = B ]; }; then
    flags=("${tls_bench[@]}")
    [ "$WORKLOAD" = echo ] && port=$TLS_PORT
  fi
  case $WORKLOAD in
    chat) flags+=(--size "$SIZE") ;;
  esac
  local before; before=$(cpu_ticks "$pid")
  taskset -c 1 "$B" bench "$WORKLOAD" --port "$port" --connections "$CONNECTIONS" \
    --duration "$DURATION" --json "${flags[@]}" > "$OUT/$side-$round.json" 2> "$OUT/$side-$round.err" || true
  echo $(( $(cpu_ticks "$pid") - before )) > "$OUT/$side-$round.ticks"
}

for round in $(seq "$ROUNDS"); do
  for side in A B; do
    serve "${!side}"
    bench "$side"
    stop_pid "$pid"; pid=
  done
  echo "round $round of $ROUNDS done" >&2
done
python3 - "$OUT" "$ROUNDS" "$A" "$B" "$WORKLOAD" "$TLS" "$(getconf CLK_TCK)" <<'PY'
import json, os, statistics, sys
out, rounds, a, b, workload, tls, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7])
unit = {"chat": "msgs/s", "time": "requests/s", "echo": "MB/s"}[workload]
def get(side, r):
    try:
        j = json.load(open(os.path.join(out, f"{side}-{r}.json")))
    except Exception:
        return None
    rate = j["throughput"]["bytes_per_s"] / 1e6 if workload == "echo" else j["requests_per_s"]
    ticks = int(open(os.path.join(out, f"{side}-{r}.ticks")).read())
    # Per request (time, chat) or per MB (echo).
    ops = j["throughput"]["bytes_per_s"] * j["duration_s"] / 1e6 if workload == "echo" else j["requests"]
    cpu = ticks * 1e6 / hz / max(ops, 1e-9)
    missing = (j.get("delivery") or {}).get("missing", 0)
    return rate, cpu, missing
rows = [(r, get("A", r), get("B", r)) for r in range(1, rounds + 1)]
print(f"A = {a}\nB = {b}\nworkload {workload}, TLS: {tls}\n")
op = "MB" if workload == "echo" else "op"
print(f"| round | A {unit} | B {unit} | B/A | A server µs CPU/{op} | B server µs CPU/{op} | B/A CPU |")
print("|---:|---:|---:|---:|---:|---:|---:|")
ratios, cpu_ratios = [], []
for r, x, y in rows:
    if not x or not y:
        print(f"| {r} | failed | | | | | |")
        continue
    ratios.append(y[0] / x[0]); cpu_ratios.append(y[1] / x[1] if x[1] == x[1] and x[1] else float("nan"))
    print(f"| {r} | {x[0]:,.1f} | {y[0]:,.1f} | {ratios[-1]:.3f} | {x[1]:.2f} | {y[1]:.2f} | {cpu_ratios[-1]:.3f} |")
    if x[2] or y[2]:
        print(f"<!-- round {r}: missing messages A {x[2]}, B {y[2]} -->")
if ratios:
    med = statistics.median
    ok = [(x, y) for _, x, y in rows if x and y]
    print(f"| median | {med([x[0] for x, _ in ok]):,.1f} | {med([y[0] for _, y in ok]):,.1f} | "
          f"{med(ratios):.3f} | {med([x[1] for x, _ in ok]):.2f} | {med([y[1] for _, y in ok]):.2f} | {med(cpu_ratios):.3f} |")
PY
