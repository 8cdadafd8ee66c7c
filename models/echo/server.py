"""A TCP echo server: one thread per connection, echoes lines back."""

import argparse
import socket
import threading


def serve(conn: socket.socket) -> None:
    with conn, conn.makefile("rwb") as stream:
        for line in stream:
            stream.write(line)
            stream.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=7000)
    args = parser.parse_args()
    listener = socket.create_server(("0.0.0.0", args.port), reuse_port=False)
    print(f"echo server listening on {args.port}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
