#!/usr/bin/env bash
# The chat realm on PostgreSQL, side by side with pgbench doing the same inserts on the same
# PostgreSQL server, the realm on SQLite and the Python lab server, in one run; prints markdown
# tables. Method: bench/results/methodology-postgres.md.
#
# Needs PostgreSQL 15 (/usr/lib/postgresql/15/bin: apt-get install postgresql-15) and python3; a
# throwaway cluster is created in a temp dir and removed at the end. Builds jaring in release unless
# JARING_BIN names a binary to measure.
#
# Usage: bench/chat/postgres.sh   (env: ROUNDS=3 DURATION=10 CONNECTIONS=100 SIZE=64 JARING_BIN= KEEP=DIR PLOTS=DIR)
# PLOTS=DIR: the last round's `jaring bench chat` runs also draw `--plot` SVGs into DIR.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")/../.."
defaults ROUNDS=3 DURATION=10 CONNECTIONS=100 SIZE=64
RECEIVERS=$(( (CONNECTIONS + 9) / 10 ))
USERS=$(( CONNECTIONS + RECEIVERS ))
# Outside the ephemeral range (32768-60999 here), so no client socket can be holding them.
PORT_PG=23320 PORT_JARING=23321 PORT_SQLITE=23322 PORT_PYTHON=23323

PGBIN=/usr/lib/postgresql/15/bin
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL 15 is not installed ($PGBIN/initdb): apt-get install postgresql-15" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
jaring_binary
OUT=$(mktemp -d)
chmod 755 "$OUT"
[ "$(id -u)" = 0 ] && chown postgres: "$OUT"
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$OUT/pg" -m immediate stop >/dev/null 2>&1 || true
  keep_files "$OUT"/*.json "$OUT"/*.pgbench
  rm -rf "$OUT"
}
trap cleanup EXIT

echo "starting PostgreSQL on 127.0.0.1:$PORT_PG" >&2
as_pg "$PGBIN/initdb" -D "$OUT/pg" -A trust -U jaring -E UTF8 --locale=C >/dev/null
cat >> "$OUT/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT_PG
unix_socket_directories = '$OUT'
max_connections = 300
EOF
as_pg "$PGBIN/pg_ctl" -D "$OUT/pg" -l "$OUT/pg.log" -w -t 30 start >/dev/null
psql() { "$PGBIN/psql" -XqAt -v ON_ERROR_STOP=1 "postgresql://jaring@127.0.0.1:$PORT_PG/$1" -c "$2"; }
psql postgres "CREATE DATABASE realm" && psql postgres "CREATE DATABASE pgb"

# The bench users: u0 made by `jaring chat user add` at the cheapest Argon2id cost, the others
# copies of its hash; the realm is configured with that cost too (a login rehashes to it).
{ bench_realm $PORT_JARING "$OUT/data-pg"
  printf '[storage]\nbackend = "postgres"\nurl = "postgresql://jaring@127.0.0.1:%s/realm"\n' $PORT_PG; } > "$OUT/pg.toml"
bench_realm $PORT_SQLITE "$OUT/data-sqlite" > "$OUT/sqlite.toml"
echo surabaya | RUST_LOG=warn "$JARING" chat user add u0 --config "$OUT/pg.toml"
psql realm "INSERT INTO users (name, display_name, password_hash, created_at)
  SELECT 'u' || i, 'u' || i, (SELECT password_hash FROM users WHERE name = 'u0'), 0
  FROM generate_series(1, $USERS - 1) i"
make_users "$OUT" "$JARING" "$USERS"
# pgbench's database gets the realm's schema, by a realm store opening it once.
sed "s|/realm\"|/pgb\"|" "$OUT/pg.toml" > "$OUT/pgb.toml"
RUST_LOG=warn "$JARING" chat user list --config "$OUT/pgb.toml" >/dev/null
BODY=$(head -c "$SIZE" /dev/zero | tr '\0' x)
cat > "$OUT/one.sql" <<EOF
\set s random(0, $(( CONNECTIONS - 1 )))
\set r random(0, $(( CONNECTIONS - 1 )))
INSERT INTO messages (id, sender, sender_display, recipient, recipient_display, conversation, body, sent_at)
VALUES (gen_random_uuid(), 'u' || :s, 'u' || :s, 'u' || :r, 'u' || :r, 'u' || :r || ' u' || :s, '$BODY', 0);
EOF
cat > "$OUT/many.sql" <<EOF
\set s random(0, $(( CONNECTIONS - 1 )))
\set r random(0, $(( CONNECTIONS - 1 )))
INSERT INTO messages (id, sender, sender_display, recipient, recipient_display, conversation, body, sent_at)
SELECT gen_random_uuid(), 'u' || :s, 'u' || :s, 'u' || :r, 'u' || :r, 'u' || :r || ' u' || :s, '$BODY', 0
FROM generate_series(1, 64);
EOF

# CPU seconds (user + system) of the PostgreSQL cluster: every live process of it, plus what its
# exited backends used (the postmaster's reaped children's times: pgbench's connections end
# with the run).
pg_cpu() {
  local ticks=0 p master
  master=$(head -1 "$OUT/pg/postmaster.pid")
  for p in $(pgrep -x postgres); do
    ticks=$(( ticks + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) ))
  done
  ticks=$(( ticks + $(awk '{print $16 + $17}' "/proc/$master/stat") ))
  echo "$ticks $(getconf CLK_TCK)" | awk '{printf "%.3f", $1 / $2}'
}
run_case() { # case round
  local c=$1 r=$2 before after
  before=$(pg_cpu)
  case $c in
    jaring-pg | jaring-sqlite | python)
      local port=$PORT_JARING
      [ "$c" = jaring-sqlite ] && port=$PORT_SQLITE
      [ "$c" = python ] && port=$PORT_PYTHON
      local plot=()
      if [ -n "${PLOTS:-}" ] && [ "$r" = "$ROUNDS" ]; then mkdir -p "$PLOTS"; plot=(--plot "$PLOTS/postgres-$c.svg"); fi
      "$JARING" bench chat --port "$port" --server-pid "${pid[$c]}" --connections "$CONNECTIONS" \
        --size "$SIZE" --duration "$DURATION" --json "${plot[@]}" > "$OUT/$c-$r.json" 2> "$OUT/$c-$r.err" || true ;;
    pgbench-1) "$PGBIN/pgbench" -n -M prepared -c "$CONNECTIONS" -j 2 -T "$DURATION" -f "$OUT/one.sql" \
        "postgresql://jaring@127.0.0.1:$PORT_PG/pgb" > "$OUT/$c-$r.pgbench" 2>&1 || true ;;
    pgbench-64) "$PGBIN/pgbench" -n -M prepared -c "$CONNECTIONS" -j 2 -T "$DURATION" -f "$OUT/many.sql" \
        "postgresql://jaring@127.0.0.1:$PORT_PG/pgb" > "$OUT/$c-$r.pgbench" 2>&1 || true ;;
  esac
  after=$(pg_cpu)
  echo "$before $after" > "$OUT/$c-$r.pgcpu"
}

echo "load average before: $(load_avg)" > "$OUT/load"
for round in $(seq "$ROUNDS"); do
  for c in jaring-pg pgbench-1 pgbench-64 jaring-sqlite python; do
    case $c in
      jaring-pg) RUST_LOG=warn "$JARING" chat serve --config "$OUT/pg.toml" & pid[$c]=$!; wait_port $PORT_JARING ;;
      jaring-sqlite) rm -rf "$OUT/data-sqlite" && cp -r "$OUT/template" "$OUT/data-sqlite"
        RUST_LOG=warn "$JARING" chat serve --config "$OUT/sqlite.toml" & pid[$c]=$!; wait_port $PORT_SQLITE ;;
      python) python3 bench/chat/lab_chat_server.py $PORT_PYTHON "$USERS" & pid[$c]=$!; wait_port $PORT_PYTHON ;;
    esac
    run_case "$c" "$round"
    if [ -n "${pid[$c]:-}" ]; then stop_pid "${pid[$c]}"; unset "pid[$c]"; fi
  done
  echo "round $round of $ROUNDS done" >&2
done
echo "load average after: $(load_avg)" >> "$OUT/load"

python3 - "$OUT" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$SIZE" <<'PY'
import json, os, re, statistics, sys
out, rounds, duration, conns, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
def pgcpu(c, r):
    try:
        a, b = map(float, open(os.path.join(out, f"{c}-{r}.pgcpu")).read().split())
        return b - a
    except Exception:
        return None
def result(c, r):
    """(rows or messages per second, server CPU µs each, PostgreSQL CPU µs each, missing)"""
    try:
        if c.startswith("pgbench"):
            text = open(os.path.join(out, f"{c}-{r}.pgbench")).read()
            tps = float(re.search(r"tps = ([0-9.]+)", text).group(1))
            rate = tps * (64 if c == "pgbench-64" else 1)
            cpu = None
            missing = 0
        else:
            j = json.load(open(os.path.join(out, f"{c}-{r}.json")))
            rate = j["requests_per_s"]
            cpu = j["server"]["cpu_us_per_request"]
            missing = j["delivery"]["missing"]
        pg = pgcpu(c, r)
        pg_each = pg * 1e6 / (rate * duration) if pg is not None and rate and not c.startswith("python") and c != "jaring-sqlite" else None
        return rate, cpu, pg_each, missing
    except Exception as e:
        print(f"<!-- {c} round {r} failed: {e} -->")
        return None
cases = {
    "jaring-pg": "jaring realm on PostgreSQL (send → OK after commit)",
    "pgbench-1": "pgbench, 1 message row per transaction",
    "pgbench-64": "pgbench, 64 message rows per transaction",
    "jaring-sqlite": "jaring realm on SQLite (the default), for reference",
    "python": "Python lab server (in memory, nothing durable)",
}
res = {c: [result(c, r) for r in range(1, rounds + 1)] for c in cases}
med = lambda xs: statistics.median(xs) if xs else float("nan")
def col(c, i):
    return [x[i] for x in res[c] if x and x[i] is not None]
print(open(os.path.join(out, "load")).read().strip().replace("\n", "; ") + ".")
print(f"{rounds} rounds of {duration:.0f} s, {conns} clients, {size}-byte messages, nothing pinned (2 cores shared by "
      "PostgreSQL, the server under test and the load generator); medians.\n")
print("| case | msgs (rows)/s | server µs CPU/msg | PostgreSQL µs CPU/msg | lost or duplicated |")
print("|---|---:|---:|---:|---:|")
for c, label in cases.items():
    rate, cpu, pg, missing = med(col(c, 0)), col(c, 1), col(c, 2), sum(col(c, 3))
    print(f"| {label} | {rate:,.0f} | {med(cpu):.1f} | {med(pg):.1f} | {missing} |" .replace("| nan |", "| – |"))
print("\nRatios, per round (jaring-pg ÷ other):\n")
print("| round | ÷ pgbench 1 row/commit | ÷ pgbench 64 rows/commit | ÷ Python lab server |")
print("|---:|---:|---:|---:|")
for r in range(rounds):
    j = res["jaring-pg"][r]
    def rt(c):
        o = res[c][r]
        return f"{j[0] / o[0]:.2f}×" if j and o and o[0] else "–"
    print(f"| {r + 1} | {rt('pgbench-1')} | {rt('pgbench-64')} | {rt('python')} |")
PY
