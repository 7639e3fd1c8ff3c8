# shellcheck shell=bash
# The plumbing the bench scripts share, sourced by each relative to its own location (not run on
# its own). What each script measures, and how, is in bench/results/methodology-*.md.

# defaults NAME=VALUE…: sets each NAME that the environment left unset or empty to VALUE (the
# script's tunables: ROUNDS=2 DURATION=5 …).
defaults() {
  local kv name
  for kv in "$@"; do
    name=${kv%%=*}
    [ -n "${!name:-}" ] || printf -v "$name" '%s' "${kv#*=}"
  done
}

# need COMMAND PACKAGE: installs PACKAGE from Debian if COMMAND is missing.
need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }

# need_python_sqlite: python3 with its sqlite3 module (make_users copies hashes with it).
need_python_sqlite() {
  need python3 python3
  python3 -c 'import sqlite3' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq libpython3-stdlib >/dev/null; }
}

# jaring_binary [CARGO ARGS…]: sets JARING to the binary under test: JARING_BIN if given (a fixed
# build, e.g. while the tree changes), else a release build of this tree (with any extra `-p`s).
# shellcheck disable=SC2034 # JARING is the caller's
jaring_binary() {
  if [ -n "${JARING_BIN:-}" ]; then JARING=$(realpath "$JARING_BIN")
  else
    cargo build --release --locked -q -p jaring "$@"
    JARING=$(realpath "${CARGO_TARGET_DIR:-target}")/release/jaring
  fi
}

# ports_free PORT…: exits if anything listens on one of them on 127.0.0.1.
ports_free() {
  local p
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p is in use: stop what listens there" >&2; exit 1; fi
  done
}

# wait_port PORT…: waits up to 30 s for each to listen on 127.0.0.1; exits if one never does.
wait_port() {
  local p
  for p in "$@"; do
    for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue 2; sleep 0.1; done
    echo "port $p never opened" >&2; exit 1
  done
}

# stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL; reaps it. An empty PID is a no-op.
stop_pid() {
  [ -n "${1:-}" ] || return 0
  kill "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# cpu_ticks PID: the process's user + system CPU time, in clock ticks, from /proc.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# load_avg: the 1, 5 and 15 minute load averages (how busy the shared machine was).
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }

# layout_cpus LAYOUT: sets server_cpus and gen_cpus (taskset lists) for "pinned" (server on CPU 0,
# load generator on CPU 1) or "shared" (nothing pinned).
# shellcheck disable=SC2034 # server_cpus and gen_cpus are the caller's
layout_cpus() {
  case $1 in
    pinned) server_cpus=0 gen_cpus=1 ;;
    shared) server_cpus=0-1 gen_cpus=0-1 ;;
    *) echo "unknown layout $1 (pinned or shared)" >&2; exit 2 ;;
  esac
}

# bench_realm PORT [DATA_DIR] [NAME]: prints a bench realm's config: the defaults (SQLite,
# synchronous = full), on 127.0.0.1:PORT, with the bench users' cheap password cost. Callers
# append sections ([limits], [storage], [federation]).
bench_realm() {
  cat <<EOF
[realm]
name = "${3:-bench}"
data_dir = "${2:-data}"
[listen]
bind = "127.0.0.1"
port = $1
# The bench users' cheap cost: a realm rehashes a password to its configured cost at login, which
# would make 10,000 logins take minutes (logins are not measured).
[passwords]
memory_kib = 8
iterations = 1
EOF
}

# realm_limits N: a [limits] section letting N connections in, all from one address (every bench
# connection comes from 127.0.0.1).
realm_limits() { printf '[limits]\nmax_connections = %s\nmax_connections_per_address = %s\n' "$1" "$1"; }

# keep_files FILE…: with KEEP=DIR, copies the files (a run's JSON) into DIR before the temp
# directory goes; a pattern that matched nothing is passed over.
keep_files() {
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$@" "$KEEP"/ 2>/dev/null || true; fi
}

# make_users OUT JARING COUNT: creates OUT/template/chat.db, a realm data directory holding the
# bench users u0 … u{COUNT-1}, password surabaya (the Python lab server's EXTRA_USERS). One user is
# made with `jaring chat user add` under a config whose Argon2id cost is the cheapest Argon2
# allows (8 KiB, 1 pass); the others get a copy of its hash (sqlite3), so that 10,000 logins take
# seconds, not minutes. A realm rehashes a password to its configured cost at login, so the bench
# realms are configured with that cost as well (bench_realm); logging in happens before any clock
# starts.
make_users() {
  local out=$1 jaring=$2 count=$3
  cat > "$out/users.toml" <<CONF
# Only for creating the bench users: the cheapest Argon2id cost (never use it for real passwords).
[realm]
data_dir = "template"
[passwords]
memory_kib = 8
iterations = 1
CONF
  echo surabaya | "$jaring" chat user add u0 --config "$out/users.toml" 2>/dev/null
  python3 - "$out/template/chat.db" "$count" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
(hash_,) = db.execute("SELECT password_hash FROM users WHERE name = 'u0'").fetchone()
db.executemany("INSERT INTO users (name, display_name, password_hash, created_at) VALUES (?, ?, ?, 0)",
               ((f"u{i}", f"u{i}", hash_) for i in range(1, int(sys.argv[2]))))
db.commit()
PY
  rm -f "$out/template/realm.lock"
}
