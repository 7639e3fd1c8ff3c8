#!/usr/bin/env python3
"""The labs' time server, faithfully: one thread per connection, recv(32), startswith("TIME").

Only two changes from the classroom version, both for a fair benchmark: the port and listen
backlog come from the command line (the lab's listen(1) would measure SYN drops, not the server),
and the per-connection log line is at INFO (suppressed) so stderr is not the bottleneck.
Usage: lab_time_server.py PORT [BACKLOG]
"""
import logging
import socket
import sys
import threading
from datetime import datetime


class ProcessTheClient(threading.Thread):
    def __init__(self, connection, address):
        self.connection = connection
        self.address = address
        threading.Thread.__init__(self, daemon=True)

    def run(self):
        while True:
            data = self.connection.recv(32)
            if data:
                request = data.decode("utf-8", errors="replace")
                if request.startswith("TIME") and request.endswith("\r\n"):
                    now = datetime.now()
                    waktu = now.strftime("%H:%M:%S")
                    self.connection.sendall(f"JAM {waktu}\r\n".encode("utf-8"))
                elif request.startswith("QUIT"):
                    break
            else:
                break
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
            logging.info(f"connection from {client_address}")
            ProcessTheClient(connection, client_address).start()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 45000
    backlog = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    Server(port, backlog).start()


if __name__ == "__main__":
    main()
