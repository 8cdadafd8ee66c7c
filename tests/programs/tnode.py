"""Small deterministic nodes and clients for the tracer's end-to-end tests
(tests/test_tracer.py). Standard library only; every byte count is fixed so
that the tests can name the exact messages and receives they expect.

    python3 tnode.py MODE ARGS...

Servers serve a fixed number of connections and then sleep until the
sandbox stops them. Clients exit non-zero when anything is not as expected,
so a broken workload fails the run instead of producing a silently different
trace. Request/response convention: the server answers b"re:" + request."""

from __future__ import annotations

import fcntl
import os
import select
import selectors
import socket
import struct
import sys
import termios
import threading
import time


def die(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
    os._exit(1)


def listener(port: int, family: int = socket.AF_INET, host: str = "0.0.0.0") -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((host, port))
    s.listen(128)
    return s


def connect(host: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect((host, port))  # blocking: one connect() returning 0
    return s


def queued(s: socket.socket) -> int:
    """Bytes waiting in the receive queue (FIONREAD: an ioctl, not traced)."""
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def wait_queued(s: socket.socket, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while queued(s) < n:
        if time.monotonic() > deadline:
            die(f"only {queued(s)} of {n} bytes arrived")
        time.sleep(0.005)


def sleep_forever() -> None:
    while True:
        time.sleep(3600)


def serve_one(conn: socket.socket) -> None:
    """One request (one recv), one reply (one send), then wait for EOF."""
    data = conn.recv(4096)
    conn.send(b"re:" + data)
    while conn.recv(4096):
        pass
    conn.close()


def request(s: socket.socket, payload: bytes) -> None:
    """Send one request, receive exactly its reply."""
    if s.send(payload) != len(payload):
        die("short send")
    want = b"re:" + payload
    got = s.recv(4096)
    if got != want:
        die(f"reply {got!r}, expected {want!r}")


def ok(workdir: str) -> None:
    with open(os.path.join(workdir, "ok"), "w") as f:
        f.write("ok\n")


# -- servers -------------------------------------------------------------------

def accepted(lst: socket.socket) -> socket.socket:
    """accept(), and say on stdout which process got which fd: what the
    tests hold the tracer's accept records to (no hook sees accept itself)."""
    conn, _ = lst.accept()
    print(f"accepted {os.getpid()} {conn.fileno()}", flush=True)
    return conn


def serve(port: str, count: str = "1") -> None:
    """Serve `count` connections one after another, in this thread."""
    lst = listener(int(port))
    for _ in range(int(count)):
        serve_one(accepted(lst))
    sleep_forever()


def serve_dual(port: str) -> None:
    """Like serve, on a dual-stack AF_INET6 socket bound to ::."""
    lst = listener(int(port), socket.AF_INET6, "::")
    conn, _ = lst.accept()
    serve_one(conn)
    sleep_forever()


def serve_threads(port: str, count: str) -> None:
    """One thread per connection."""
    lst = listener(int(port))
    threads = []
    for _ in range(int(count)):
        conn = accepted(lst)
        t = threading.Thread(target=serve_one, args=(conn,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    sleep_forever()


def serve_prefork(port: str, count: str) -> None:
    """The parent listens, then forks `count` children that each accept one
    connection and serve it."""
    lst = listener(int(port))
    children = []
    for _ in range(int(count)):
        pid = os.fork()
        if pid == 0:
            serve_one(accepted(lst))
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    sleep_forever()


def serve_bulk(port: str) -> None:
    """One 10000-byte request read as ten recv(1000, MSG_WAITALL)."""
    lst = listener(int(port))
    conn, _ = lst.accept()
    got = b"".join(conn.recv(1000, socket.MSG_WAITALL) for _ in range(10))
    conn.send(b"GOT %d\n" % len(got))
    while conn.recv(4096):
        pass
    sleep_forever()


def serve_coalesce(port: str) -> None:
    """Wait until three small sends (14 bytes) are queued, read them with ONE recv."""
    lst = listener(int(port))
    conn, _ = lst.accept()
    wait_queued(conn, 14)
    data = conn.recv(4096)
    conn.send(b"%d\n" % len(data))
    while conn.recv(4096):
        pass
    sleep_forever()


def serve_vector(port: str) -> None:
    """readv(5 bytes) then recvmsg(5 bytes) over a writev(6) + sendmsg(4); reply
    with write(); the client reads it with read()."""
    lst = listener(int(port))
    conn, _ = lst.accept()
    wait_queued(conn, 10)
    a = bytearray(5)
    if os.readv(conn.fileno(), [a]) != 5:
        die("short readv")
    data, _anc, _flags, _addr = conn.recvmsg(5)
    if bytes(a) + data != b"abcdefghij":
        die(f"got {bytes(a) + data!r}")
    os.write(conn.fileno(), b"ok")
    while conn.recv(4096):
        pass
    sleep_forever()


def serve_concurrent(port: str) -> None:
    """Accept three connections, then answer whichever speaks (selectors)."""
    lst = listener(int(port))
    conns = [lst.accept()[0] for _ in range(3)]
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c, selectors.EVENT_READ)
    open_ = len(conns)
    while open_:
        for key, _ in sel.select():
            c = key.fileobj
            data = c.recv(4096)
            if data:
                c.send(b"re:" + data)
            else:
                sel.unregister(c)
                c.close()
                open_ -= 1
    sleep_forever()


def serve_udp(port: str) -> None:
    """Answer every b"ping N" datagram with b"pong N"."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(port)))
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(b"pong" + data[4:], addr)


def serve_peek(port: str) -> None:
    """Like serve, but look at the request's first 4 bytes with MSG_PEEK
    before reading it."""
    conn = accepted(listener(int(port)))
    wait_queued(conn, 1)
    if len(conn.recv(4, socket.MSG_PEEK)) < 1:
        die("empty peek")
    serve_one(conn)
    sleep_forever()


def serve_udp_peek(port: str) -> None:
    """serve-udp, peeking at each datagram's first 4 bytes before reading it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(port)))
    while True:
        s.recvfrom(4, socket.MSG_PEEK)
        data, addr = s.recvfrom(2048)
        s.sendto(b"pong" + data[4:], addr)


def serve_udp_cut(port: str) -> None:
    """Read each datagram into a 4-byte buffer (the kernel cuts it), with
    recvfrom and recvmsg in turn, and answer b"cut"."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(port)))
    while True:
        _, addr = s.recvfrom(4)
        s.sendto(b"cut", addr)
        _, _, _, addr = s.recvmsg(4)
        s.sendto(b"cut", addr)


def serve_udp6(port: str) -> None:
    """serve-udp on an IPv6-only socket bound to ::."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::", int(port)))
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(b"pong" + data[4:], addr)


def serve_udp_sink(port: str, count: str) -> None:
    """Receive `count` datagrams, answer none."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(port)))
    for _ in range(int(count)):
        s.recvfrom(2048)
    sleep_forever()


# -- clients -------------------------------------------------------------------

def client(host: str, port: str, workdir: str, payload: str = "GET key\n") -> None:
    s = connect(host, int(port))
    request(s, payload.encode())
    s.close()
    ok(workdir)


def client_loop(host: str, port: str, count: str, workdir: str) -> None:
    """`count` short connections, one after another: connect, b"req %03d\n", close."""
    for i in range(int(count)):
        s = connect(host, int(port))
        request(s, b"req %03d\n" % i)
        s.close()
    ok(workdir)


def client_bulk(host: str, port: str, workdir: str) -> None:
    s = connect(host, int(port))
    if s.send(bytes(range(100)) * 100) != 10000:
        die("short send")
    if s.recv(4096) != b"GOT 10000\n":
        die("bad reply")
    s.close()
    ok(workdir)


def client_coalesce(host: str, port: str, workdir: str) -> None:
    s = connect(host, int(port))
    for part in (b"one\n", b"two\n", b"three\n"):
        s.send(part)
    if s.recv(4096) != b"14\n":
        die("bad reply")
    s.close()
    ok(workdir)


def client_vector(host: str, port: str, workdir: str) -> None:
    s = connect(host, int(port))
    if os.writev(s.fileno(), [b"ab", b"cdef"]) != 6:
        die("short writev")
    if s.sendmsg([b"gh", b"ij"]) != 4:
        die("short sendmsg")
    if os.read(s.fileno(), 100) != b"ok":
        die("bad reply")
    s.close()
    ok(workdir)


def client_concurrent(host: str, port: str, workdir: str) -> None:
    """Three connections open at once, used in an interleaved order."""
    conns = [connect(host, int(port)) for _ in range(3)]
    for k, text in ((2, b"c2-a"), (0, b"c0-a"), (1, b"c1-a"), (0, b"c0-b"), (2, b"c2-b")):
        request(conns[k], text)
    for c in conns:
        c.close()
    ok(workdir)


def client_udp(host: str, port: str, workdir: str) -> None:
    """ping 1, then ping 2 twice (a duplicate), then one datagram to a closed port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    dst = (host, int(port))
    s.sendto(b"ping 1", dst)
    if s.recvfrom(2048)[0] != b"pong 1":
        die("bad pong 1")
    s.sendto(b"ping 2", dst)
    s.sendto(b"ping 2", dst)
    for _ in range(2):
        if s.recvfrom(2048)[0] != b"pong 2":
            die("bad pong 2")
    s.sendto(b"lost", (host, int(port) + 1))
    s.close()
    ok(workdir)


def client_udp_sendmsg(host: str, port: str, workdir: str) -> None:
    """One datagram sent with sendmsg() from two iovecs, received with recvfrom()."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendmsg([b"pi", b"ng 1"], [], 0, (host, int(port)))
    if s.recvfrom(2048)[0] != b"pong 1":
        die("bad pong 1")
    s.close()
    ok(workdir)


def client_udp_recv(host: str, port: str, workdir: str) -> None:
    """Datagrams whose receives do not ask for their source: recv() and read()."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(b"ping 1", (host, int(port)))
    if s.recv(2048) != b"pong 1":
        die("bad pong 1")
    s.sendto(b"ping 2", (host, int(port)))
    select.select([s], [], [], 5)  # the timeout made the fd non-blocking
    if os.read(s.fileno(), 2048) != b"pong 2":
        die("bad pong 2")
    s.close()
    ok(workdir)


def client_sendfile(host: str, port: str, workdir: str) -> None:
    """A request sent with sendfile() from a file, its reply received, then
    more bytes spliced into the connection from a pipe."""
    s = connect(host, int(port))
    path = os.path.join(workdir, "request")
    with open(path, "wb") as f:
        f.write(b"GET key\n")
    with open(path, "rb") as f:
        if os.sendfile(s.fileno(), f.fileno(), 0, 8) != 8:
            die("short sendfile")
    if s.recv(4096) != b"re:GET key\n":
        die("bad reply")
    r, w = os.pipe()
    os.write(w, b"more\n")
    if os.splice(r, s.fileno(), 5) != 5:
        die("short splice")
    s.close()
    ok(workdir)


def udp_flood(count: str, workdir: str) -> None:
    """`count` datagrams to itself on loopback, each received: many records, fast."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    me = s.getsockname()
    for _ in range(int(count)):
        s.sendto(b"flood", me)
        s.recv(64)
    ok(workdir)


def client_udp_cut(host: str, port: str, workdir: str) -> None:
    """Two 6-byte datagrams, each answered by b"cut"."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    for i in (1, 2):
        s.sendto(b"ping %d" % i, (host, int(port)))
        if s.recvfrom(64)[0] != b"cut":
            die("bad answer")
    ok(workdir)


def client_sendfile_writes(host: str, port: str, workdir: str) -> None:
    """A request sent with sendfile(), its reply, then two write()s."""
    s = connect(host, int(port))
    path = os.path.join(workdir, "request")
    with open(path, "wb") as f:
        f.write(b"GET key\n")
    with open(path, "rb") as f:
        os.sendfile(s.fileno(), f.fileno(), 0, 8)
    if s.recv(4096) != b"re:GET key\n":
        die("bad reply")
    for line in (b"more1\n", b"more2\n"):
        s.send(line)
        time.sleep(0.1)
    s.close()
    ok(workdir)


def client_udp6(host: str, port: str, workdir: str) -> None:
    """One datagram to an IPv6 address, answered (serve-udp6)."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(b"ping 6", (host, int(port)))
    if s.recvfrom(64)[0] != b"pong 6":
        die("bad pong 6")
    ok(workdir)


def client_files(host: str, port: str, workdir: str) -> None:
    """Writes to a file and a pipe (and reads the pipe) around one request;
    records which fds were which."""
    f = os.open(os.path.join(workdir, "data"), os.O_WRONLY | os.O_CREAT, 0o644)
    r, w = os.pipe()
    os.write(f, b"to a file\n")
    os.write(w, b"to a pipe\n")
    if os.read(r, 100) != b"to a pipe\n":
        die("pipe")
    s = connect(host, int(port))
    request(s, b"GET key\n")
    os.write(f, b"again\n")
    os.write(w, b"again\n")
    os.read(r, 100)
    with open(os.path.join(workdir, "fds"), "w") as out:
        out.write(f"{os.getpid()} {f} {r} {w} {s.fileno()}\n")
    s.close()
    ok(workdir)


def ipv6_self(workdir: str) -> None:
    """A TCP connection to itself over ::1: connect, accept, one request, one reply."""
    lst = listener(0, socket.AF_INET6, "::1")
    port = lst.getsockname()[1]
    c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    c.connect(("::1", port))
    conn, _ = lst.accept()
    c.send(b"hello v6\n")
    got = conn.recv(4096)
    conn.send(b"re:" + got)
    if c.recv(4096) != b"re:hello v6\n":
        die("bad v6 reply")
    c.close()
    conn.close()
    ok(workdir)


def loopback_pair(message: str) -> None:
    """A connection to itself over 127.0.0.1 (used from outside any run)."""
    lst = listener(0, host="127.0.0.1")
    c = connect("127.0.0.1", lst.getsockname()[1])
    conn, _ = lst.accept()
    c.send(message.encode())
    if conn.recv(4096) != message.encode():
        die("bad loopback")


def pingpong(count: str) -> None:
    """`count` round trips over a connection to itself, as fast as it can."""
    lst = listener(0, host="127.0.0.1")
    c = connect("127.0.0.1", lst.getsockname()[1])
    conn, _ = lst.accept()
    for _ in range(int(count)):
        c.send(b"ping")
        conn.recv(16)
        conn.send(b"pong")
        c.recv(16)


def chatter(_label: str = "") -> None:
    """Loopback ping-pong forever; prints a line per round trip (outside any run)."""
    lst = listener(0, host="127.0.0.1")
    c = connect("127.0.0.1", lst.getsockname()[1])
    conn, _ = lst.accept()
    n = 0
    while True:
        c.send(b"chatter\n")
        conn.recv(4096)
        n += 1
        print(n, flush=True)
        time.sleep(0.01)


MODES = {
    "serve": serve, "serve-dual": serve_dual, "serve-threads": serve_threads,
    "serve-prefork": serve_prefork, "serve-bulk": serve_bulk,
    "serve-coalesce": serve_coalesce, "serve-vector": serve_vector,
    "serve-concurrent": serve_concurrent, "serve-udp": serve_udp,
    "serve-udp-sink": serve_udp_sink, "serve-peek": serve_peek,
    "serve-udp-peek": serve_udp_peek,
    "client": client, "client-loop": client_loop, "client-bulk": client_bulk,
    "client-coalesce": client_coalesce, "client-vector": client_vector,
    "client-concurrent": client_concurrent, "client-udp": client_udp,
    "client-udp-sendmsg": client_udp_sendmsg,
    "client-udp-recv": client_udp_recv,
    "client-sendfile": client_sendfile,
    "client-sendfile-writes": client_sendfile_writes,
    "udp-flood": udp_flood,
    "serve-udp6": serve_udp6,
    "client-udp6": client_udp6,
    "serve-udp-cut": serve_udp_cut,
    "client-udp-cut": client_udp_cut,
    "client-files": client_files, "ipv6-self": ipv6_self,
    "loopback-pair": loopback_pair, "chatter": chatter, "pingpong": pingpong,
}

if __name__ == "__main__":
    MODES[sys.argv[1]](*sys.argv[2:])
