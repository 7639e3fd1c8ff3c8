#!/usr/bin/env bash
# Runs, side by side: jaring's chat realm (SQLite, WAL, synchronous=FULL: every OK is on disk) and
# the faithful Python version of the lab chat server (bench/chat/lab_chat_server.py: in memory,
# a thread per client), under `jaring bench chat`, and prints markdown tables of results and ratios.
#
# Cases:
# - send: CONNECTIONS sender connections (default 100), each logged in as its own user, send
#   SIZE-byte private messages back to back, each waiting for its OK; CONNECTIONS/10 receiver
#   connections poll `inbox`. Messages per second are acknowledged (for jaring: committed)
#   messages; send→inbox latency runs from the sender starting to write the `send` to its receiver
#   reading the `inbox` reply that carries the message. Every acknowledged message is checked to
#   arrive exactly once. Each sender has one send in flight; a third jaring case keeps PIPELINE
#   (default 8) in flight per sender (`--pipeline`), as a client that writes its next sends before
#   reading the replies does (the lab's Python server cannot take that: it reads until its buffer
#   ends in CR LF, so back-to-back requests would merge).
# - idle: IDLE connections (default 10,000), each logged in as its own user, held for IDLE_HOLD s;
#   the server's RSS (VmRSS from /proc/<pid>/status) once every one of them has answered an inbox.
#
# Users: u0, u1, … with password surabaya (the Python server's EXTRA_USERS). For jaring they are
# created in a fresh data directory: one with `jaring chat user add` under a config whose Argon2id
# cost is the cheapest Argon2 allows (8 KiB, 1 pass), the others copied from it with the same hash
# (sqlite3), so that 10,000 logins do not take minutes. The bench realm is configured with that
# cost too, since a realm rehashes a password to its configured cost at login; logging in
# happens before the clock starts anyway. The realm's failed-login limits never trigger (every
# login succeeds).
#
# Cores, in two layouts (LAYOUTS, default both): "pinned", each server on CPU 0 and the load
# generator on CPU 1 (taskset), so a server has one core whatever it could do with two; and
# "shared", nothing pinned, the scheduler placing server and generator on both cores as on any
# 2-core machine. Ratios are taken within a layout (and, separately, best layout against best
# layout). The servers are measured one at a time, interleaved round by round, so drift hits them
# alike. With --server-pid the bench reads each server's CPU time over the run, so the tables also
# show CPU per message, which other load on the machine disturbs much less than messages per second.
#
# Bounded: about ROUNDS x (layouts x 4 x (DURATION + ~3) + 2 x (IDLE_HOLD + ~10)) s, 2-3 minutes by default,
# plus a release build if one is needed.
#
# Every round's ratio is printed too, not only the medians; KEEP=DIR also keeps each run's JSON
# (`jaring bench chat --json`) there.
#
# Usage: bench/chat/run.sh   (env: ROUNDS=2 DURATION=5 CONNECTIONS=100 SIZE=64 PIPELINE=8 IDLE=10000 IDLE_HOLD=3
#                             LAYOUTS="pinned shared" KEEP= PLOTS=)
# PLOTS=DIR: the last round's runs also draw `jaring bench --plot` SVGs into DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-100}
SIZE=${SIZE:-64}
PIPELINE=${PIPELINE:-8}
LAYOUTS=${LAYOUTS:-pinned shared}
IDLE=${IDLE:-10000}
IDLE_HOLD=${IDLE_HOLD:-3}
RECEIVERS=$(( (CONNECTIONS + 9) / 10 ))
USERS=$(( CONNECTIONS + RECEIVERS > IDLE ? CONNECTIONS + RECEIVERS : IDLE ))
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding them.
PORT_JARING=23300 PORT_PYTHON=23301 PORT_NORMAL=23302

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need taskset util-linux
need python3 python3
python3 -c 'import sqlite3' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq libpython3-stdlib >/dev/null; }
cargo build --release --locked -q -p jaring
JARING=$PWD/target/release/jaring
OUT=$(mktemp -d)
# Each side holds IDLE sockets plus a few: the default soft limit may be lower.
ulimit -n "$(( IDLE + 1000 > $(ulimit -n) ? IDLE + 1000 : $(ulimit -n) ))" 2>/dev/null || true
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$OUT"/*.json "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$OUT"
}
trap cleanup EXIT

# The bench users, in a template data directory that each server start copies.
. bench/chat/users.sh
make_users "$OUT" "$JARING" "$USERS"
cat > "$OUT/realm.toml" <<EOF
# The bench realm: defaults (synchronous = full), except room for the idle case's connections, all
# from one address, and the bench users' cheap password cost: a realm rehashes a password to its
# configured cost at login, which would make 10,000 logins take minutes (logins are not measured).
[realm]
name = "bench"
data_dir = "data"
[listen]
bind = "127.0.0.1"
port = $PORT_JARING
[limits]
max_connections = $(( IDLE + 1000 ))
# Every bench connection comes from 127.0.0.1: let one address have them all.
max_connections_per_address = $(( IDLE + 1000 ))
[passwords]
memory_kib = 8
iterations = 1
EOF
# The same realm with synchronous = normal: a commit survives a crash of the server (kill -9) but
# not of the machine. Measured beside the default to show what the fsync per commit costs.
sed -e "s/^data_dir = .*/data_dir = \"data-normal\"/" -e "s/^port = .*/port = $PORT_NORMAL/" \
  "$OUT/realm.toml" > "$OUT/realm-normal.toml"
printf '[storage]\nsynchronous = "normal"\n' >> "$OUT/realm-normal.toml"

for port in $PORT_JARING $PORT_PYTHON $PORT_NORMAL; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "port $port is in use: stop what listens there" >&2; exit 1; fi
done
wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
start() { # cpus: fresh servers on them: jaring on copies of the template data directory, Python with USERS users
  local on=(taskset -c "$1")
  rm -rf "$OUT/data" "$OUT/data-normal" && cp -r "$OUT/template" "$OUT/data" && cp -r "$OUT/template" "$OUT/data-normal"
  RUST_LOG=warn "${on[@]}" "$JARING" chat serve --config "$OUT/realm.toml" & pid[jaring]=$!
  RUST_LOG=warn "${on[@]}" "$JARING" chat serve --config "$OUT/realm-normal.toml" & pid[normal]=$!
  "${on[@]}" python3 bench/chat/lab_chat_server.py $PORT_PYTHON "$USERS" & pid[python]=$!
  wait_port $PORT_JARING; wait_port $PORT_NORMAL; wait_port $PORT_PYTHON
}
stop() {
  for s in "${!pid[@]}"; do kill "${pid[$s]}" 2>/dev/null || true; wait "${pid[$s]}" 2>/dev/null || true; done
  pid=()
}
bench() { # server case args...
  local server=$1 name=$2; shift 2
  local port_var="PORT_${server^^}" plot=()
  if [ -n "${PLOTS:-}" ] && [ "$round" = "$ROUNDS" ]; then mkdir -p "$PLOTS"; plot=(--plot "$PLOTS/chat-$server-$name-$layout.svg"); fi
  taskset -c "$gen_cpus" "$JARING" bench chat --port "${!port_var}" --server-pid "${pid[$server]}" --json "${plot[@]}" "$@" \
    > "$OUT/$server-$name-$layout-$round.json" 2> "$OUT/$server-$name-$layout-$round.err" || true
}

cut -d' ' -f1-3 /proc/loadavg > "$OUT/load-before"
echo "load average before the runs: $(cat "$OUT/load-before")" >&2
layout_cpus() {
  case $1 in
    pinned) server_cpus=0 gen_cpus=1 ;;
    shared) server_cpus=0-1 gen_cpus=0-1 ;;
    *) echo "unknown layout $1 (pinned or shared)" >&2; exit 2 ;;
  esac
}
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
cut -d' ' -f1-3 /proc/loadavg > "$OUT/load-after"

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
