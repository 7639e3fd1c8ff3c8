#!/usr/bin/env bash
# Runs jaring's TIME server, a bare tokio floor and the labs' Python server (as the lab has it, and
# without its per-request log lines) side by side under
# `jaring bench time` (persistent and churn), and prints a markdown table of results and ratios.
#
# Cores: every server is pinned to CPU 0 and the load generator to CPU 1 (taskset), one server
# loaded at a time, the three interleaved round by round so drift hits all of them alike.
# Bounded: ROUNDS x 2 modes x 4 servers x DURATION seconds (default about 2.5 minutes).
#
# Usage: bench/time/run.sh            (env: ROUNDS=3 DURATION=5 CONNECTIONS=50 PLOTS=DIR)
# PLOTS=DIR: the last round's runs also draw `jaring bench --plot` SVGs into DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-50}
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding them.
PORT_JARING=23100 PORT_BARE=23101 PORT_PYTHON=23102 PORT_PYQUIET=23103

command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux >/dev/null; }
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
cargo build --release --locked -q -p jaring -p bare-time-server
JARING=target/release/jaring
OUT=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

RUST_LOG=warn taskset -c 0 "$JARING" time serve --bind 127.0.0.1 --port $PORT_JARING --tz UTC & PID_JARING=$!
taskset -c 0 target/release/bare-time-server $PORT_BARE & PID_BARE=$!
taskset -c 0 python3 bench/time/lab_time_server.py $PORT_PYTHON 2>/dev/null & PID_PYTHON=$!
taskset -c 0 python3 bench/time/lab_time_server.py $PORT_PYQUIET --quiet 2>/dev/null & PID_PYQUIET=$!
pids+=($PID_JARING $PID_BARE $PID_PYTHON $PID_PYQUIET)
# Server CPU (user + system, in clock ticks) from /proc: steadier than requests/s on a shared machine.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for port in $PORT_JARING $PORT_BARE $PORT_PYTHON $PORT_PYQUIET; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
  for mode in persistent churn; do
    for server in bare jaring python pyquiet; do
      port_var="PORT_${server^^}" pid_var="PID_${server^^}"
      before=$(ticks "${!pid_var}")
      plot=()
      if [ -n "${PLOTS:-}" ] && [ "$round" = "$ROUNDS" ]; then mkdir -p "$PLOTS"; plot=(--plot "$PLOTS/time-$server-$mode.svg"); fi
      taskset -c 1 "$JARING" bench time --port "${!port_var}" --mode $mode \
        --connections "$CONNECTIONS" --duration "$DURATION" --json "${plot[@]}" \
        > "$OUT/$server-$mode-$round.json" || true
      echo $(( $(ticks "${!pid_var}") - before )) > "$OUT/$server-$mode-$round.ticks"
      echo "round $round: $mode $server done" >&2
    done
  done
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$OUT" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$(getconf CLK_TCK)" "$load_before" "$load_after" <<'PY'
import json, statistics, sys, os, platform, subprocess
out, rounds, duration, conns, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
load_before, load_after = sys.argv[6], sys.argv[7]
def load(server, mode):
    rs = []
    for r in range(1, rounds + 1):
        p = os.path.join(out, f"{server}-{mode}-{r}")
        try:
            report = json.load(open(p + ".json"))
            ticks = int(open(p + ".ticks").read())
            report["cpu_us_per_request"] = ticks * 1e6 / hz / max(report["requests"], 1)
            rs.append(report)
        except Exception:
            pass
    return rs
def med(rs, f):
    return statistics.median(f(r) for r in rs) if rs else float("nan")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}.")
print(f"Servers pinned to CPU 0, load generator to CPU 1; {conns} connections, {rounds} rounds of {duration} s, median shown.")
print(f"Load average before: {load_before}; after: {load_after}.\n")
print("| mode | server | requests/s | server CPU µs/request | errors | p50 µs | p99 µs | max µs |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
rps = {}
cpu = {}
for mode in ("persistent", "churn"):
    for server in ("bare", "jaring", "python", "pyquiet"):
        rs = load(server, mode)
        rps[(server, mode)] = med(rs, lambda r: r["requests_per_s"])
        cpu[(server, mode)] = med(rs, lambda r: r["cpu_us_per_request"])
        print(f"| {mode} | {server} | {rps[(server, mode)]:,.0f} | {cpu[(server, mode)]:.2f} | {med(rs, lambda r: r['errors']):.0f} | "
              f"{med(rs, lambda r: r['latency']['p50_us']):.0f} | {med(rs, lambda r: r['latency']['p99_us']):.0f} | "
              f"{med(rs, lambda r: r['latency']['max_us']):.0f} |")
print()
print("| ratio | value | target |")
print("|---|---:|---|")
print(f"| persistent: jaring / bare tokio | {rps[('jaring','persistent')]/rps[('bare','persistent')]:.2f} | ≥ 0.90 |")
print(f"| persistent: jaring / Python lab server | {rps[('jaring','persistent')]/rps[('python','persistent')]:.2f} | ≥ 3.5 |")
print(f"| churn: jaring / bare tokio | {rps[('jaring','churn')]/rps[('bare','churn')]:.2f} | ≥ 0.90 |")
print(f"| churn: jaring / Python lab server | {rps[('jaring','churn')]/rps[('python','churn')]:.2f} | (for reference) |")
print(f"| persistent: jaring / Python lab server without its log lines | {rps[('jaring','persistent')]/rps[('pyquiet','persistent')]:.2f} | (for reference) |")
print(f"| persistent: server CPU per request, Python lab server / jaring | {cpu[('python','persistent')]/cpu[('jaring','persistent')]:.2f} | |")
print(f"| persistent: server CPU per request, bare tokio / jaring | {cpu[('bare','persistent')]/cpu[('jaring','persistent')]:.2f} | (1.0 = no overhead) |")
print(f"| churn: server CPU per request, bare tokio / jaring | {cpu[('bare','churn')]/cpu[('jaring','churn')]:.2f} | (1.0 = no overhead) |")
p99 = med(load("jaring", "persistent"), lambda r: r["latency"]["p99_us"])
print(f"| persistent p99 latency of jaring at {conns} connections | {p99:.0f} µs | < 1000 µs |")
PY
