#!/usr/bin/env bash
# Time: jaring's TIME server against a bare tokio floor and the labs' Python server (as the lab has
# it, and without its per-request log lines) under `jaring bench time` (persistent and churn);
# prints a markdown table of results and ratios. Method: bench/results/methodology-time.md.
#
# Needs taskset and python3 (installed from Debian if missing). Bounded: ROUNDS x 2 modes x 4
# servers x DURATION seconds (default about 2.5 minutes), plus a release build of jaring and the
# floor unless JARING_BIN and BARE_BIN name the binaries (bench/time/bare-tokio builds
# bare-time-server).
#
# Usage: bench/time/run.sh            (env: ROUNDS=3 DURATION=5 CONNECTIONS=50 JARING_BIN= BARE_BIN= PLOTS=DIR)
# PLOTS=DIR: the last round's runs also draw `jaring bench --plot` SVGs into DIR.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")/../.."
defaults ROUNDS=3 DURATION=5 CONNECTIONS=50
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding them.
PORT_JARING=23100 PORT_BARE=23101 PORT_PYTHON=23102 PORT_PYQUIET=23103

need taskset util-linux
need python3 python3
if [ -n "${BARE_BIN:-}" ]; then BARE=$(realpath "$BARE_BIN"); jaring_binary
else
  jaring_binary -p bare-time-server
  # With JARING_BIN set, jaring_binary built nothing: build the floor alone.
  [ -z "${JARING_BIN:-}" ] || cargo build --release --locked -q -p bare-time-server
  BARE=$(realpath "${CARGO_TARGET_DIR:-target}")/release/bare-time-server
fi
OUT=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

RUST_LOG=warn taskset -c 0 "$JARING" time serve --bind 127.0.0.1 --port $PORT_JARING --tz UTC & PID_JARING=$!
taskset -c 0 "$BARE" $PORT_BARE & PID_BARE=$!
taskset -c 0 python3 bench/time/lab_time_server.py $PORT_PYTHON 2>/dev/null & PID_PYTHON=$!
taskset -c 0 python3 bench/time/lab_time_server.py $PORT_PYQUIET --quiet 2>/dev/null & PID_PYQUIET=$!
pids+=("$PID_JARING" "$PID_BARE" "$PID_PYTHON" "$PID_PYQUIET")
wait_port $PORT_JARING $PORT_BARE $PORT_PYTHON $PORT_PYQUIET

load_before=$(load_avg)
for round in $(seq "$ROUNDS"); do
  for mode in persistent churn; do
    for server in bare jaring python pyquiet; do
      port_var="PORT_${server^^}" pid_var="PID_${server^^}"
      # Server CPU from /proc: steadier than requests/s on a shared machine.
      before=$(cpu_ticks "${!pid_var}")
      plot=()
      if [ -n "${PLOTS:-}" ] && [ "$round" = "$ROUNDS" ]; then mkdir -p "$PLOTS"; plot=(--plot "$PLOTS/time-$server-$mode.svg"); fi
      taskset -c 1 "$JARING" bench time --port "${!port_var}" --mode $mode \
        --connections "$CONNECTIONS" --duration "$DURATION" --json "${plot[@]}" \
        > "$OUT/$server-$mode-$round.json" || true
      echo $(( $(cpu_ticks "${!pid_var}") - before )) > "$OUT/$server-$mode-$round.ticks"
      echo "round $round: $mode $server done" >&2
    done
  done
done

load_after=$(load_avg)
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
