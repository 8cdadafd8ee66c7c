"""Nodes for the fault injector's end-to-end tests (tests/test_injector.py).
Standard library only. Receivers append one line per message (and a final
EOF / RESET line) to an output file, flushed at once, so a test can read
exactly what arrived; senders print each send's outcome the same way.

    python3 fnode.py udp-recv PORT OUT
    python3 fnode.py udp-send HOST PORT COUNT GAP OUT
    python3 fnode.py tcp-recv PORT OUT
    python3 fnode.py tcp-send HOST PORT COUNT GAP OUT
"""

from __future__ import annotations

import socket
import sys
import time


def log(path: str, line: str) -> None:
    with open(path, "a") as out:
        out.write(line + "\n")


def udp_recv(port: int, out: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, _ = s.recvfrom(2048)
        log(out, data.decode())


def udp_send(host: str, port: int, count: int, gap: float, out: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    time.sleep(0.3)  # nodes start together: let the receiver bind first
    for i in range(count):
        s.sendto(f"d{i}".encode(), (host, port))
        log(out, f"sent d{i}")
        time.sleep(gap)
    log(out, "done")
    time.sleep(3600)


def tcp_recv(port: int, out: str) -> None:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(8)
    while True:
        conn, _ = ls.accept()
        buf = b""
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    log(out, "EOF")
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    log(out, line.decode())
        except ConnectionResetError:
            log(out, "RESET")
        conn.close()


def connect(host: str, port: int) -> socket.socket:
    """Nodes start together (readiness is awaited after all have started): retry
    until the receiver listens. Refused attempts use a fresh socket each."""
    deadline = time.monotonic() + 5
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            s.connect((host, port))
            return s
        except ConnectionRefusedError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def tcp_send(host: str, port: int, count: int, gap: float, out: str) -> None:
    s = connect(host, port)
    for i in range(count):
        try:
            s.send(f"m{i}\n".encode())
            log(out, f"sent m{i}")
        except OSError as err:
            log(out, f"error {type(err).__name__} at m{i}")
            break
        time.sleep(gap)
    log(out, "done")
    time.sleep(3600)


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "udp-recv":
        udp_recv(int(args[0]), args[1])
    elif mode == "udp-send":
        udp_send(args[0], int(args[1]), int(args[2]), float(args[3]), args[4])
    elif mode == "tcp-recv":
        tcp_recv(int(args[0]), args[1])
    elif mode == "tcp-send":
        tcp_send(args[0], int(args[1]), int(args[2]), float(args[3]), args[4])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
