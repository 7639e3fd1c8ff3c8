#!/usr/bin/env bash
# Push latency (issue #21): send→pushed at 1, 100 and 10,000 watching connections, and the realm's
# memory with all of them watching. Method: bench/results/methodology-push.md.
#
# Needs taskset and python3 (installed from Debian if missing). Bounded: about ROUNDS x |WATCHERS|
# x (DURATION + setup, ~15 s at 10,000 watchers) s, 2 minutes by default, plus a release build
# unless JARING_BIN names a binary to measure. LAYOUT: pinned (realm on CPU 0, bench on CPU 1) or
# shared (nothing pinned).
#
# Usage: bench/chat/push.sh   (env: ROUNDS=2 DURATION=10 WATCHERS="1 100 10000" SENDERS=4 RATE=100
#                              SIZE=64 LAYOUT=pinned JARING_BIN= KEEP=DIR)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")/../.."
defaults ROUNDS=2 DURATION=10 "WATCHERS=1 100 10000" SENDERS=4 RATE=100 SIZE=64 LAYOUT=pinned
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding it.
PORT=23330

need taskset util-linux
need_python_sqlite
jaring_binary
MAXW=0; for w in $WATCHERS; do [ "$w" -gt "$MAXW" ] && MAXW=$w; done
USERS=$(( SENDERS + MAXW ))
# The bench holds MAXW + SENDERS sockets, the realm as many: raise the soft limit (20,000 here).
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $(( USERS + 200 )) ]; then
  echo "open files are limited to $(ulimit -n); $(( USERS + 200 )) are needed: lower WATCHERS" >&2; exit 1
fi
layout_cpus "$LAYOUT"
OUT=$(mktemp -d)
SERVER_PID=
cleanup() {
  stop_pid "$SERVER_PID"
  wait 2>/dev/null || true
  keep_files "$OUT"/*.json
  rm -rf "$OUT"
}
trap cleanup EXIT

make_users "$OUT" "$JARING" "$USERS"
# The bench realm, with room for every watcher from one address.
{ bench_realm $PORT; realm_limits $(( USERS + 1000 )); } > "$OUT/realm.toml"
ports_free $PORT
start() {
  rm -rf "$OUT/data"; cp -r "$OUT/template" "$OUT/data"
  RUST_LOG=warn taskset -c "$server_cpus" "$JARING" chat serve --config "$OUT/realm.toml" 2>>"$OUT/realm.log" & SERVER_PID=$!
  wait_port $PORT
}
stop() { stop_pid "$SERVER_PID"; SERVER_PID=; }

load_avg > "$OUT/load-before"
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
load_avg > "$OUT/load-after"

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
