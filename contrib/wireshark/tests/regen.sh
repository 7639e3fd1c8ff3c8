#!/usr/bin/env bash
# Regenerates the dissector's fixtures: real jaring traffic captured on loopback, and the golden
# field output of jaring.lua for each capture.
#
#   contrib/wireshark/tests/regen.sh [--golden-only]
#
# What it does (about 30 s): builds jaring (cargo build -p jaring), picks free loopback ports,
# then runs two labs, each under dumpcap on lo:
#   1. `jaring lab --no-tls`: TIME (jaring's client, one byte per segment, 50 requests in one
#      write, a bare LF, a blank line, an unknown request), echo (a 46-byte message read in
#      16-byte pieces; a file on the file-echo port) and a chat session on both realms (tests/
#      clients.py: auth sent one byte per segment, pipelined requests, pushed events, a live
#      group session, classic group mode, a cross-realm message and group), whose federation
#      frames cross the realms' plaintext link;
#   2. `SSLKEYLOGFILE=... jaring lab`: the same services over TLS (time and chat on their shared
#      ports, echo on its TLS port, the realms' mutual-TLS link), with the key log beside them.
# and writes, for each fixture NAME:
#   NAME.pcapng   the capture
#   NAME.prefs    tshark preferences it needs, one NAME:VALUE a line ({dir} is this directory)
#   NAME.fields   the fields the golden output shows, one a line
#   NAME.golden   tshark -X lua_script:jaring.lua -Y jaring -T fields ... -E header=y
# `--golden-only` keeps the captures and only writes the golden outputs again (after a change to
# jaring.lua whose new output you have checked).
#
# Needs root (or dumpcap with its capture capabilities), tshark, dumpcap, python3, cargo.
# crates/jaring/tests/dissector.rs checks every fixture against its golden output.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
lua="$here/../jaring.lua"

# The fields each fixture's golden output shows.
fields_time="frame.number jaring.service jaring.direction jaring.time.request jaring.time.kind jaring.time.clock jaring.time.error"
fields_echo="frame.number jaring.service jaring.direction jaring.echo.bytes jaring.echo.total"
fields_chat="frame.number jaring.direction jaring.chat.kind jaring.chat.cmd jaring.chat.user jaring.chat.token jaring.chat.target jaring.chat.message jaring.chat.arg jaring.chat.status jaring.chat.event jaring.chat.text jaring.chat.msg jaring.chat.raw json.key"
fields_federation="frame.number jaring.direction jaring.fed.kind jaring.fed.realm jaring.fed.to jaring.fed.user jaring.fed.from jaring.fed.group jaring.fed.q jaring.fed.seq jaring.fed.body"
fields_tls="frame.number jaring.service jaring.tls jaring.direction jaring.time.request jaring.time.clock jaring.echo.bytes jaring.chat.cmd jaring.chat.status jaring.fed.kind"

golden() { # NAME
    local name="$1" var="fields_$1"
    local -a args=(-r "$here/$name.pcapng" -X "lua_script:$lua" -Y jaring -T fields -E header=y -E "aggregator=|")
    tr ' ' '\n' <<<"${!var}" >"$here/$name.fields"
    while IFS= read -r pref; do
        [ -n "$pref" ] && args+=(-o "${pref//\{dir\}/$here}")
    done <"$here/$name.prefs"
    for f in ${!var}; do args+=(-e "$f"); done
    # An empty HOME: no personal Wireshark preferences or plugins change the output.
    HOME="$(mktemp -d)" XDG_CONFIG_HOME= tshark "${args[@]}" >"$here/$name.golden" 2>/dev/null
    echo "$name.golden: $(($(wc -l <"$here/$name.golden") - 1)) packets"
}

if [ "${1:-}" = "--golden-only" ]; then
    for name in time echo chat federation tls; do golden "$name"; done
    exit 0
fi

for tool in tshark dumpcap python3 cargo; do
    command -v "$tool" >/dev/null || { echo "regen.sh: $tool is missing (Debian: apt-get install tshark python3)" >&2; exit 1; }
done

(cd "$root" && cargo build -p jaring --quiet)
jaring="${CARGO_TARGET_DIR:-$root/target}/debug/jaring"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Eight free loopback ports: time, echo, file echo, echo TLS, realm1, realm2, link1, link2.
read -r time echo file echotls realm1 realm2 link1 link2 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')
ports=(--time-port "$time" --echo-port "$echo" --file-echo-port "$file" --echo-tls-port "$echotls"
    --realm1-port "$realm1" --realm2-port "$realm2"
    --realm1-federation-port "$link1" --realm2-federation-port "$link2")
filter="tcp port $time or tcp port $echo or tcp port $file or tcp port $echotls or tcp port $realm1 or tcp port $realm2 or tcp port $link1 or tcp port $link2"

capture_start() { # FILE
    dumpcap -q -i lo -f "$filter" -w "$1" 2>"$1.log" &
    pids+=($!)
    capture_pid=$!
    # dumpcap says "Capturing on" a little before the kernel hands it packets; the checks at
    # the end make sure no connection lost its first packets.
    for _ in $(seq 100); do grep -q "Capturing on" "$1.log" 2>/dev/null && sleep 1 && return; sleep 0.1; done
    echo "regen.sh: dumpcap did not start: $(cat "$1.log")" >&2
    exit 1
}
capture_stop() {
    sleep 1 # the last segments
    kill -INT "$capture_pid"
    wait "$capture_pid" || true
}
lab_start() { # DIR [FLAGS...]
    local dir="$1"
    shift
    "$jaring" lab --dir "$dir" --bind 127.0.0.1 --no-web --color never "${ports[@]}" "$@" >"$dir.out" 2>"$dir.err" &
    pids+=($!)
    lab_pid=$!
    for _ in $(seq 300); do grep -q "Ctrl-C stops everything" "$dir.out" 2>/dev/null && return; sleep 0.1; done
    echo "regen.sh: the lab did not start: $(cat "$dir.err")" >&2
    exit 1
}
lab_stop() {
    kill -INT "$lab_pid"
    wait "$lab_pid" || true
}

# 1. Plaintext.
capture_start "$work/plain.pcapng"
lab_start "$work/plain" --no-tls
sleep 0.5 # the realms' link comes up
"$jaring" time client --port "$time" --count 2 --interval 0.1 >/dev/null
python3 "$here/clients.py" time-bytes "$time"
python3 "$here/clients.py" time-pipe "$time" 50
python3 "$here/clients.py" time-odd "$time"
"$jaring" echo client --port "$echo" --chunk 16 "The quick brown fox jumps over the lazy dog 46" >/dev/null
head -c 3000 /dev/zero | tr '\0' 'x' >"$work/file.txt"
"$jaring" echo client --port "$file" --file "$work/file.txt" >/dev/null
python3 "$here/clients.py" chat "$realm1" "$realm2"
lab_stop
capture_stop

# 2. TLS, with the key log.
rm -f "$here/tls.keys"
capture_start "$work/tls.pcapng"
export SSLKEYLOGFILE="$here/tls.keys"
lab_start "$work/tls"
unset SSLKEYLOGFILE
sleep 0.5
"$jaring" time client --port "$time" --tls --ca "$work/tls/tls/ca.pem" --count 2 --interval 0.1 >/dev/null
"$jaring" echo client --port "$echotls" --ca "$work/tls/tls/ca.pem" "hello over TLS" >/dev/null
python3 "$here/clients.py" chat-tls "$realm1" "$work/tls/tls/ca.pem"
lab_stop
capture_stop

split() { # NAME SOURCE FILTER
    tshark -r "$2" -Y "$3" -w "$here/$1.pcapng" 2>/dev/null
}
split time "$work/plain.pcapng" "tcp.port == $time"
printf 'jaring.time_ports:%s\n' "$time" >"$here/time.prefs"
split echo "$work/plain.pcapng" "tcp.port in {$echo,$file}"
printf 'jaring.echo_ports:%s,%s\n' "$echo" "$file" >"$here/echo.prefs"
split chat "$work/plain.pcapng" "tcp.port in {$realm1,$realm2}"
printf 'jaring.chat_ports:%s,%s\n' "$realm1" "$realm2" >"$here/chat.prefs"
split federation "$work/plain.pcapng" "tcp.port in {$link1,$link2}"
printf 'jaring.fed_ports:%s,%s\n' "$link1" "$link2" >"$here/federation.prefs"
cp "$work/tls.pcapng" "$here/tls.pcapng"
{
    printf 'jaring.time_ports:%s\n' "$time"
    printf 'jaring.echo_ports:%s,%s\n' "$echo" "$file"
    printf 'jaring.echo_tls_ports:%s\n' "$echotls"
    printf 'jaring.chat_ports:%s,%s\n' "$realm1" "$realm2"
    printf 'jaring.fed_ports:%s,%s\n' "$link1" "$link2"
    printf 'tls.keylog_file:{dir}/tls.keys\n'
} >"$here/tls.prefs"

for name in time echo chat federation tls; do golden "$name"; done

# Every connection is there from its SYN, the realms' link from its hello.
for name in time echo chat federation tls; do
    syns=$(tshark -r "$here/$name.pcapng" -Y "tcp.flags.syn == 1 && tcp.flags.ack == 0" 2>/dev/null | wc -l)
    fins=$(tshark -r "$here/$name.pcapng" -Y "tcp.flags.fin == 1" 2>/dev/null | wc -l)
    [ "$syns" -gt 0 ] && [ "$fins" -ge "$syns" ] || { echo "regen.sh: $name.pcapng misses connection starts ($syns SYNs, $fins FINs); run it again" >&2; exit 1; }
done
grep -q hello "$here/federation.golden" && grep -q hello "$here/tls.golden" \
    || { echo "regen.sh: a capture misses the link handshake; run it again" >&2; exit 1; }
