#!/usr/bin/env bash
# A/B of two jaring builds on the chat send bench, in one run: whether a change costs speed.
#
# Each round starts each build's server in turn (fresh copies of one data directory of bench
# users, the bench realm's settings of run.sh) pinned to CPU 0, and runs HEAD's `jaring bench
# chat` pinned to CPU 1 against it: CONNECTIONS senders, one send in flight each, SIZE-byte
# messages, DURATION s. Rounds interleave the builds so drift hits both alike. Prints a table of
# the medians and every round's B/A ratio (msgs/s, and server CPU per message).
#
# Usage: bench/chat/ab.sh A_BINARY B_BINARY   (env: ROUNDS=5 DURATION=5 CONNECTIONS=100 SIZE=64)
# e.g.   git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release -p jaring)
#        cargo build --release -p jaring && bench/chat/ab.sh /tmp/base/target/release/jaring target/release/jaring
set -euo pipefail
cd "$(dirname "$0")/../.."
A=$(realpath "$1") B=$(realpath "$2")
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-100}
SIZE=${SIZE:-64}
RECEIVERS=$(( (CONNECTIONS + 9) / 10 ))
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding it.
PORT=23310
command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux >/dev/null; }
OUT=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$OUT"; }
trap cleanup EXIT

. bench/chat/users.sh
# Made by A, the older build as a rule: B opens (and migrates) what A wrote.
make_users "$OUT" "$A" $(( CONNECTIONS + RECEIVERS ))
cat > "$OUT/realm.toml" <<EOF
[realm]
name = "bench"
data_dir = "data"
[listen]
bind = "127.0.0.1"
port = $PORT
[passwords]
memory_kib = 8
iterations = 1
EOF
wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return; sleep 0.1; done; echo "port $PORT never opened" >&2; exit 1; }
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    rm -rf "$OUT/data" && cp -r "$OUT/template" "$OUT/data"
    RUST_LOG=warn taskset -c 0 "${!side}" chat serve --config "$OUT/realm.toml" & pid=$!
    wait_port
    taskset -c 1 "$B" bench chat --port $PORT --server-pid "$pid" --connections "$CONNECTIONS" \
      --size "$SIZE" --duration "$DURATION" --json > "$OUT/$side-$round.json" 2> "$OUT/$side-$round.err" || true
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  done
  echo "round $round of $ROUNDS done" >&2
done
python3 - "$OUT" "$ROUNDS" "$A" "$B" <<'PY'
import json, os, statistics, sys
out, rounds, a, b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def get(side, r):
    try:
        j = json.load(open(os.path.join(out, f"{side}-{r}.json")))
        return j["requests_per_s"], j["server"]["cpu_us_per_request"], j["delivery"]["missing"]
    except Exception:
        return None
rows = [(r, get("A", r), get("B", r)) for r in range(1, rounds + 1)]
print(f"A = {a}\nB = {b}\n")
print("| round | A msgs/s | B msgs/s | B/A msgs/s | A µs CPU/msg | B µs CPU/msg | B/A CPU/msg |")
print("|---:|---:|---:|---:|---:|---:|---:|")
ratios, cpu_ratios = [], []
for r, x, y in rows:
    if not x or not y:
        print(f"| {r} | failed | | | | | |")
        continue
    ratios.append(y[0] / x[0]); cpu_ratios.append(y[1] / x[1])
    print(f"| {r} | {x[0]:,.0f} | {y[0]:,.0f} | {ratios[-1]:.3f} | {x[1]:.1f} | {y[1]:.1f} | {cpu_ratios[-1]:.3f} |")
    if x[2] or y[2]:
        print(f"<!-- round {r}: missing messages A {x[2]}, B {y[2]} -->")
if ratios:
    med = statistics.median
    print(f"| median | {med([x[0] for _, x, y in rows if x and y]):,.0f} | {med([y[0] for _, x, y in rows if x and y]):,.0f} | "
          f"{med(ratios):.3f} | {med([x[1] for _, x, y in rows if x and y]):.1f} | {med([y[1] for _, x, y in rows if x and y]):.1f} | {med(cpu_ratios):.3f} |")
PY
