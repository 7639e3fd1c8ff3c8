#!/usr/bin/env bash
# Push latency (issue #21): how long a private message takes from its sender starting to write the
# `send` to a watching connection reading the `private` event, at 1, 100 and 10,000 opted-in
# connections at low load, and the server's memory with every one of them watching.
#
# Each case starts a throwaway jaring realm (SQLite, WAL, synchronous=FULL, the default: a message
# is pushed once committed), runs `jaring bench chat --push` against it and stops it:
# WATCHERS connections each log in and send `watch`; SENDERS connections send private messages to
# watchers picked at random, RATE a second in all, for DURATION s; watchers acknowledge every
# 100 ms and every 256 events (as jaring's client does). Reported: send→pushed p50/p90/p99/max,
# messages sent, pushed, lost (sent with OK, never pushed within the run and a 10 s drain) and
# duplicated (by message id): both must be 0 and the bench exits 1 if not. The server's RSS is read
# before the bench connects and once every watcher watches (before the first message: WATCHERS
# opted-in idle connections; target < 150 MiB at 10,000), as bench/chat/run.sh reads it for idle
# connections.
#
# Users: u0 … u{SENDERS+max(WATCHERS)-1}, password surabaya, senders first, created as
# bench/chat/run.sh does (cheap hashes for the bench users only; logging in happens before the
# clock starts).
#
# Cores (LAYOUT): "pinned" (default), the realm on CPU 0 and the load generator on CPU 1
# (taskset); "shared", nothing pinned. Rounds interleave the cases. Bounded: about
# ROUNDS x |WATCHERS| x (DURATION + setup, ~15 s at 10,000 watchers) s, 2 minutes by default, plus
# a release build if one is needed.
#
# Usage: bench/chat/push.sh   (env: ROUNDS=2 DURATION=10 WATCHERS="1 100 10000" SENDERS=4 RATE=100
#                              SIZE=64 LAYOUT=pinned JARING_BIN= KEEP=DIR)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
WATCHERS=${WATCHERS:-"1 100 10000"}
SENDERS=${SENDERS:-4}
RATE=${RATE:-100}
SIZE=${SIZE:-64}
LAYOUT=${LAYOUT:-pinned}
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding it.
PORT=23330

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need taskset util-linux
need python3 python3
python3 -c 'import sqlite3' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq libpython3-stdlib >/dev/null; }
# JARING_BIN=path measures that binary instead of building one.
if [ -n "${JARING_BIN:-}" ]; then JARING=$(realpath "$JARING_BIN")
else cargo build --release --locked -q -p jaring; JARING=${CARGO_TARGET_DIR:-$PWD/target}/release/jaring; fi
MAXW=0; for w in $WATCHERS; do [ "$w" -gt "$MAXW" ] && MAXW=$w; done
USERS=$(( SENDERS + MAXW ))
# The bench holds MAXW + SENDERS sockets, the realm as many: raise the soft limit (20,000 here).
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $(( USERS + 200 )) ]; then
  echo "open files are limited to $(ulimit -n); $(( USERS + 200 )) are needed: lower WATCHERS" >&2; exit 1
fi
case $LAYOUT in
  pinned) server_cpus=0 gen_cpus=1 ;;
  shared) server_cpus=0-1 gen_cpus=0-1 ;;
  *) echo "LAYOUT is pinned or shared" >&2; exit 2 ;;
esac
OUT=$(mktemp -d)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$OUT"/*.json "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$OUT"
}
trap cleanup EXIT

. bench/chat/users.sh
make_users "$OUT" "$JARING" "$USERS"
cat > "$OUT/realm.toml" <<EOF
# The bench realm: defaults (synchronous = full), except room for every watcher from one address
# and the bench users' cheap password cost (a realm rehashes a password to its configured cost at
# login, which would make 10,000 logins take minutes; logins are not measured).
[realm]
name = "bench"
data_dir = "data"
[listen]
bind = "127.0.0.1"
port = $PORT
[limits]
max_connections = $(( USERS + 1000 ))
max_connections_per_address = $(( USERS + 1000 ))
[passwords]
memory_kib = 8
iterations = 1
EOF
if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then echo "port $PORT is in use: stop what listens there" >&2; exit 1; fi
wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return; sleep 0.1; done; echo "the realm never listened" >&2; exit 1; }
start() {
  rm -rf "$OUT/data"; cp -r "$OUT/template" "$OUT/data"
  RUST_LOG=warn taskset -c "$server_cpus" "$JARING" chat serve --config "$OUT/realm.toml" 2>>"$OUT/realm.log" & SERVER_PID=$!
  wait_port
}
stop() {
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

cut -d' ' -f1-3 /proc/loadavg > "$OUT/load-before"
echo "load average before the runs: $(cat "$OUT/load-before")" >&2
status=0
for round in $(seq "$ROUNDS"); do
  for w in $WATCHERS; do
    start
    echo "round $round: $w watchers, $SENDERS senders, $RATE msgs/s for $DURATION s" >&2
    taskset -c "$gen_cpus" "$JARING" bench chat --push --port $PORT --server-pid "$SERVER_PID" \
      --watchers "$w" --senders "$SENDERS" --rate "$RATE" --size "$SIZE" --duration "$DURATION" --json \
      > "$OUT/push-$w-$round.json" 2> "$OUT/push-$w-$round.err" || { status=1; tail -n 3 "$OUT/push-$w-$round.err" >&2; }
    stop
  done
done
cut -d' ' -f1-3 /proc/loadavg > "$OUT/load-after"

python3 - "$OUT" "$ROUNDS" "$WATCHERS" "$SENDERS" "$RATE" "$DURATION" "$SIZE" "$LAYOUT" <<'PY'
import json, os, platform, statistics, sys
out, rounds, watchers, senders, rate, duration, size, layout = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), *sys.argv[4:9]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}. Cores {layout}"
      + (": realm on CPU 0, `jaring bench chat --push` on CPU 1 (taskset)." if layout == "pinned" else ": nothing pinned."))
print(f"Load average before: {open(os.path.join(out, 'load-before')).read().strip()}, "
      f"after: {open(os.path.join(out, 'load-after')).read().strip()}.")
print(f"{senders} senders, {rate} msgs/s in all, {size}-byte messages, {duration} s per run; a fresh realm per run; "
      f"{rounds} rounds: median shown for latency and RSS, worst for lost/duplicated, every round below.\n")
runs = {}
for w in watchers:
    for r in range(1, rounds + 1):
        p = os.path.join(out, f"push-{w}-{r}.json")
        try:
            runs.setdefault(w, []).append(json.load(open(p)))
        except Exception:
            err = os.path.join(out, f"push-{w}-{r}.err")
            msg = open(err).read().strip().splitlines()[-1:] if os.path.exists(err) else []
            print(f"<!-- {w} watchers, round {r} failed: {' '.join(msg)} -->")
med = lambda rs, get: statistics.median(get(r) for r in rs) if rs else float("nan")
print("| watchers | sent | pushed | lost | dup | p50 ms | p90 ms | p99 ms | max ms | send→OK p50 ms | send→OK p99 ms | RSS before MiB | RSS watching MiB | bytes/watcher | RSS end MiB | server CPU µs/msg |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for w in watchers:
    rs = runs.get(w, [])
    if not rs:
        continue
    lat = lambda k: med(rs, lambda r: r["latency"][k] / 1e3)
    srv = lambda k, d=1024: med(rs, lambda r: r["server"][k] / d)
    print(f"| {int(w):,} | {med(rs, lambda r: r['sent']):,.0f} | {med(rs, lambda r: r['pushed']):,.0f} | "
          f"{max(r['lost'] for r in rs)} | {max(r['duplicated'] for r in rs)} | "
          f"{lat('p50_us'):.2f} | {lat('p90_us'):.2f} | {lat('p99_us'):.2f} | {lat('max_us'):.2f} | "
          f"{med(rs, lambda r: r['send_ok']['p50_us'] / 1e3):.2f} | {med(rs, lambda r: r['send_ok']['p99_us'] / 1e3):.2f} | "
          f"{srv('rss_before_kib'):.1f} | {srv('rss_watching_kib'):.1f} | {srv('rss_per_watcher_bytes', 1):,.0f} | "
          f"{srv('rss_end_kib'):.1f} | {srv('cpu_us_per_message', 1):,.0f} |")
print("\nEvery round:\n")
print("| watchers | round | sent | pushed | lost | dup | p50 ms | p99 ms | max ms | RSS watching MiB | watches ended | setup s |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for w in watchers:
    for i, r in enumerate(runs.get(w, []), 1):
        print(f"| {int(w):,} | {i} | {r['sent']:,} | {r['pushed']:,} | {r['lost']} | {r['duplicated']} | "
              f"{r['latency']['p50_us']/1e3:.2f} | {r['latency']['p99_us']/1e3:.2f} | {r['latency']['max_us']/1e3:.2f} | "
              f"{r['server']['rss_watching_kib']/1024:.1f} | {r['watches_ended']} | {r['setup_s']:.1f} |")
PY
exit $status
