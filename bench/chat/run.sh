#!/usr/bin/env bash
# Chat: jaring's realm (SQLite, synchronous=FULL, and the same with synchronous=NORMAL) against the
# Python lab server (bench/chat/lab_chat_server.py) under `jaring bench chat`: durable sends,
# pipelined sends, idle connections; prints markdown tables of results and ratios, every round's
# ratio too. Method: bench/results/methodology-chat.md.
#
# Needs taskset and python3 (installed from Debian if missing). Bounded: about ROUNDS x (layouts x 4
# x (DURATION + ~3) + 2 x (IDLE_HOLD + ~10)) s, 2-3 minutes by default, plus a release build unless
# JARING_BIN names a binary to measure. KEEP=DIR keeps each run's JSON (`jaring bench chat --json`);
# PLOTS=DIR: the last round's runs also draw `jaring bench --plot` SVGs into DIR.
#
# Usage: bench/chat/run.sh   (env: ROUNDS=2 DURATION=5 CONNECTIONS=100 SIZE=64 PIPELINE=8 IDLE=10000 IDLE_HOLD=3
#                             LAYOUTS="pinned shared" JARING_BIN= KEEP= PLOTS=)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")/../.."
defaults ROUNDS=2 DURATION=5 CONNECTIONS=100 SIZE=64 PIPELINE=8 "LAYOUTS=pinned shared" IDLE=10000 IDLE_HOLD=3
RECEIVERS=$(( (CONNECTIONS + 9) / 10 ))
USERS=$(( CONNECTIONS + RECEIVERS > IDLE ? CONNECTIONS + RECEIVERS : IDLE ))
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding them.
PORT_JARING=23300 PORT_PYTHON=23301 PORT_NORMAL=23302

need taskset util-linux
need_python_sqlite
jaring_binary
OUT=$(mktemp -d)
# Each side holds IDLE sockets plus a few: the default soft limit may be lower.
ulimit -n "$(( IDLE + 1000 > $(ulimit -n) ? IDLE + 1000 : $(ulimit -n) ))" 2>/dev/null || true
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  keep_files "$OUT"/*.json
  rm -rf "$OUT"
}
trap cleanup EXIT

# The bench users, in a template data directory that each server start copies.
make_users "$OUT" "$JARING" "$USERS"
# The bench realm, with room for the idle case's connections, all from 127.0.0.1.
{ bench_realm $PORT_JARING; realm_limits $(( IDLE + 1000 )); } > "$OUT/realm.toml"
# The same realm with synchronous = normal: a commit survives a crash of the server (kill -9) but
# not of the machine. Measured beside the default to show what the fsync per commit costs.
sed -e "s/^data_dir = .*/data_dir = \"data-normal\"/" -e "s/^port = .*/port = $PORT_NORMAL/" \
  "$OUT/realm.toml" > "$OUT/realm-normal.toml"
printf '[storage]\nsynchronous = "normal"\n' >> "$OUT/realm-normal.toml"

ports_free $PORT_JARING $PORT_PYTHON $PORT_NORMAL
start() { # cpus: fresh servers on them: jaring on copies of the template data directory, Python with USERS users
  local on=(taskset -c "$1")
  rm -rf "$OUT/data" "$OUT/data-normal" && cp -r "$OUT/template" "$OUT/data" && cp -r "$OUT/template" "$OUT/data-normal"
  RUST_LOG=warn "${on[@]}" "$JARING" chat serve --config "$OUT/realm.toml" & pid[jaring]=$!
  RUST_LOG=warn "${on[@]}" "$JARING" chat serve --config "$OUT/realm-normal.toml" & pid[normal]=$!
  "${on[@]}" python3 bench/chat/lab_chat_server.py $PORT_PYTHON "$USERS" & pid[python]=$!
  wait_port $PORT_JARING $PORT_NORMAL $PORT_PYTHON
}
stop() {
  for s in "${!pid[@]}"; do stop_pid "${pid[$s]}"; done
  pid=()
}
bench() { # server case args...
  local server=$1 name=$2; shift 2
  local port_var="PORT_${server^^}" plot=()
  if [ -n "${PLOTS:-}" ] && [ "$round" = "$ROUNDS" ]; then mkdir -p "$PLOTS"; plot=(--plot "$PLOTS/chat-$server-$name-$layout.svg"); fi
  taskset -c "$gen_cpus" "$JARING" bench chat --port "${!port_var}" --server-pid "${pid[$server]}" --json "${plot[@]}" "$@" \
    > "$OUT/$server-$name-$layout-$round.json" 2> "$OUT/$server-$name-$layout-$round.err" || true
}

load_avg > "$OUT/load-before"
echo "load average before the runs: $(cat "$OUT/load-before")" >&2
for round in $(seq "$ROUNDS"); do
  for layout in $LAYOUTS; do
    layout_cpus "$layout"
    start "$server_cpus"
    for s in jaring normal python; do
      bench $s send --connections "$CONNECTIONS" --size "$SIZE" --duration "$DURATION"
    done
    bench jaring pipe --connections "$CONNECTIONS" --size "$SIZE" --duration "$DURATION" --pipeline "$PIPELINE"
    stop
  done
  echo "send round $round of $ROUNDS done" >&2
done
# Idle on fresh servers (the Python server keeps every message ever sent in memory, which would
# count against it), pinned only: how many bytes a held connection costs does not depend on cores.
layout=pinned
layout_cpus $layout
for round in $(seq "$ROUNDS"); do
  start "$server_cpus"
  for s in jaring python; do
    bench $s idle --idle --connections "$IDLE" --duration "$IDLE_HOLD"
  done
  stop
  echo "idle round $round of $ROUNDS done" >&2
done
load_avg > "$OUT/load-after"

python3 - "$OUT" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$SIZE" "$IDLE" "$IDLE_HOLD" "$PIPELINE" "$LAYOUTS" <<'PY'
import json, os, platform, statistics, sys
out, rounds, duration, conns, size, idle, hold, pipeline = sys.argv[1], int(sys.argv[2]), *sys.argv[3:9]
layouts = sys.argv[9].split()
failed = set()
def runs(name):
    rs = []
    for r in range(1, rounds + 1):
        try:
            rs.append(json.load(open(os.path.join(out, f"{name}-{r}.json"))))
        except Exception:
            err = os.path.join(out, f"{name}-{r}.err")
            msg = open(err).read().strip().splitlines()[-1:] if os.path.exists(err) else []
            if (name, r) not in failed:
                failed.add((name, r))
                print(f"<!-- {name} round {r} failed: {' '.join(msg)} -->")
    return rs
def runs_of(name, r):
    try:
        return [json.load(open(os.path.join(out, f"{name}-{r}.json")))]
    except Exception:
        return []
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")
def f(name, get):
    return med([get(r) for r in runs(name)])
def ratio(a, b):
    return a / b if b and b == b and b > 0 else float("nan")

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}.")
print(f"{rounds} rounds, median shown; within each round every layout runs in turn, with fresh servers "
      f"started under its affinity. Load average before: {open(os.path.join(out, 'load-before')).read().strip()}, "
      f"after: {open(os.path.join(out, 'load-after')).read().strip()}.\n")
about = {"pinned": "each server on CPU 0, `jaring bench chat` on CPU 1 (taskset)",
         "shared": "nothing pinned: the server and `jaring bench chat` share both cores as the scheduler places them"}
names = {"jaring": "jaring realm (SQLite, synchronous=full, the default)",
         "jaring-pipe": f"jaring realm, {pipeline} sends in flight per sender",
         "normal": "jaring realm, synchronous=normal (no fsync per commit)",
         "python": "Python lab server (in memory)"}
run_name = lambda s, l: f"jaring-pipe-{l}" if s == "jaring-pipe" else f"{s}-send-{l}"
print(f"Send: {conns} senders, {size}-byte messages, {duration} s per run; one send in flight per "
      f"sender unless the row says otherwise.\n")
for l in layouts:
    print(f"Cores {l}: {about.get(l, l)}.\n")
    print("| server | msgs/s | server CPU µs/msg | send p50 µs | send p99 µs | send→inbox p50 µs | send→inbox p99 µs | delivered / acknowledged | missing | dup | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in ("jaring", "jaring-pipe", "normal", "python"):
        n = run_name(s, l)
        d = lambda k: f(n, lambda r: r["delivery"][k])
        print(f"| {names[s]} | {f(n, lambda r: r['requests_per_s']):,.0f} | "
              f"{f(n, lambda r: r['server']['cpu_us_per_request']):.1f} | "
              f"{f(n, lambda r: r['latency']['p50_us']):,.0f} | {f(n, lambda r: r['latency']['p99_us']):,.0f} | "
              f"{f(n, lambda r: r['delivery']['latency']['p50_us']):,.0f} | "
              f"{f(n, lambda r: r['delivery']['latency']['p99_us']):,.0f} | "
              f"{d('delivered'):,.0f} / {d('acknowledged'):,.0f} | {d('missing'):.0f} | {d('duplicates'):.0f} | "
              f"{f(n, lambda r: r['errors']):.0f} |")
    print()
print(f"Idle: {int(idle):,} logged-in connections held {hold} s (cores pinned).\n")
print("| server | connections held | server RSS MiB | RSS before MiB | bytes per connection | errors |")
print("|---|---:|---:|---:|---:|---:|")
for s in ("jaring", "python"):
    n = f"{s}-idle-pinned"
    print(f"| {names[s]} | {f(n, lambda r: r['requests']):,.0f} | {f(n, lambda r: r['server']['rss_kib'] / 1024):.1f} | "
          f"{f(n, lambda r: r['server']['rss_before_kib'] / 1024):.1f} | "
          f"{f(n, lambda r: r['server']['rss_per_connection_bytes']):,.0f} | {f(n, lambda r: r['errors']):.0f} |")
rate = lambda s, l: f(run_name(s, l), lambda r: r["requests_per_s"])
cpu_per = lambda s, l: f(run_name(s, l), lambda r: r["server"]["cpu_us_per_request"])
rss = f("jaring-idle-pinned", lambda r: r["server"]["rss_kib"] / 1024)
best = lambda s: max((rate(s, l) for l in layouts), default=float("nan"))
print("\n| ratio | " + " | ".join(f"cores {l}" for l in layouts) + " | target |")
print("|---|" + "---:|" * len(layouts) + "---|")
row = lambda label, get, target: print(f"| {label} | " + " | ".join(get(l) for l in layouts) + f" | {target} |")
row("jaring durable msgs/s, one send in flight per sender", lambda l: f"{rate('jaring', l):,.0f}", "≥ 50,000")
row(f"jaring durable msgs/s, {pipeline} sends in flight per sender", lambda l: f"{rate('jaring-pipe', l):,.0f}", "≥ 50,000")
row("Python lab server msgs/s", lambda l: f"{rate('python', l):,.0f}", "")
row("msgs/s: jaring / Python lab server, same layout", lambda l: f"{ratio(rate('jaring', l), rate('python', l)):.2f}", "≥ 2")
row("msgs/s with synchronous=normal", lambda l: f"{rate('normal', l):,.0f}", "(not durable against power loss)")
row("server CPU per message: Python / jaring", lambda l: f"{ratio(cpu_per('python', l), cpu_per('jaring', l)):.2f}", "")
print("\nEvery round, one send in flight per sender (msgs/s, and jaring / Python):\n")
print("| layout | round | jaring | Python | ratio |")
print("|---|---:|---:|---:|---:|")
for l in layouts:
    for r in range(1, rounds + 1):
        one = lambda s: med([x["requests_per_s"] for x in runs_of(f"{s}-send-{l}", r)])
        print(f"| {l} | {r} | {one('jaring'):,.0f} | {one('python'):,.0f} | {ratio(one('jaring'), one('python')):.2f} |")
print(f"\n| other | value | target |\n|---|---:|---|")
print(f"| msgs/s, each server in its best layout: jaring / Python lab server | {ratio(best('jaring'), best('python')):.2f} | (≥ 2) |")
print(f"| jaring RSS with {int(idle):,} idle connections (MiB) | {rss:.1f} | < 150 |")
PY
