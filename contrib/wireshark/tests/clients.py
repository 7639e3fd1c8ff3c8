#!/usr/bin/env python3
"""The clients whose traffic regen.sh records for the dissector's fixtures.

Each one speaks a jaring protocol the way a capture should show it: requests split one byte per
segment, 50 requests in one write, a chat session with pushed events, a group session in both
modes, cross-realm messages and groups (which make federation frames). Usage:

    clients.py time-bytes PORT       TIME sent one byte per segment, then QUIT
    clients.py time-pipe PORT [N]    N (50) TIME requests in one write, then QUIT
    clients.py time-odd PORT         a bare-LF request, a blank line, an unknown request
    clients.py chat REALM1 REALM2    the chat session (plaintext)
    clients.py chat-tls PORT CA      auth, users, a cross-realm send, logout over TLS

The server's host is 127.0.0.1, or $JARING_HOST (e.g. mesin-1 from another lab host:
`jaring lab exec mesin-2 -- env JARING_HOST=mesin-1 python3 clients.py time-pipe 45000`).
Each exits non-zero (with the reason) if the server does not answer as the protocol says.
"""

import json
import os
import socket
import ssl
import sys
import time

TIMEOUT = 10.0
# Pause between the bytes of a split request, so each one leaves in its own segment.
BYTE_PAUSE = 0.02


HOST = os.environ.get("JARING_HOST", "127.0.0.1")


def connect(port):
    s = socket.create_connection((HOST, port), timeout=TIMEOUT)
    # Without Nagle each send() is its own segment (what "one byte per segment" needs).
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_lines(s, n):
    buf = b""
    while buf.count(b"\n") < n:
        data = s.recv(65536)
        if not data:
            raise SystemExit(f"server closed after {buf!r}, wanted {n} lines")
        buf += data
    return buf.decode().splitlines()


def quit_time(s):
    s.sendall(b"QUIT\r\n")
    # The server closes first (its side keeps TIME_WAIT).
    while s.recv(100):
        pass
    s.close()


def time_bytes(port):
    s = connect(port)
    for b in b"TIME\r\n":
        s.send(bytes([b]))
        time.sleep(BYTE_PAUSE)
    [line] = read_lines(s, 1)
    assert line.startswith("JAM "), line
    quit_time(s)


def time_pipe(port, n=50):
    s = connect(port)
    s.sendall(b"TIME\r\n" * n)
    lines = read_lines(s, n)
    assert len(lines) == n and all(l.startswith("JAM ") for l in lines), lines
    quit_time(s)


def time_odd(port):
    s = connect(port)
    # A bare LF ends a line too; a blank line gets no reply; an unknown request gets ERR.
    s.sendall(b"TIME\n\r\nhello\r\n")
    lines = read_lines(s, 2)
    assert lines[0].startswith("JAM ") and lines[1].startswith("ERR unknown request"), lines
    quit_time(s)


class Chat:
    """One chat connection: framed replies and events (JSON, then CR LF CR LF)."""

    def __init__(self, port, tls_ca=None):
        self.s = connect(port)
        if tls_ca:
            ctx = ssl.create_default_context(cafile=tls_ca)
            self.s = ctx.wrap_socket(self.s, server_hostname=HOST)
        self.buf = b""
        self.events = []

    def fill(self, until):
        """Reads until `until` is in what came."""
        while until not in self.buf:
            data = self.s.recv(65536)
            if not data:
                raise SystemExit(f"connection closed; had {self.buf!r}")
            self.buf += data

    def frame(self):
        self.fill(b"\r\n\r\n")
        text, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return json.loads(text)

    def reply(self):
        """The next reply; events before it are kept in self.events."""
        while True:
            f = self.frame()
            if "event" in f:
                self.events.append(f)
            else:
                return f

    def event(self, kind):
        """Waits for an event of `kind` (or takes one that came already)."""
        for i, e in enumerate(self.events):
            if e["event"] == kind:
                return self.events.pop(i)
        while True:
            f = self.frame()
            if f.get("event") == kind:
                return f
            if "event" in f:
                self.events.append(f)
            else:
                raise SystemExit(f"a reply {f} where an event {kind} was awaited")

    def send(self, line):
        self.s.sendall(line.encode() + b"\r\n")

    def call(self, line, status="OK"):
        self.send(line)
        r = self.reply()
        if r.get("status") != status:
            raise SystemExit(f"{line.split()[0]}: expected {status}, got {r}")
        return r

    def auth(self, user, password):
        return self.call(f"auth {user} {password}")["tokenid"]

    def skip_raw(self):
        """Skips classic group mode's raw text, up to the JSON reply that ends it."""
        self.fill(b"{")
        self.buf = self.buf[self.buf.index(b"{"):]

    def raw(self, data):
        self.s.sendall(data)

    def close(self):
        self.s.close()


def chat(port1, port2):
    # henderson (realm1) joins football, then watches: private messages and group messages are
    # pushed to him as events.
    h = Chat(port1)
    th = h.auth("henderson", "surabaya")
    h.call(f"sendgroup {th} football hi from henderson")
    h.call(f"watch {th}")

    # messi (realm1): his auth arrives one byte per segment.
    m = Chat(port1)
    for b in b"auth messi surabaya \r\n":
        m.raw(bytes([b]))
        time.sleep(BYTE_PAUSE)
    tm = m.reply()["tokenid"]
    m.call(f"send {tm} henderson hello  there")
    h.event("private")
    m.call(f"send {tm} james@realm2 hello james")  # a federation lookup, msg and ack
    # Three requests in one write: three replies, in order.
    m.raw(f"users {tm}\r\ninbox {tm}\r\nrealms {tm}\r\n".encode())
    for _ in range(3):
        r = m.reply()
        assert r["status"] == "OK", r
    m.call("dance", status="ERROR")
    # A live group session: lines are messages, exit ends it.
    m.call(f"group {tm} football")
    m.send("hello all")
    m.event("message")
    h.event("message")
    m.call("exit")
    m.call(f"logout {tm}")
    m.close()

    # james (realm2) reads messi's message and writes to realm1's group: gjoin, gpost, gmsg.
    j = Chat(port2)
    tj = j.auth("james", "medan")
    r = j.call(f"inbox {tj}")
    assert r["messages"], r
    j.call(f"sendgroup {tj} football@realm1 hi from realm2")
    h.event("message")
    j.close()

    # lineker (realm1) in classic group mode: raw text both ways, then exit and a JSON reply.
    c = Chat(port1)
    tc = c.auth("lineker", "surabaya")
    c.send(f"group {tc} football origin ")
    time.sleep(0.3)
    c.raw(b"hello classic")
    time.sleep(0.3)
    c.raw(b"exit")
    c.skip_raw()
    r = c.reply()
    assert r["status"] == "OK", r
    h.event("message")
    c.close()

    h.call(f"ping {th}")
    h.close()


def chat_tls(port, ca):
    c = Chat(port, tls_ca=ca)
    t = c.auth("messi", "surabaya")
    c.call(f"users {t}")
    c.call(f"send {t} james@realm2 hello over TLS")  # crosses the realms' TLS link
    c.call(f"logout {t}")
    c.close()


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "time-bytes":
        time_bytes(int(args[0]))
    elif cmd == "time-pipe":
        time_pipe(int(args[0]), int(args[1]) if len(args) > 1 else 50)
    elif cmd == "time-odd":
        time_odd(int(args[0]))
    elif cmd == "chat":
        chat(int(args[0]), int(args[1]))
    elif cmd == "chat-tls":
        chat_tls(int(args[0]), args[1])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
