#!/usr/bin/env bash
# The chat over the web port's WebSocket against the chat port (issue #18: --ws at >= 90% of the
# TCP path's durable msgs/s), in one run on one realm, rounds interleaved so drift hits both; then
# the realm's memory per idle WebSocket next to per idle TCP connection. The bench makes and
# removes its users itself (the realm's admin socket). Method: bench/results/methodology-chat.md
# (the same send workload; only the transport differs).
#
# Needs taskset. Bounded: about ROUNDS x 2 x (DURATION + 3) s plus two idle runs (~1 minute by
# default), plus a release build unless JARING_BIN names a binary.
#
# Usage: bench/chat/ws.sh   (env: ROUNDS=3 DURATION=5 CONNECTIONS=100 IDLE=1000 LAYOUT=pinned
#                           JARING_BIN= KEEP=DIR)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")/../.."
defaults ROUNDS=3 DURATION=5 CONNECTIONS=100 IDLE=1000 LAYOUT=pinned
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding them.
PORT=23340 WEB=23341
need taskset util-linux
jaring_binary
layout_cpus "$LAYOUT"
ulimit -n 20000 2>/dev/null || true
ports_free "$PORT" "$WEB"
OUT=$(mktemp -d)
pid=
cleanup() { stop_pid "$pid"; rm -rf "$OUT"; }
trap cleanup EXIT
{ bench_realm "$PORT" "$OUT/data"; realm_limits $(( IDLE * 2 + 500 )); printf '[web]\nport = %s\n' "$WEB"; } > "$OUT/realm.toml"
taskset -c "$server_cpus" "$JARING" chat serve --config "$OUT/realm.toml" 2> "$OUT/realm.log" &
pid=$!
wait_port "$PORT" "$WEB"
run() { # run LABEL ARGS…: one bench, its msgs/s appended to $OUT/LABEL
  local label=$1; shift
  taskset -c "$gen_cpus" "$JARING" bench chat --json --duration "$DURATION" "$@" 2> "$OUT/bench.err" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["requests_per_s"], r["delivery"]["missing"], r["delivery"]["duplicates"])' \
    >> "$OUT/$label"
}
echo "load $(load_avg); $ROUNDS rounds of $DURATION s, $CONNECTIONS senders, layout $LAYOUT"
for r in $(seq "$ROUNDS"); do
  # The first slot of a round measures worse on this machine: alternate which goes first.
  if [ $(( r % 2 )) -eq 1 ]; then order="tcp ws"; else order="ws tcp"; fi
  for which in $order; do
    if [ "$which" = tcp ]; then run tcp --port "$PORT" --connections "$CONNECTIONS"
    else run ws --port "$WEB" --ws --connections "$CONNECTIONS"; fi
  done
  echo "round $r: tcp $(tail -1 "$OUT/tcp")  ws $(tail -1 "$OUT/ws")   (msgs/s missing duplicates)"
done
python3 - "$OUT/tcp" "$OUT/ws" <<'PY'
import statistics, sys
tcp = [float(l.split()[0]) for l in open(sys.argv[1])]
ws = [float(l.split()[0]) for l in open(sys.argv[2])]
print(f"median msgs/s: tcp {statistics.median(tcp):,.0f}  ws {statistics.median(ws):,.0f}  ws/tcp {statistics.median(ws)/statistics.median(tcp):.3f}")
print("per round ws/tcp: " + " ".join(f"{w/t:.3f}" for t, w in zip(tcp, ws)))
PY
for which in tcp ws; do
  if [ "$which" = tcp ]; then args=(--port "$PORT"); else args=(--port "$WEB" --ws); fi
  taskset -c "$gen_cpus" "$JARING" bench chat --json --idle --connections "$IDLE" --duration 3 "${args[@]}" 2>/dev/null \
    | python3 -c "import json,sys; s=json.load(sys.stdin)['server']; print('idle $which: $IDLE connections, %.0f bytes per connection (RSS %.1f MiB)' % (s['rss_per_connection_bytes'], s['rss_kib']/1024))"
done
keep_files "$OUT"
