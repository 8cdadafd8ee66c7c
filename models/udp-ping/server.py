"""A UDP ping server: answers every datagram `ping N` with `pong N`."""

import argparse
import socket


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", args.port))
    print(f"udp ping server on {args.port}", flush=True)
    while True:
        data, peer = sock.recvfrom(2048)
        if data.startswith(b"ping "):
            sock.sendto(b"pong " + data[5:], peer)


if __name__ == "__main__":
    main()
