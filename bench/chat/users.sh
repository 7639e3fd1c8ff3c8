# Sourced by the bench/chat scripts (not run on its own).
#
# make_users OUT JARING COUNT: creates OUT/template/chat.db, a realm data directory holding the
# bench users u0 … u{COUNT-1}, password surabaya (the Python lab server's EXTRA_USERS). One user is
# made with `jaring chat user add` under a config whose Argon2id cost is the cheapest Argon2
# allows (8 KiB, 1 pass); the others get a copy of its hash (sqlite3), so that 10,000 logins take
# seconds, not minutes. A realm rehashes a password to its configured cost at login, so the bench
# realms are configured with that cost as well; logging in happens before any clock starts.
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
