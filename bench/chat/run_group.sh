#!/usr/bin/env bash
# Chat groups: a jaring realm (every group message on disk before anyone sees it) against ngIRCd
# under `jaring bench chat --group`; prints a markdown table. Method:
# bench/results/methodology-chat-groups.md.
#
# Needs taskset, python3 and ngircd (installed from Debian if missing). Bounded: about ROUNDS x
# |RATES| x contenders x (DURATION + ~8) s, 2-3 minutes by default, plus a release build unless
# JARING_BIN names a binary to measure. BEFORE_BIN=path adds a third contender, "jaring-before"
# (another jaring binary, e.g. a build of the commit before a change), run the same way in the same
# rounds: before/after in one run.
#
# Usage: bench/chat/run_group.sh   (env: ROUNDS=2 DURATION=8 MEMBERS=1000 SENDERS=10 RATES="250 500" SIZE=64
#                                    JARING_BIN= BEFORE_BIN=)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")/../.."
defaults ROUNDS=2 DURATION=8 MEMBERS=1000 SENDERS=10 "RATES=250 500" SIZE=64
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding them.
PORT_JARING=23310 PORT_IRC=23320

need taskset util-linux
need ngircd ngircd
need_python_sqlite
jaring_binary
BEFORE=${BEFORE_BIN:+$(realpath "$BEFORE_BIN")}
OUT=$(mktemp -d)
ulimit -n "$(( MEMBERS * 3 + 1000 > $(ulimit -n) ? MEMBERS * 3 + 1000 : $(ulimit -n) ))" 2>/dev/null || true
SERVER_PID=
cleanup() {
  stop_pid "$SERVER_PID"
  wait 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT

# The bench users, in a template data directory that each jaring start copies.
make_users "$OUT" "$JARING" "$MEMBERS"
bench_realm $PORT_JARING > "$OUT/realm.toml"

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

start_jaring() { # BINARY
  rm -rf "$OUT/data"; cp -r "$OUT/template" "$OUT/data"
  taskset -c 0 "$1" chat serve --config "$OUT/realm.toml" 2>"$OUT/jaring.log" & SERVER_PID=$!
  wait_port $PORT_JARING
}
start_irc() {
  taskset -c 0 ngircd -n -f "$OUT/ngircd.conf" >"$OUT/ngircd.log" 2>&1 & SERVER_PID=$!
  wait_port $PORT_IRC
}
stop() { stop_pid "$SERVER_PID"; SERVER_PID=; }

: > "$OUT/results"
# How busy the machine was (other work shares both cores): printed with the table.
LOAD_START=$(load_avg)
# The order rotates from round to round: whoever runs first in a round was measured worse (one
# binary in both slots, 1,000 members at 100 msg/s: p99 163 ms first, 19 ms second), so a fixed
# order would favour the later contenders. Use ROUNDS that is a multiple of the contenders.
SERVERS=(jaring ${BEFORE:+jaring-before} ngircd)
for round in $(seq "$ROUNDS"); do
  for rate in $RATES; do
    for ((k = 0; k < ${#SERVERS[@]}; k++)); do
      server=${SERVERS[$(( (k + round - 1) % ${#SERVERS[@]} ))]}
      case $server in
        jaring) start_jaring "$JARING"; args=(--port "$PORT_JARING" --protocol jaring) ;;
        jaring-before) start_jaring "$BEFORE"; args=(--port "$PORT_JARING" --protocol jaring) ;;
        *) start_irc; args=(--port "$PORT_IRC" --protocol irc) ;;
      esac
      echo "round $round: $server, $rate msg/s" >&2
      taskset -c 1 "$JARING" bench chat --group "${args[@]}" --members "$MEMBERS" --senders "$SENDERS" \
        --rate "$rate" --size "$SIZE" --duration "$DURATION" --json \
        | sed "s/^/$server $rate /" >> "$OUT/results" || true
      stop
    done
  done
done

echo "Load average (1/5/15 min) at start: $LOAD_START; at end: $(load_avg)."
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
