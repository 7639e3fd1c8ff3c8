#!/usr/bin/env bash
# Federation: two realms linked on loopback under `jaring bench chat --cross-realm`: end to end (one
# send in flight per sender, then PIPELINE), then a backlog while realm2 is down for DOWN s and its
# drain. Method: bench/results/methodology-federation.md.
#
# Ports 18889/18899 (clients) and 19889/19899 (links) on 127.0.0.1. Builds jaring in release
# unless JARING_BIN names a binary to measure; needs python3. KEEP=1 keeps the temp directory.
# Usage: bench/chat/federation.sh   (env: DURATION=10 DOWN=60 CONNECTIONS=100 SIZE=64 PIPELINE=8 JARING_BIN=)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")/../.."
defaults DURATION=10 DOWN=60 CONNECTIONS=100 SIZE=64 PIPELINE=8
USERS=$(( CONNECTIONS + (CONNECTIONS + 9) / 10 ))
jaring_binary
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$OUT"' EXIT
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

make_users "$OUT" "$JARING" "$USERS"
for r in 1 2; do
  mkdir -p "$OUT/realm$r" && cp "$OUT/template/chat.db" "$OUT/realm$r/"
  other=$(( 3 - r ))
  { bench_realm $(( 18879 + 10 * r )) "realm$r" "realm$r"; realm_limits 20000; cat <<EOF
[federation]
port = $(( 19879 + 10 * r ))
[[peer]]
name = "realm$other"
address = "127.0.0.1:$(( 19879 + 10 * other ))"
secret = "$SECRET"
EOF
  } > "$OUT/realm$r.toml"
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
