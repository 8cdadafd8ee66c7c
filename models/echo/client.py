"""Sends N lines to the echo server and writes OK to --out if all came back."""

import argparse
import socket
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, help="host:port")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    host, port = args.server.rsplit(":", 1)
    echoed = 0
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        stream = conn.makefile("rwb")
        for i in range(args.count):
            line = f"hello {i}\n".encode()
            stream.write(line)
            stream.flush()
            if stream.readline() == line:
                echoed += 1
    verdict = "OK" if echoed == args.count else "MISSING"
    with open(args.out, "w") as f:
        f.write(f"{verdict} {echoed}/{args.count}\n")
    print(f"{verdict} {echoed}/{args.count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
