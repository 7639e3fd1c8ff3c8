#!/usr/bin/env python3
"""A faithful Python version of the lab chat server, for side-by-side benchmarks with jaring.

What the labs run: everything in memory (users, sessions, per-sender queues), one thread per
client, reads of 32 bytes accumulated until the text ends in CR LF, replies as json.dumps(...)
followed by CR LF CR LF. Same users (messi, henderson, lineker; password surabaya) and the same
protocol (auth, send, inbox), including its quirks: the message is re-joined from the words after
TO, each preceded by a space; a bad token is a KeyError answered "Informasi tidak ditemukan".
Written afresh for jaring's benchmarks; nothing is durable, which is the point of the comparison.

Usage: python3 lab_chat_server.py [PORT] [EXTRA_USERS]   (default 8889, 0)
EXTRA_USERS adds users u0, u1, ... (password surabaya) so a load generator can spread senders.
"""

import json
import socket
import sys
import threading
import uuid
from queue import Queue


class Chat:
    def __init__(self):
        self.sessions = {}
        self.users = {
            name: {"nama": nama, "password": "surabaya", "incoming": {}, "outgoing": {}}
            for name, nama in (
                ("messi", "Lionel Messi"),
                ("henderson", "Jordan Henderson"),
                ("lineker", "Gary Lineker"),
            )
        }
        for i in range(int(sys.argv[2]) if len(sys.argv) > 2 else 0):
            self.users[f"u{i}"] = {"nama": f"u{i}", "password": "surabaya", "incoming": {}, "outgoing": {}}

    def proses(self, data):
        words = data.split(" ")
        try:
            command = words[0].strip()
            if command == "auth":
                return self.auth(words[1].strip(), words[2].strip())
            if command == "send":
                token = words[1].strip()
                to = words[2].strip()
                message = ""
                for w in words[3:]:
                    message = "{} {}".format(message, w)
                sender = self.sessions[token]["username"]
                return self.send(token, sender, to, message)
            if command == "inbox":
                token = words[1].strip()
                return self.inbox(self.sessions[token]["username"])
            return {"status": "ERROR", "message": "**Protocol Tidak Benar"}
        except KeyError:
            return {"status": "ERROR", "message": "Informasi tidak ditemukan"}
        except IndexError:
            return {"status": "ERROR", "message": "--Protocol Tidak Benar"}

    def auth(self, username, password):
        if username not in self.users:
            return {"status": "ERROR", "message": "User Tidak Ada"}
        if self.users[username]["password"] != password:
            return {"status": "ERROR", "message": "Password Salah"}
        token = str(uuid.uuid4())
        self.sessions[token] = {"username": username, "userdetail": self.users[username]}
        return {"status": "OK", "tokenid": token}

    def send(self, token, sender, to, message):
        if token not in self.sessions:
            return {"status": "ERROR", "message": "Session Tidak Ditemukan"}
        s_fr = self.users.get(sender)
        s_to = self.users.get(to)
        if not s_fr or not s_to:
            return {"status": "ERROR", "message": "User Tidak Ditemukan"}
        msg = {"msg_from": s_fr["nama"], "msg_to": s_to["nama"], "msg": message}
        s_fr["outgoing"].setdefault(sender, Queue()).put(msg)
        s_to["incoming"].setdefault(sender, Queue()).put(msg)
        return {"status": "OK", "message": "Message Sent"}

    def inbox(self, username):
        incoming = self.users[username]["incoming"]
        msgs = {}
        for sender in list(incoming):
            msgs[sender] = []
            while not incoming[sender].empty():
                msgs[sender].append(incoming[sender].get_nowait())
        return {"status": "OK", "messages": msgs}


chatserver = Chat()


class ProcessTheClient(threading.Thread):
    def __init__(self, connection, address):
        super().__init__(daemon=True)
        self.connection = connection
        self.address = address

    def run(self):
        rcv = ""
        while True:
            try:
                data = self.connection.recv(32)
            except OSError:
                break
            if not data:
                break
            rcv += data.decode()
            if rcv[-2:] == "\r\n":
                reply = json.dumps(chatserver.proses(rcv)) + "\r\n\r\n"
                self.connection.sendall(reply.encode())
                rcv = ""
        self.connection.close()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8889
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(1024)
    while True:
        conn, addr = sock.accept()
        ProcessTheClient(conn, addr).start()


if __name__ == "__main__":
    main()
