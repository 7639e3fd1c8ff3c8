#!/usr/bin/env bash
# TLS against the alternatives, in one run: echo over TLS against jaring's plaintext echo and
# socat's; new TLS connections per second (full and resumed) against a socat TLS terminator; chat
# durable sends over TLS against plaintext (bench/ab.sh). Prints markdown tables and the issue's
# ratios. Method: bench/results/methodology-tls.md.
#
# Needs taskset, socat (installed from Debian if missing) and python3. Builds jaring in release
# unless JARING_BIN names a binary to measure.
#
# Usage: bench/tls/run.sh        (env: ROUNDS=3 DURATION=5 CHURN_CONNECTIONS=4 CHAT_CONNECTIONS=100 JARING_BIN=)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")/../.."
defaults ROUNDS=3 DURATION=5 CHURN_CONNECTIONS=4 CHAT_CONNECTIONS=100
# Outside the ephemeral range (32768-60999 here).
P_ECHO=23500 P_ECHO_TLS=23501 P_SOCAT_ECHO=23502 P_TIME=23503 P_SOCAT_TIME=23504
need taskset util-linux
need socat socat
jaring_binary
OUT=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$OUT"; }
trap cleanup EXIT
# CPU ticks of a server: its own, its reaped children's, and its live children's (socat forks one
# per connection; a long echo stream's child is still running when the run ends).
ticks() {
  local t; t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat")
  for c in $(pgrep -P "$1" || true); do t=$(( t + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0) )); done
  echo "$t"
}

"$JARING" tls init --dir "$OUT/tls" server > /dev/null
CERT=$OUT/tls/server.pem KEY=$OUT/tls/server-key.pem CA=$OUT/tls/ca.pem
RUST_LOG=warn taskset -c 0 "$JARING" echo serve --bind 127.0.0.1 --port $P_ECHO \
  --tls-cert "$CERT" --tls-key "$KEY" --tls-port $P_ECHO_TLS & PID_ECHO=$!
RUST_LOG=warn taskset -c 0 "$JARING" time serve --bind 127.0.0.1 --port $P_TIME --tz UTC \
  --tls-cert "$CERT" --tls-key "$KEY" & PID_TIME=$!
# socat: the TLS echo people reach for, and a TLS terminator in front of the plaintext time port;
# nodelay on both sides (without it Nagle holds the reply: 71 connections/s instead of 279).
taskset -c 0 socat OPENSSL-LISTEN:$P_SOCAT_ECHO,reuseaddr,fork,nodelay,cert="$CERT",key="$KEY",verify=0 PIPE & PID_SOCAT_ECHO=$!
taskset -c 0 socat OPENSSL-LISTEN:$P_SOCAT_TIME,reuseaddr,fork,nodelay,cert="$CERT",key="$KEY",verify=0 \
  TCP:127.0.0.1:$P_TIME,nodelay & PID_SOCAT_TIME=$!
pids+=("$PID_ECHO" "$PID_TIME" "$PID_SOCAT_ECHO" "$PID_SOCAT_TIME")
wait_port $P_ECHO $P_ECHO_TLS $P_SOCAT_ECHO $P_TIME $P_SOCAT_TIME

# run NAME PID BENCH-ARGS…: one measured run, its JSON and the server's CPU ticks.
run() {
  local name=$1 pid=$2; shift 2
  local before; before=$(ticks "$pid")
  taskset -c 1 "$JARING" bench "$@" --duration "$DURATION" --json > "$OUT/$name-$round.json" 2> "$OUT/$name-$round.err" || true
  echo $(( $(ticks "$pid") - before )) > "$OUT/$name-$round.ticks"
}
load_before=$(load_avg)
for round in $(seq "$ROUNDS"); do
  run echo-plain $PID_ECHO echo --port $P_ECHO --connections 1
  run echo-tls $PID_ECHO echo --port $P_ECHO_TLS --connections 1 --tls --ca "$CA"
  run echo-socat $PID_SOCAT_ECHO echo --port $P_SOCAT_ECHO --connections 1 --tls --ca "$CA"
  run churn-plain $PID_TIME time --mode churn --port $P_TIME --connections "$CHURN_CONNECTIONS"
  run churn-tls-full $PID_TIME time --mode churn --port $P_TIME --connections "$CHURN_CONNECTIONS" --tls --ca "$CA" --no-resume
  run churn-tls-resumed $PID_TIME time --mode churn --port $P_TIME --connections "$CHURN_CONNECTIONS" --tls --ca "$CA"
  run churn-socat-full $PID_SOCAT_TIME time --mode churn --port $P_SOCAT_TIME --connections "$CHURN_CONNECTIONS" --tls --ca "$CA" --no-resume
  run churn-socat-resumed $PID_SOCAT_TIME time --mode churn --port $P_SOCAT_TIME --connections "$CHURN_CONNECTIONS" --tls --ca "$CA"
  echo "round $round of $ROUNDS done" >&2
done
load_after=$(load_avg)

# Chat: durable sends over TLS against plaintext, to one realm taking both (bench/ab.sh).
ROUNDS=$ROUNDS DURATION=$DURATION CONNECTIONS=$CHAT_CONNECTIONS TLS=b WORKLOAD=chat \
  bench/ab.sh "$JARING" "$JARING" > "$OUT/chat.md" 2> /dev/null || echo "chat A/B failed" > "$OUT/chat.md"

python3 - "$OUT" "$ROUNDS" "$DURATION" "$(getconf CLK_TCK)" "$load_before" "$load_after" "$CHURN_CONNECTIONS" <<'PY'
import json, os, platform, statistics, sys
out, rounds, duration, hz, lb, la, churn_conns = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
def runs(name):
    rs = []
    for r in range(1, rounds + 1):
        try:
            j = json.load(open(os.path.join(out, f"{name}-{r}.json")))
            t = int(open(os.path.join(out, f"{name}-{r}.ticks")).read())
        except Exception:
            continue
        ops = j["requests"] or 1
        j["cpu_us"] = t * 1e6 / hz / ops
        rs.append(j)
    return rs
med = lambda xs: statistics.median(xs) if xs else float("nan")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}. Servers on CPU 0, "
      f"`jaring bench` on CPU 1; {rounds} rounds of {duration} s, medians. Load average before {lb}, after {la}.\n")
print("Echo, one stream (`jaring bench echo --connections 1`):\n")
print("| server | Gbit/s | server CPU µs per MiB |")
print("|---|---:|---:|")
gb = {}
for name, label in [("echo-plain", "jaring echo, plaintext"), ("echo-tls", "jaring echo, TLS (--tls-port)"), ("echo-socat", "socat OPENSSL-LISTEN … PIPE (TLS)")]:
    rs = runs(name)
    gb[name] = med([r["throughput"]["gbit_per_s"] for r in rs])
    per_mib = med([r["cpu_us"] * r["requests"] / (r["throughput"]["bytes_per_s"] * r["duration_s"] / 2**20) for r in rs if r["throughput"]["bytes_per_s"]])
    print(f"| {label} | {gb[name]:.2f} | {per_mib:,.0f} |")
print(f"\nNew connections per second (`jaring bench time --mode churn --connections {churn_conns}`; one TIME per connection):\n")
print("| server | handshake | connections/s | server CPU µs per connection | resumed | p50 µs | p99 µs |")
print("|---|---|---:|---:|---:|---:|---:|")
cps = {}
for name, label, hs in [("churn-plain", "jaring time, plaintext", "none"),
                        ("churn-tls-full", "jaring time, TLS", "full"),
                        ("churn-tls-resumed", "jaring time, TLS", "resumed"),
                        ("churn-socat-full", "socat TLS terminator → jaring time", "full"),
                        ("churn-socat-resumed", "socat TLS terminator → jaring time", "resumed")]:
    rs = runs(name)
    cps[name] = med([r["requests_per_s"] for r in rs])
    res = med([(r.get("tls") or {}).get("resumed", 0) / max(r["requests"], 1) for r in rs])
    print(f"| {label} | {hs} | {cps[name]:,.0f} | {med([r['cpu_us'] for r in rs]):,.0f} | {res:.0%} | "
          f"{med([r['latency']['p50_us'] for r in rs]):,.0f} | {med([r['latency']['p99_us'] for r in rs]):,.0f} |")
print("\n| ratio | value | target |")
print("|---|---:|---|")
print(f"| echo one stream: jaring TLS / socat TLS | {gb['echo-tls']/gb['echo-socat']:.2f} | ≥ 3 |")
print(f"| echo one stream: jaring TLS / jaring plaintext | {gb['echo-tls']/gb['echo-plain']:.2f} | ≥ 0.5 |")
print(f"| new TLS connections/s, full: jaring / socat terminator | {cps['churn-tls-full']/cps['churn-socat-full']:.2f} | (reported) |")
print(f"| new TLS connections/s, resumed: jaring / socat terminator | {cps['churn-tls-resumed']/cps['churn-socat-resumed']:.2f} | (reported) |")
print("\nChat, durable sends over TLS against plaintext to the same realm (bench/ab.sh, TLS=b; A plaintext, B TLS):\n")
print(open(os.path.join(out, "chat.md")).read())
PY
