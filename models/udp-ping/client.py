"""Sends N pings over UDP, retrying each up to --retries times; writes how
many pongs came back to --out."""

import argparse
import socket
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, help="host:port")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    host, port = args.server.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.3)
    answered = 0
    for i in range(args.count):
        for _ in range(args.retries):
            sock.sendto(f"ping {i}".encode(), (host, int(port)))
            try:
                data, _ = sock.recvfrom(2048)
            except TimeoutError:
                continue
            if data == f"pong {i}".encode():
                answered += 1
                break
    with open(args.out, "w") as f:
        f.write(f"{answered}/{args.count}\n")
    print(f"{answered}/{args.count} pongs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
