#!/usr/bin/env python3
"""The labs' echo server, faithfully: one thread per connection, recv(32), sendall, close on EOF.

Only two changes from the classroom version, both for a fair benchmark: the port and listen
backlog come from the command line (the lab's listen(1) would measure SYN drops, not the server),
and the per-connection log line is at INFO (suppressed) so stderr is not the bottleneck. An
optional third argument changes the recv size, to see how much of the gap is the 32-byte reads.
Usage: lab_echo_server.py PORT [BACKLOG [RECV_SIZE]]
"""
import logging
import socket
import sys
import threading


class ProcessTheClient(threading.Thread):
    def __init__(self, connection, address, recv_size):
        self.connection = connection
        self.address = address
        self.recv_size = recv_size
        threading.Thread.__init__(self, daemon=True)

    def run(self):
        while True:
            try:
                data = self.connection.recv(self.recv_size)
            except OSError:
                break
            if data:
                try:
                    self.connection.sendall(data)
                except OSError:
                    break
            else:
                break
        self.connection.close()


class Server(threading.Thread):
    def __init__(self, port, backlog, recv_size):
        self.port = port
        self.backlog = backlog
        self.recv_size = recv_size
        self.my_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.my_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        threading.Thread.__init__(self)

    def run(self):
        self.my_socket.bind(("0.0.0.0", self.port))
        self.my_socket.listen(self.backlog)
        while True:
            connection, client_address = self.my_socket.accept()
            logging.info(f"connection from {client_address}")
            ProcessTheClient(connection, client_address, self.recv_size).start()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    backlog = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    recv_size = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    Server(port, backlog, recv_size).start()


if __name__ == "__main__":
    main()
