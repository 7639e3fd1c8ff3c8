#!/usr/bin/env bash
# Federation benchmark: two realms (release build, SQLite synchronous=FULL on both) linked on
# loopback, driven by `jaring bench chat --cross-realm`.
#
# 1. end to end: CONNECTIONS senders on realm1 send SIZE-byte messages to receivers on realm2
#    (user@realm2), each waiting for its OK (= committed in realm1's outbox); CONNECTIONS/10
#    receivers poll their inbox on realm2 (where a message is committed before it is acknowledged
#    over the link). Reports msgs/s, send→inbox latency across the link, lost/duplicated/out of order.
# 2. backlog: realm2 is killed (SIGKILL); the senders keep sending for DOWN seconds (messages wait in
#    realm1's outbox); realm2 restarts, and `jaring bench chat --drain` watches realm1's outbox
#    until it is empty: msgs/s of the catch-up.
#
# Ports 18889/18899 (clients) and 19889/19899 (links) on 127.0.0.1. Users u0… (password surabaya)
# exist on both realms, created as in bench/chat/run.sh (one cheap hash, copied).
#    Run twice: one send in flight per sender, then PIPELINE (default 8) in flight (`--pipeline`).
# Usage: bench/chat/federation.sh   (env: DURATION=10 DOWN=60 CONNECTIONS=100 SIZE=64 PIPELINE=8)
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10}
DOWN=${DOWN:-60}
CONNECTIONS=${CONNECTIONS:-100}
SIZE=${SIZE:-64}
PIPELINE=${PIPELINE:-8}
USERS=$(( CONNECTIONS + (CONNECTIONS + 9) / 10 ))
JARING=target/release/jaring
[ -x "$JARING" ] || cargo build --release -p jaring
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$OUT"' EXIT
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

. bench/chat/users.sh
make_users "$OUT" "$JARING" "$USERS"
for r in 1 2; do
  mkdir -p "$OUT/realm$r" && cp "$OUT/template/chat.db" "$OUT/realm$r/"
  other=$(( 3 - r ))
  cat > "$OUT/realm$r.toml" <<EOF
[realm]
name = "realm$r"
data_dir = "realm$r"
[listen]
bind = "127.0.0.1"
port = $(( 18879 + 10 * r ))
[limits]
max_connections = 20000
max_connections_per_address = 20000
# The bench users' cheap cost: a realm rehashes a password to its configured cost at login.
[passwords]
memory_kib = 8
iterations = 1
[federation]
port = $(( 19879 + 10 * r ))
[[peer]]
name = "realm$other"
address = "127.0.0.1:$(( 19879 + 10 * other ))"
secret = "$SECRET"
EOF
done

start() { RUST_LOG=warn "$JARING" chat serve --config "$OUT/realm$1.toml" >/dev/null 2>>"$OUT/realm$1.log" & }
start 2; R2=$!
start 1; R1=$!
for _ in $(seq 100); do
  printf 'auth u0 surabaya\nrealms\n' | "$JARING" chat client --server 127.0.0.1:18889 2>/dev/null | grep -q ' up ' && break
  sleep 0.1
done

for pipeline in 1 "$PIPELINE"; do
  echo "## end to end: $CONNECTIONS senders on realm1 → $(( USERS - CONNECTIONS )) receivers on realm2, $SIZE-byte messages, ${DURATION}s, $pipeline in flight per sender"
  "$JARING" bench chat --cross-realm --port 18889 --peer-port 18899 --connections "$CONNECTIONS" \
    --size "$SIZE" --duration "$DURATION" --pipeline "$pipeline"
done

echo "## backlog: realm2 killed (SIGKILL), senders keep sending for ${DOWN}s"
kill -9 "$R2"
sleep 0.5
"$JARING" bench chat --cross-realm --senders-only --port 18889 --peer-port 18899 \
  --connections "$CONNECTIONS" --size "$SIZE" --duration "$DOWN"
"$JARING" bench chat --drain --port 18889 --duration 600 &
DRAIN=$!
sleep 0.5
start 2; R2=$!
wait "$DRAIN"
kill "$R1" "$R2" 2>/dev/null || true
