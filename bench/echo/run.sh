#!/usr/bin/env bash
# Echo: the loopback limit (iperf3), jaring's ECHO server (splice, the default, and --copy), the
# labs' Python echo server and xinetd's built-in echo under `jaring bench echo` (iperf3's own client
# for iperf3), in a network namespace of its own; prints markdown tables of results and ratios.
# Method: bench/results/methodology-echo.md.
#
# Needs taskset, python3, iperf3, xinetd and ip (installed from Debian if missing) and root (for the
# namespace; NETNS=0 runs in the host's). Bounded: ROUNDS x layouts x 14 runs x DURATION s (default
# 2 x 2 x 14 x 4 s, about 4 minutes) plus a release build unless JARING_BIN names a binary.
#
# Usage: bench/echo/run.sh     (env: ROUNDS=2 DURATION=4 CONNECTIONS=50 SIZE=131072 LAYOUTS="pinned shared"
#                               CC=cubic NETNS=1 JARING_BIN= PLOTS=DIR)
# PLOTS=DIR: the last round's `jaring bench echo` runs also draw `--plot` SVGs into DIR.
set -euo pipefail
SELF=$(realpath "$0") # to run itself again inside the namespace, from wherever it was started
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")/../.."
defaults ROUNDS=2 DURATION=4 CONNECTIONS=50 SIZE=131072 "LAYOUTS=pinned shared" CC=cubic
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding them.
PORT_JARING=23200 PORT_COPY=23201 PORT_PYTHON=23202 PORT_XINETD=23203 PORT_IPERF=23204

need taskset util-linux
need python3 python3
need iperf3 iperf3
need xinetd xinetd
need ip iproute2
jaring_binary
# Everything below runs in a network namespace of its own (a private loopback), where TCP's
# congestion control is set to CC for every contender alike without touching the host's. This
# host defaults to bbr, whose pacing (without an fq qdisc, from timers on whichever CPU fires) on
# loopback halved and scrambled every contender's streams here, iperf3's included: one stream
# 4-11 Gbit/s with bbr against 23-27 with cubic for jaring, 15-18 against 19-45 for iperf3.
# CC=bbr measures the host's default; NETNS=0 runs in the host's namespace as it is.
if [ "${NETNS:-1}" = 1 ] && [ -z "${JARING_BENCH_IN_NETNS:-}" ]; then
  exec unshare --net env JARING_BENCH_IN_NETNS=1 bash "$SELF" "$@"
fi
if [ -n "${JARING_BENCH_IN_NETNS:-}" ]; then
  ip link set lo up
  echo "$CC" > /proc/sys/net/ipv4/tcp_congestion_control
fi
OUT=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# xinetd's built-in echo (id echo-stream) on a spare loopback port, from a config of our own: the
# system's /etc/xinetd.d is neither read nor touched.
cat > "$OUT/xinetd.conf" <<EOF
defaults
{
    instances = UNLIMITED
    cps       = 100000 1
}
service echo
{
    type        = INTERNAL UNLISTED
    id          = echo-stream
    socket_type = stream
    protocol    = tcp
    wait        = no
    user        = $(id -un)
    bind        = 127.0.0.1
    port        = $PORT_XINETD
    instances   = UNLIMITED
    cps         = 100000 1
}
EOF
declare -A pid
# Servers start afresh for each layout under the layout's affinity, so each sizes itself (tokio's
# worker count, for one) for the cores it may use, as it would on a machine set up that way.
start_servers() { # cpus
  local on=(taskset -c "$1")
  "${on[@]}" xinetd -dontfork -f "$OUT/xinetd.conf" -pidfile "$OUT/xinetd.pid" 2>>"$OUT/xinetd.log" & pid[xinetd]=$!
  RUST_LOG=warn "${on[@]}" "$JARING" echo serve --bind 127.0.0.1 --port $PORT_JARING & pid[jaring]=$!
  RUST_LOG=warn "${on[@]}" "$JARING" echo serve --bind 127.0.0.1 --port $PORT_COPY --copy & pid[copy]=$!
  "${on[@]}" python3 bench/echo/lab_echo_server.py $PORT_PYTHON & pid[python]=$!
  "${on[@]}" iperf3 --server --bind 127.0.0.1 --port $PORT_IPERF >/dev/null 2>&1 & pid[iperf3]=$!
  pids=("${pid[@]}")
  wait_port $PORT_JARING $PORT_COPY $PORT_PYTHON $PORT_XINETD $PORT_IPERF
}
stop_servers() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pid=() pids=()
}
echo "load average before the runs: $(load_avg)" >&2
load_avg > "$OUT/load-before"

# CPU time (user + system, with reaped children: xinetd forks one per connection) of a server, in
# clock ticks; the difference over a run is how much of its core the server used.
ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
measured() { # server name -- command...
  local server=$1 name=$2; shift 3
  local t0; t0=$(ticks "${pid[$server]}")
  "$@" > "$OUT/$name.json" 2>/dev/null || true
  sleep 0.3 # let xinetd reap its children, so their time is counted
  echo $(( $(ticks "${pid[$server]}") - t0 )) > "$OUT/$name.ticks"
}
bench() { # server case conns mode size
  local port_var="PORT_${1^^}" plot=()
  if [ -n "${PLOTS:-}" ] && [ "$round" = "$ROUNDS" ]; then mkdir -p "$PLOTS"; plot=(--plot "$PLOTS/echo-$1-$2-$layout.svg"); fi
  measured "$1" "$1-$2-$layout-$round" -- taskset -c "$gen_cpus" "$JARING" bench echo --port "${!port_var}" --connections "$3" \
    --mode "$4" --size "$5" --duration "$DURATION" --json "${plot[@]}"
}
iperf() { # case streams
  measured iperf3 "iperf3-$1-$layout-$round" -- taskset -c "$gen_cpus" iperf3 --client 127.0.0.1 --port $PORT_IPERF \
    --time "$DURATION" --parallel "$2" --json
}
for round in $(seq "$ROUNDS"); do
  for layout in $LAYOUTS; do
    layout_cpus "$layout"
    start_servers "$server_cpus"
    iperf stream1 1
    for s in jaring copy python xinetd; do bench $s stream1 1 stream "$SIZE"; done
    iperf streamN "$CONNECTIONS"
    for s in jaring copy python xinetd; do bench $s streamN "$CONNECTIONS" stream "$SIZE"; done
    for s in jaring copy python xinetd; do bench $s rt "$CONNECTIONS" round-trip 1024; done
    stop_servers
  done
  echo "round $round of $ROUNDS done" >&2
done
load_avg > "$OUT/load-after"

python3 - "$OUT" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$SIZE" "$(getconf CLK_TCK)" "$LAYOUTS" \
  "$(cat /proc/sys/net/ipv4/tcp_congestion_control)" "${JARING_BENCH_IN_NETNS:+a network namespace of its own}" <<'PY'
import json, os, platform, statistics, sys
out, rounds, duration, conns, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
hz, layouts, cc, netns = int(sys.argv[6]), sys.argv[7].split(), sys.argv[8], sys.argv[9] or "the host's network namespace"
def runs(name):
    rs = []
    for r in range(1, rounds + 1):
        try:
            rs.append(json.load(open(os.path.join(out, f"{name}-{r}.json"))))
        except Exception:
            pass
    return rs
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")
# A case is named with its layout: "stream1-pinned".
def gbit(server, case):
    if server == "iperf3":
        return med([r.get("end", {}).get("sum_received", {}).get("bits_per_second", 0) / 1e9 for r in runs(f"iperf3-{case}")])
    return med([r["throughput"]["gbit_per_s"] for r in runs(f"{server}-{case}")])
def field(server, case, f):
    return med([f(r) for r in runs(f"{server}-{case}")])
def cores(name):
    """Cores the server used during the run (its CPU time / the run's length)."""
    vals = []
    for r in range(1, rounds + 1):
        try:
            vals.append(int(open(os.path.join(out, f"{name}-{r}.ticks")).read()) / hz / float(duration))
        except Exception:
            pass
    return med(vals)
def ratio(a, b):
    return a / b if b and b == b and b > 0 else float("nan")

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}.")
print(f"{rounds} rounds of {duration} s, median shown; stream writes of {size} bytes. Within each round every "
      f"layout runs in turn, with its servers started afresh under its affinity. Loopback in {netns}, "
      f"TCP congestion control {cc} for every contender.")
print(f"Load average before: {open(os.path.join(out, 'load-before')).read().strip()}, "
      f"after: {open(os.path.join(out, 'load-after')).read().strip()}.\n")
about = {"pinned": "every server on CPU 0, every load generator (jaring bench, iperf3's client) on CPU 1 (taskset)",
         "shared": "nothing pinned: servers and load generators share both cores as the scheduler places them"}
names = {"iperf3": "iperf3 (loopback limit)", "jaring": "jaring (default: splice)", "copy": "jaring --copy",
         "python": "Python lab server", "xinetd": "xinetd echo-stream"}
cases = [("stream1", "1 stream"), ("streamN", f"{conns} streams"), ("rt", f"1 KiB round trips, {conns} conns")]
for layout in layouts:
    print(f"Cores {layout}: {about.get(layout, layout)}.\n")
    print("| case | server | Gbit/s echoed | server CPU (cores) | Gbit/s per server core | requests/s | errors | p50 µs | p99 µs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for case, label in cases:
        lc = f"{case}-{layout}"
        for s in ("iperf3", "jaring", "copy", "python", "xinetd"):
            if s == "iperf3":
                if case == "rt":
                    continue
                c = cores(f"iperf3-{lc}")
                print(f"| {label} | {names[s]} | {gbit(s, lc):.2f} | {c:.2f} | {ratio(gbit(s, lc), c):.1f} | | | | |")
                continue
            c = cores(f"{s}-{lc}")
            print(f"| {label} | {names[s]} | {gbit(s, lc):.2f} | {c:.2f} | {ratio(gbit(s, lc), c):.1f} | "
                  f"{field(s, lc, lambda r: r['requests_per_s']):,.0f} | "
                  f"{field(s, lc, lambda r: r['errors']):.0f} | {field(s, lc, lambda r: r['latency']['p50_us']):.0f} | "
                  f"{field(s, lc, lambda r: r['latency']['p99_us']):.0f} |")
    print()
rt = lambda s, l: field(s, f"rt-{l}", lambda r: r["requests_per_s"])
g = lambda s, case, l: gbit(s, f"{case}-{l}")
eff = lambda s, case, l: ratio(g(s, case, l), cores(f"{s}-{case}-{l}"))
rows = [
    ("1 stream: jaring / iperf3", lambda l: ratio(g("jaring", "stream1", l), g("iperf3", "stream1", l)), "≥ 0.60"),
    (f"{conns} streams: jaring / iperf3", lambda l: ratio(g("jaring", "streamN", l), g("iperf3", "streamN", l)), "≥ 0.60"),
    ("1 stream: jaring / xinetd", lambda l: ratio(g("jaring", "stream1", l), g("xinetd", "stream1", l)), "≥ 3"),
    (f"{conns} streams: jaring / xinetd", lambda l: ratio(g("jaring", "streamN", l), g("xinetd", "streamN", l)), "≥ 3"),
    ("1 KiB round trips: jaring / Python lab server", lambda l: ratio(rt("jaring", l), rt("python", l)), "≥ 3"),
    ("1 stream: splice / --copy (does zero copy pay?)", lambda l: ratio(g("jaring", "stream1", l), g("copy", "stream1", l)), "> 1 keeps splice the default"),
    (f"{conns} streams: splice / --copy", lambda l: ratio(g("jaring", "streamN", l), g("copy", "streamN", l)), "> 1 keeps splice the default"),
    ("1 stream: Gbit/s per server core, splice / --copy", lambda l: ratio(eff("jaring", "stream1", l), eff("copy", "stream1", l)), "(for reference)"),
    (f"{conns} streams: Gbit/s per server core, splice / --copy", lambda l: ratio(eff("jaring", "streamN", l), eff("copy", "streamN", l)), "(for reference)"),
]
print("| ratio | " + " | ".join(f"cores {l}" for l in layouts) + " | target |")
print("|---|" + "---:|" * len(layouts) + "---|")
for label, f, target in rows:
    print(f"| {label} | " + " | ".join(f"{f(l):.2f}" for l in layouts) + f" | {target} |")
PY
