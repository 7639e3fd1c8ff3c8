#!/usr/bin/env bash
# Runs, side by side: a jaring chat realm (SQLite, WAL, synchronous=FULL: every group message is on
# disk before anyone sees it) and ngIRCd (the closest classic server: one C process, a line
# protocol, in memory), under `jaring bench chat --group`, and prints a markdown table.
#
# The same workload for both: MEMBERS connections in one group (jaring: `group`; ngIRCd: one
# channel, NICK/USER/JOIN), the first SENDERS of them sending RATE messages a second in all
# (jaring: live-session lines; ngIRCd: PRIVMSG), SIZE bytes each, for DURATION seconds. A delivery
# is one message arriving at one member (ngIRCd does not echo a message to its sender, so there a
# message is due to MEMBERS-1 members, on jaring to all MEMBERS). Reported: deliveries per second
# (first send to last delivery), send→receive latency (p50/p99/max) and lost / duplicated
# deliveries (the bench exits 1 if any).
#
# ngIRCd is configured (in a temp dir) as far as it allows for this: MaxConnectionsIP = 0 and
# MaxConnections = 0 (no limits), MaxPenaltyTime = 0 (no flood penalties), long ping timeouts, no
# DNS/ident lookups. Its per-connection command budget (a few commands per loop per client) is
# compiled in and cannot be lifted; the senders' rates here stay well inside it.
#
# Users: u0 … u{MEMBERS-1}, password surabaya, created as bench/chat/run.sh does (cheap hashes for
# the bench users only; logging in happens before the clock starts). The realm is configured with
# that cheap cost too, as run.sh does: at the default cost it rehashes every password at login,
# which made the setup of 1,000 members take most of a run's time (logins are not measured).
#
# BEFORE_BIN=path adds a third contender, "jaring-before" (another jaring binary, e.g. a build of
# the commit before a change), run the same way in the same rounds: before/after in one run.
#
# Cores: each server pinned to CPU 0, the load generator to CPU 1. Rounds interleave the servers.
# Bounded: about ROUNDS x |RATES| x 2 x (DURATION + ~8) s, 2-3 minutes by default, plus a release
# build if one is needed.
#
# Usage: bench/chat/run_group.sh   (env: ROUNDS=2 DURATION=8 MEMBERS=1000 SENDERS=10 RATES="250 500" SIZE=64
#                                    JARING_BIN= BEFORE_BIN=)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8}
MEMBERS=${MEMBERS:-1000}
SENDERS=${SENDERS:-10}
RATES=${RATES:-"250 500"}
SIZE=${SIZE:-64}
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding them.
PORT_JARING=23310 PORT_IRC=23320

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need taskset util-linux
need python3 python3
need ngircd ngircd
python3 -c 'import sqlite3' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq libpython3-stdlib >/dev/null; }
# JARING_BIN=path uses that binary instead of building (for measuring a fixed build while the
# tree changes).
if [ -n "${JARING_BIN:-}" ]; then JARING=$(realpath "$JARING_BIN")
else cargo build --release --locked -q -p jaring; JARING=$(realpath "${CARGO_TARGET_DIR:-target}")/release/jaring; fi
BEFORE=${BEFORE_BIN:+$(realpath "$BEFORE_BIN")}
OUT=$(mktemp -d)
ulimit -n "$(( MEMBERS * 3 + 1000 > $(ulimit -n) ? MEMBERS * 3 + 1000 : $(ulimit -n) ))" 2>/dev/null || true
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT

# The bench users, in a template data directory that each jaring start copies.
. bench/chat/users.sh
make_users "$OUT" "$JARING" "$MEMBERS"

cat > "$OUT/realm.toml" <<CONF
# The bench realm: defaults (synchronous = full), except the bench users' cheap password cost.
[realm]
name = "bench"
data_dir = "data"
[listen]
bind = "127.0.0.1"
port = $PORT_JARING
[passwords]
memory_kib = 8
iterations = 1
CONF

cat > "$OUT/ngircd.conf" <<CONF
[Global]
Name = irc.bench.local
Info = jaring group benchmark
Listen = 127.0.0.1
Ports = $PORT_IRC
MotdPhrase = bench
PidFile = $OUT/ngircd.pid
ServerUID = $(id -u)
ServerGID = $(id -g)

[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 600

[Options]
DNS = no
Ident = no
PAM = no
CONF

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2; exit 1
}

start_jaring() { # BINARY
  rm -rf "$OUT/data"; cp -r "$OUT/template" "$OUT/data"
  taskset -c 0 "$1" chat serve --config "$OUT/realm.toml" 2>"$OUT/jaring.log" & SERVER_PID=$!
  wait_port $PORT_JARING
}
start_irc() {
  taskset -c 0 ngircd -n -f "$OUT/ngircd.conf" >"$OUT/ngircd.log" 2>&1 & SERVER_PID=$!
  wait_port $PORT_IRC
}
stop() {
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

: > "$OUT/results"
# How busy the machine was (other work shares both cores): printed with the table.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# The order rotates from round to round: whoever runs first in a round was measured worse (one
# binary in both slots, 1,000 members at 100 msg/s: p99 163 ms first, 19 ms second), so a fixed
# order would favour the later contenders. Use ROUNDS that is a multiple of the contenders.
SERVERS=(jaring ${BEFORE:+jaring-before} ngircd)
for round in $(seq "$ROUNDS"); do
  for rate in $RATES; do
    for ((k = 0; k < ${#SERVERS[@]}; k++)); do
      server=${SERVERS[$(( (k + round - 1) % ${#SERVERS[@]} ))]}
      case $server in
        jaring) start_jaring "$JARING"; args=(--port $PORT_JARING --protocol jaring) ;;
        jaring-before) start_jaring "$BEFORE"; args=(--port $PORT_JARING --protocol jaring) ;;
        *) start_irc; args=(--port $PORT_IRC --protocol irc) ;;
      esac
      echo "round $round: $server, $rate msg/s" >&2
      taskset -c 1 "$JARING" bench chat --group "${args[@]}" --members "$MEMBERS" --senders "$SENDERS" \
        --rate "$rate" --size "$SIZE" --duration "$DURATION" --json \
        | sed "s/^/$server $rate /" >> "$OUT/results" || true
      stop
    done
  done
done

echo "Load average (1/5/15 min) at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
python3 - "$OUT/results" "$MEMBERS" "$SENDERS" "$SIZE" "$DURATION" <<'PY'
import json, sys, statistics
rows = {}
for line in open(sys.argv[1]):
    server, rate, js = line.split(" ", 2)
    rows.setdefault((int(rate), server), []).append(json.loads(js))
print(f"{sys.argv[2]} members, {sys.argv[3]} senders, {sys.argv[4]}-byte messages, {sys.argv[5]} s per run; "
      "median of the rounds (worst for lost/duplicated).\n")
print("| server | msg/s asked | deliveries/s | p50 ms | p99 ms | max ms | lost | duplicated | cut loose |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for (rate, server), rs in sorted(rows.items()):
    med = lambda k: statistics.median(r[k] for r in rs)
    print(f"| {server} | {rate} | {med('deliveries_per_s'):,.0f} | {med('latency_p50_us')/1e3:.1f} | "
          f"{med('latency_p99_us')/1e3:.1f} | {med('latency_max_us')/1e3:.1f} | "
          f"{max(r['lost'] for r in rs)} | {max(r['duplicated'] for r in rs)} | {max(r['members_cut'] for r in rs)} |")
PY
