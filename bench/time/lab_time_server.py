#!/usr/bin/env python3
"""The labs' time server, faithfully: one thread per connection, recv(32) accumulated until CR LF,
a warning logged for each request and each reply, as the classroom code does.

Changes from the classroom version, all for a fair benchmark: the port and listen backlog come from
the command line (the lab's listen(1) would measure SYN drops, not the server), a socket the client
resets ends its thread quietly, and `--quiet` turns the per-request log lines off, to show what the
logging costs. The benchmark script sends the log (stderr) to /dev/null, so no terminal slows it.
Usage: lab_time_server.py PORT [BACKLOG] [--quiet]
"""
import logging
import socket
import sys
import threading
from datetime import datetime

QUIET = "--quiet" in sys.argv


class ProcessTheClient(threading.Thread):
    def __init__(self, connection, address):
        self.connection = connection
        self.address = address
        threading.Thread.__init__(self, daemon=True)

    def run(self):
        rcv = ""
        try:
            while True:
                data = self.connection.recv(32)
                if not data:
                    break
                rcv = rcv + data.decode("utf-8", errors="replace")
                if rcv[-2:] != "\r\n":
                    continue
                if not QUIET:
                    logging.warning(f"data dari client: {rcv!r}")
                if rcv.startswith("QUIT"):
                    break
                if rcv.startswith("TIME"):
                    waktu = datetime.now().strftime("%H:%M:%S")
                    hasil = f"JAM {waktu}\r\n"
                    if not QUIET:
                        logging.warning(f"balas ke client: {hasil!r}")
                    self.connection.sendall(hasil.encode("utf-8"))
                rcv = ""
        except OSError:
            pass
        self.connection.close()


class Server(threading.Thread):
    def __init__(self, port, backlog):
        self.port = port
        self.backlog = backlog
        self.my_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.my_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        threading.Thread.__init__(self)

    def run(self):
        self.my_socket.bind(("0.0.0.0", self.port))
        self.my_socket.listen(self.backlog)
        while True:
            connection, client_address = self.my_socket.accept()
            if not QUIET:
                logging.warning(f"connection from {client_address}")
            ProcessTheClient(connection, client_address).start()


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    port = int(args[0]) if args else 45000
    backlog = int(args[1]) if len(args) > 1 else 1024
    Server(port, backlog).start()


if __name__ == "__main__":
    main()
