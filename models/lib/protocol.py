"""Shared plumbing for the Molly benchmark models (Python 3 stdlib only).

A model's node program subclasses `Node` and writes only its protocol:
`on_message`, `on_command`, `status`, and timers set with `after`. Everything
else is here:

- Time runs in synchronous steps of TICK seconds, as in Dedalus/Molly: a
  message sent during step k is handled at the start of step k+1 (every hop
  takes one tick), and a timer set with `after(n, f)` during step k fires at
  step k+n, after that step's messages. Step boundaries are multiples of TICK
  on the machine's monotonic clock, so all nodes (and the workload, see
  `at_mid_tick`) share them.
- One node is one process with one select() loop, no threads. At each step
  it handles what it read during the previous tick in a fixed order (by
  sender name, then arrival), so the same faults give the same messages in
  the same order, run after run.
- Messages are JSON objects, one per send system call, with a "from" field
  naming the sender (node names, never ports). Over UDP every node sends from
  one socket bound to the model's port, so a node pair has one channel. Over
  TCP a node opens one connection to each peer the first time it sends to it
  (a blocking connect of at most CONNECT_TIMEOUT: a message to a peer that
  cannot be reached is lost) and sends one line per message on it; when the
  connection breaks, the next message opens a new one.
- Every node also listens on TCP at the model's port. A line {"type":
  "status"} there is answered at once with the node's state as one JSON line
  (what the check asks); any other line without a node's "from" is a command
  from the workload, handled at the next step like a message (`on_command`,
  which may answer it later with `reply`).
- SIGTERM ends the node at once (exit status 0).

The client side (the workload and the check) uses `at_mid_tick`, `command`,
`query`, `report` and `check_parser`.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

TICK = 0.05  # seconds per logical tick
QUERY_TIMEOUT = 0.3  # a node that does not answer the check within this is crashed
VACUOUS_EXIT = 3  # a check's "holds, but only vacuously": the scenarios' [check] vacuous_exit
CONNECT_TIMEOUT = 0.2 * TICK  # a peer that does not accept a connection within this is down

Message = dict[str, Any]


def parse_nodes(text: str) -> dict[str, str]:
    """"a=10.0.0.1,b=10.0.0.2" -> {"a": "10.0.0.1", "b": "10.0.0.2"}, in order."""
    nodes = {}
    for item in text.split(","):
        name, sep, addr = item.partition("=")
        if not sep or not name or not addr:
            raise argparse.ArgumentTypeError(f"expected NAME=ADDRESS, got {item!r}")
        nodes[name.strip()] = addr.strip()
    return nodes


def node_args(description: str) -> argparse.ArgumentParser:
    """The command line every node program takes: its name, every node's
    address (its own included: it binds to it), the port."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--name", required=True, help="this node's name")
    parser.add_argument("--nodes", type=parse_nodes, required=True,
                        help="every node as NAME=ADDRESS, comma-separated")
    parser.add_argument("--port", type=int, required=True)
    return parser


def encode(msg: Message) -> bytes:
    return (json.dumps(msg, sort_keys=True, separators=(",", ":")) + "\n").encode()


def tick_now() -> int:
    """The current step on the machine-wide tick grid."""
    return math.floor(time.monotonic() / TICK)


class Node:
    """One protocol node. Subclasses set `transport` ("udp" or "tcp") and
    override the on_* methods and `status`."""

    transport = "udp"

    def __init__(self, name: str, nodes: dict[str, str], port: int) -> None:
        if name not in nodes:
            raise SystemExit(f"--name {name!r} is not one of --nodes {', '.join(nodes)}")
        self.name = name
        self.nodes = nodes
        self.peers = [n for n in nodes if n != name]
        self.port = port
        self.addr = nodes[name]
        self.step = tick_now()  # the step being handled
        self._timers: list[tuple[int, int, Callable[[], None]]] = []  # (step, seq, callback)
        self._pending: list[tuple[str, int, Message, socket.socket | None]] = []
        self._seq = itertools.count()
        self._streams: dict[socket.socket, bytearray] = {}  # accepted TCP connections
        self._links: dict[str, socket.socket] = {}  # outgoing TCP connections, by peer
        self.udp = None
        if self.transport == "udp":
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind((self.addr, port))
        self.listener = socket.create_server((self.addr, port))
        self.listener.setblocking(False)

    # -- what a protocol overrides ---------------------------------------------

    def on_message(self, src: str, msg: Message) -> None:
        """A message from peer `src`."""

    def on_command(self, msg: Message, conn: socket.socket) -> None:
        """A command from the workload; `reply(conn, ...)` answers it."""

    def status(self) -> Message:
        """This node's state, as the check sees it."""
        return {}

    # -- what a protocol calls -------------------------------------------------

    def log(self, text: str) -> None:
        print(f"[{self.name} {self.step % 100000:05d}] {text}", flush=True)

    def after(self, ticks: int, callback: Callable[..., None], *args: Any) -> None:
        """Call callback(*args) at the step `ticks` steps from this one."""
        heapq.heappush(self._timers,
                       (self.step + ticks, next(self._seq), lambda: callback(*args)))

    def send(self, peer: str, msg_type: str, **fields: Any) -> None:
        """Send one message to `peer`: one system call, one logical message."""
        data = encode({"type": msg_type, "from": self.name, **fields})
        self.log(f"-> {peer} {msg_type} {fields or ''}")
        if self.udp is not None:
            try:
                self.udp.sendto(data, (self.nodes[peer], self.port))
            except OSError as err:  # e.g. a refusal reported by an earlier ICMP
                self.log(f"send to {peer} failed: {err}")
            return
        sock = self._links.get(peer)
        if sock is None:
            # A blocking connect: sends leave in program order whatever the peers do.
            try:
                sock = socket.create_connection((self.nodes[peer], self.port),
                                                timeout=CONNECT_TIMEOUT)
            except OSError as err:
                self.log(f"cannot connect to {peer} ({err}): message lost")
                return
            sock.setblocking(False)
            self._links[peer] = sock
        try:
            if sock.send(data) < len(data):
                self.log(f"send to {peer} was cut short")
        except OSError as err:
            self._drop_link(peer, f"{err}: message lost")

    def broadcast(self, peers: list[str], msg_type: str, **fields: Any) -> None:
        """Send to each of `peers`, in the given (fixed) order."""
        for peer in peers:
            self.send(peer, msg_type, **fields)

    def reply(self, conn: socket.socket, **fields: Any) -> None:
        """Answer a workload command on its connection."""
        try:
            conn.sendall(encode(fields))
        except OSError as err:
            self.log(f"reply failed: {err}")

    # -- the loop ----------------------------------------------------------------

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        self.log(f"ready: {self.transport} and status on {self.addr}:{self.port}")
        while True:
            # Handle the step first, then read: what arrives from now on was
            # sent at this step or later, and belongs to the next one.
            if tick_now() > self.step:
                self.step = tick_now()
                self._handle_step()
            timeout = max(0.0, (self.step + 1) * TICK - time.monotonic())
            readers = [self.listener, *self._streams, *self._links.values()]
            if self.udp is not None:
                readers.append(self.udp)
            readable, _, _ = select.select(readers, [], [], timeout)
            if tick_now() > self.step:
                continue  # a new step began while we waited: handle it before reading
            for peer, sock in list(self._links.items()):
                if sock in readable:
                    self._on_link_readable(peer, sock)
            if self.listener in readable:
                self._accept()
            if self.udp is not None and self.udp in readable:
                self._on_datagram()
            for conn in [c for c in self._streams if c in readable]:
                self._on_stream(conn)

    def _handle_step(self) -> None:
        """What was read during the last tick, by sender name then arrival
        (workload commands first); then the timers due."""
        pending, self._pending = sorted(self._pending, key=lambda p: (p[0], p[1])), []
        for src, _, msg, conn in pending:
            if src:
                fields = {k: v for k, v in msg.items() if k not in ("from", "type")}
                self.log(f"<- {src} {msg.get('type')} {fields or ''}")
                self.on_message(src, msg)
            else:
                self.log(f"command {msg}")
                self.on_command(msg, conn)
        while self._timers and self._timers[0][0] <= self.step:
            _, _, callback = heapq.heappop(self._timers)
            callback()

    def _received(self, msg: Message, conn: socket.socket | None) -> None:
        src = msg.get("from")
        if src in self.peers:
            self._pending.append((src, next(self._seq), msg, None))
        elif msg.get("type") == "status" and conn is not None:
            self.reply(conn, name=self.name, **self.status())  # read-only: at once
        elif conn is not None:
            self._pending.append(("", next(self._seq), msg, conn))

    def _on_datagram(self) -> None:
        try:
            data, _ = self.udp.recvfrom(65536)
        except OSError:  # ICMP port unreachable from an earlier send
            return
        try:
            msg = json.loads(data)
        except ValueError:
            return
        if isinstance(msg, dict):
            self._received(msg, None)

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.setblocking(False)
        self._streams[conn] = bytearray()

    def _on_stream(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            del self._streams[conn]
            conn.close()
            return
        buf = self._streams[conn]
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict):
                self._received(msg, conn)

    def _on_link_readable(self, peer: str, sock: socket.socket) -> None:
        """Peers never write on our connections: readable means closed."""
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_link(peer, "closed by the peer")

    def _drop_link(self, peer: str, why: str) -> None:
        """The connection to `peer` is gone; the next send opens a new one."""
        self.log(f"connection to {peer} dropped ({why})")
        self._links.pop(peer).close()



class DeliveryNode(Node):
    """A node of the delivery protocols: a list of delivered values, reported
    by the status query (what check_delivery.py reads)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.delivered = []

    def deliver(self, value):
        """Deliver `value` unless already delivered; True if it was new."""
        if value in self.delivered:
            return False
        self.delivered.append(value)
        self.log(f"delivered {value!r}")
        return True

    def status(self):
        return {"delivered": self.delivered}

def serve(node_class: type[Node], description: str) -> None:
    """The main() of a node program whose class takes only (name, nodes, port)."""
    args = node_args(description).parse_args()
    node_class(args.name, args.nodes, args.port).run()


# -- the client side: workload and check ----------------------------------------------


def at_mid_tick() -> None:
    """Wait until a tick's middle half: a command sent then reaches its node
    far from any step boundary, so it is handled at the same step in every
    run."""
    phase = time.monotonic() / TICK % 1.0
    if not 0.25 <= phase < 0.75:
        time.sleep(((0.5 - phase) % 1.0) * TICK)


def command(addr: str, port: int, msg: Message, wait_reply: float | None = None) -> Message | None:
    """Send one command line to a node; with wait_reply, wait that many seconds
    for one answer line (None when none came)."""
    with socket.create_connection((addr, port), timeout=1.0) as sock:
        sock.sendall(encode(msg))
        if wait_reply is None:
            return None
        return _read_line(sock, wait_reply)


def query(addr: str, port: int, timeout: float = QUERY_TIMEOUT) -> Message | None:
    """A node's status, or None when it does not answer in time (crashed)."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((addr, port), timeout=timeout) as sock:
            sock.sendall(encode({"type": "status"}))
            return _read_line(sock, max(0.01, deadline - time.monotonic()))
    except OSError:
        return None


def _read_line(sock: socket.socket, timeout: float) -> Message | None:
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except OSError:
            return None
        if not data:
            return None
        buf += data
    try:
        msg = json.loads(buf.partition(b"\n")[0])
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def query_all(nodes: dict[str, str], port: int) -> dict[str, Message | None]:
    """Every node's status (None: crashed), asked one after the other."""
    return {name: query(addr, port) for name, addr in nodes.items()}


def report(states: dict[str, Message | None], problems: list[str], summary: str,
           vacuous: bool = False) -> int:
    """Print every node's state and the verdict (to stderr when the predicate
    fails, where `ldfi run` points); return the check's exit status: 0 good,
    1 violated, VACUOUS_EXIT good only because the premise never held (Molly's
    precondition: nothing was delivered / nobody voted), so the search learns
    no lineage from the run."""
    out = sys.stderr if problems else sys.stdout
    for name, state in states.items():
        if state is None:
            print(f"{name}: no answer (crashed): excluded", file=out)
        else:
            shown = {k: v for k, v in state.items() if k != "name"}
            print(f"{name}: {json.dumps(shown, sort_keys=True)}", file=out)
    for problem in problems:
        print(f"VIOLATED: {problem}", file=out)
    if problems:
        return 1
    print(f"OK{' (vacuously)' if vacuous else ''}: {summary}", file=out)
    return VACUOUS_EXIT if vacuous else 0


def check_parser(description: str) -> argparse.ArgumentParser:
    """The command line of a check: every node's address and the port."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--nodes", type=parse_nodes, required=True,
                        help="every node as NAME=ADDRESS, comma-separated")
    parser.add_argument("--port", type=int, required=True)
    return parser
