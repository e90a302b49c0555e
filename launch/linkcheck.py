"""A ping and a throughput probe over TCP, for `launch.testbed --check` (ping may be missing).

    python -m launch.linkcheck serve ADDR PORT CONNECTIONS   # node 0: answer CONNECTIONS clients
    python -m launch.linkcheck send ADDR PORT SECONDS        # 0 s = a ping; prints "BYTES SECONDS"

The receiver times from the first byte to the sender's end of stream, so the figure covers
only bytes that crossed the shaped link, including the queue draining at the end.
"""
from __future__ import annotations

import socket
import sys
import time

CHUNK = 1 << 16


def serve(addr: str, port: int, connections: int) -> None:
    with socket.create_server((addr, port)) as srv:
        srv.settimeout(60)  # never outlive a testbed that forgot us
        for _ in range(connections):
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(60)
                n, first = 0, None
                while chunk := conn.recv(CHUNK):
                    first = first or time.perf_counter()
                    n += len(chunk)
                elapsed = time.perf_counter() - first if first else 0.0
                conn.sendall(f"{n} {elapsed:.6f}\n".encode())


def send(addr: str, port: int, seconds: float) -> None:
    deadline = time.monotonic() + 10  # the server starts at the same time as we do
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with conn:
        conn.settimeout(60)
        buf, end = bytes(CHUNK), time.perf_counter() + seconds
        while time.perf_counter() < end:
            conn.sendall(buf)
        conn.shutdown(socket.SHUT_WR)
        print(conn.makefile().readline().strip())


if __name__ == "__main__":
    mode, addr, port, arg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    serve(addr, port, int(arg)) if mode == "serve" else send(addr, port, float(arg))
