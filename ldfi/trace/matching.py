"""Send -> receive matching (TCP by byte ranges, UDP by datagram), and the
pairing of connect with accept.

TCP: each direction of a connection is one byte stream. The tracer reports
write_seq (sends) and copied_seq (receives) after the call's I/O; both live in the
sender's sequence space, so a send of n bytes covers [seq_w - n, seq_w) and a
receive of n bytes [seq_r - n, seq_r), and overlap is the exact byte-level
match. Without sequence numbers we fall back to cumulative byte counts.

A 4-tuple is unique in a network namespace only while its connection lives,
so the events of one socket side (node + 4-tuple) are cut into *epochs*, one
per connection: a connect or accept starts a new one, and so does a change of
the kernel sock address. The epochs of the two sides are then paired in time
order, checked against connect/accept times and sequence numbers.

UDP: a datagram is matched to a receive with the same (src node, src port,
dst node, dst port, captured payload prefix, length), FIFO, never to a
receive that ended before the send began.

A receive with MSG_PEEK (a peek) saw bytes without taking them. It is no
receive of a message, but it gets a peek edge from every send whose bytes it
returned: TCP by byte range (a peek covers [seq_r, seq_r + n): copied_seq
does not move), UDP from the datagram that the socket's next receive took.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from tracer.decode import H_FAULTS
from tracer.events import FAULT, Event

from .model import Topology

MOD = 1 << 32
HALF = 1 << 31
EINPROGRESS = 115
EALREADY = 114
EISCONN = 106
# a connect that returned one of these is (still) a connection attempt
_CONNECTING = frozenset({0, -EINPROGRESS, -EALREADY, -EISCONN})
_MMSG = frozenset({"sendmmsg", "recvmmsg"})
_FA_DROP_MSG = H_FAULTS["FA_DROP_MSG"]
# receives whose record holds no buffer size (count: iovecs or messages)
_UNSIZED_RECVS = frozenset({"readv", "recvmsg", "recvmmsg"})


@dataclass(frozen=True, slots=True, order=True)
class ChannelRef:
    """What ids.py needs to name a channel: channels of one (proto, opener,
    peer) are numbered by `order` (the seq of the channel's first event)."""

    proto: str  # "tcp" | "udp"
    opener: str  # TCP: the connecting node; UDP: the sending node
    peer: str  # TCP: the accepting node; UDP: the destination node
    order: int
    ipv6: bool = False  # opened on an IPv6 socket (dual-stack ones too): numbered apart


@dataclass(slots=True)
class SendMatch:
    event: Event
    src: str
    dst: str
    channel: ChannelRef
    recvs: list[int] = field(default_factory=list)
    byte_range: tuple[int, int] | None = None
    peeks: list[int] = field(default_factory=list)  # peeks that saw (some of) its bytes


@dataclass(slots=True)
class MatchResult:
    sends: list[SendMatch]  # one per TCP/UDP send, in send seq order
    connects: list[tuple[int, int]]  # (connect seq, accept seq)


class Resolver:
    """Address -> node name. Loopback and wildcard addresses are the event's
    own node (they never leave its namespace); an unknown address stays as is,
    so both ends of a flow still agree on it."""

    def __init__(self, topology: Topology) -> None:
        self._by_addr = {addr: name for names in (topology.addresses, topology.addresses6)
                         for name, addr in names.items() if addr}
        self._names = set(topology.nodes)
        self._cache: dict[tuple[str, str], str] = {}

    def node(self, addr: str, own: str) -> str:
        key = (addr, own)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._node(addr, own)
        return hit

    def _node(self, addr: str, own: str) -> str:
        if addr.startswith("::ffff:"):
            addr = addr[len("::ffff:"):]
        if addr in ("0.0.0.0", "::", "::1") or addr.startswith("127."):
            return own
        return self._by_addr.get(addr, addr)

    def is_node(self, name: str) -> bool:
        return name in self._names

    def own(self, e: Event) -> str:
        return e.node or self.node(e.laddr, "")


def match(events: Iterable[Event], topology: Topology) -> MatchResult:
    """Match every TCP/UDP send of `events` to the receives it reached."""
    resolver = Resolver(topology)
    tcp: list[Event] = []
    udp: list[Event] = []
    began: dict[int, int] = {}  # UDP send seq -> when it began, at the latest
    # (sk, entry time) of the sends whose datagrams an injected DropMessage
    # dropped: its record names the triggering send so. Without them, FIFO
    # would hand the receive of an identical later datagram to a dropped one.
    dropped: set[tuple[int, int]] = set()
    last_ts: dict[int, int] = {}  # tid -> ts of its latest record so far
    before_call: dict[int, int] = {}  # tid -> ts of its last record before the current call
    for e in sorted(events, key=lambda ev: ev.seq):
        if e.msg_idx == 0:  # a new call (an mmsg call's messages share one start)
            before_call[e.tid] = last_ts.get(e.tid, 0)
        if e.proto == "tcp":
            tcp.append(e)
        elif e.proto == "udp" and (e.is_send or e.is_recv or e.is_peek):
            udp.append(e)
            if e.is_send:
                began[e.seq] = _began(e, before_call.get(e.tid, 0))
        elif e.kind == FAULT and e.fault_action == _FA_DROP_MSG:
            dropped.add((e.sk, e.ts_enter))
        if e.tid:
            last_ts[e.tid] = e.ts
    sends, connects = _match_tcp(tcp, resolver)
    sends += _match_udp(udp, resolver, began, dropped)
    sends.sort(key=lambda s: s.event.seq)
    return MatchResult(sends, connects)


def _began(send: Event, thread_before: int) -> int:
    """A moment no later than the send's start: its entry time, or, for a send
    recorded at exit alone, its thread's previous record (`thread_before`),
    since that call had ended when this one began. UDP matching asks whether
    a send had begun before a receive returned (on loopback a datagram can be
    received before sendto returns); an earlier bound keeps every true match."""
    return thread_before if send.exit_only else send.ts_enter


# ---------------------------------------------------------------- TCP ----

Tuple4 = tuple[str, int, str, int]


@dataclass(slots=True)
class _Epoch:
    """One side's view of one connection."""

    node: str
    tuple4: Tuple4
    first_seq: int
    connect: Event | None = None
    accept: Event | None = None
    sk: int = 0
    sends: list[Event] = field(default_factory=list)
    recvs: list[Event] = field(default_factory=list)
    peeks: list[Event] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        return bool(self.sends or self.recvs or self.peeks)


def _is_connect(e: Event) -> bool:
    return e.syscall == "connect" and e.ret in _CONNECTING and e.rport != 0


def _is_accept(e: Event) -> bool:
    return e.syscall in ("accept", "accept4") and e.ret >= 0 and e.rport != 0


def _epochs(events: list[Event], resolver: Resolver) -> dict[tuple[str, Tuple4], list[_Epoch]]:
    """Cut each socket side's events into one epoch per connection."""
    sides: dict[tuple[str, Tuple4], list[_Epoch]] = defaultdict(list)
    for e in events:
        connect, accept = _is_connect(e), _is_accept(e)
        data = e.is_send or e.is_recv or e.is_peek
        if not (connect or accept or data):
            continue
        key = (resolver.own(e), (e.laddr, e.lport, e.raddr, e.rport))
        epochs = sides[key]
        cur = epochs[-1] if epochs else None
        # a repeated connect (non-blocking: EINPROGRESS, then 0/EISCONN) is the same attempt
        fresh_connect = connect and not (cur and cur.connect and not cur.has_data)
        new_sock = data and cur is not None and e.sk and cur.sk and e.sk != cur.sk
        if cur is None or accept or fresh_connect or new_sock:
            cur = _Epoch(key[0], key[1], e.seq)
            epochs.append(cur)
        if connect:
            cur.connect = cur.connect or e
        elif accept:
            cur.accept = e  # its sk may be the listener's: do not record it
        else:
            cur.sk = cur.sk or e.sk
            (cur.sends if e.is_send else cur.recvs if e.is_recv else cur.peeks).append(e)
    return sides


def _signed(delta: int) -> int:
    return (delta + HALF) % MOD - HALF


def _raw_ends(evs: list[Event], attr: str) -> list[int]:
    """Each event's end in sequence space. sendmmsg/recvmmsg report one event per
    message but the socket's seq only at the call's exit: spread it back."""
    ends = [getattr(e, attr) for e in evs]
    if not any(e.syscall in _MMSG for e in evs):
        return ends
    i = 0
    while i < len(evs):
        j = i + 1
        if evs[i].syscall in _MMSG:
            key = (evs[i].tid, evs[i].ts, ends[i])
            while j < len(evs) and (evs[j].tid, evs[j].ts, ends[j]) == key:
                j += 1
            end = ends[i] - sum(e.ret for e in evs[i:j])
            for k in range(i, j):
                end += evs[k].ret
                ends[k] = end % MOD
        i = j
    return ends


def _ranges(evs: list[Event], attr: str | None, base: int) -> list[tuple[int, int]]:
    """[start, end) of each event relative to `base`: unwrapped mod 2**32 step by
    step (so streams beyond 4 GiB work), or cumulative counts when attr is None."""
    out: list[tuple[int, int]] = []
    if attr is None:
        pos = 0
        for e in evs:
            out.append((pos, pos + e.ret))
            pos += e.ret
        return out
    prev_raw, prev = base, 0
    for e, raw in zip(evs, _raw_ends(evs, attr), strict=True):
        end = prev + _signed(raw - prev_raw)
        out.append((end - e.ret, end))
        prev_raw, prev = raw, end
    return out


def _stream_ranges(sends: list[Event], recvs: list[Event], peeks: list[Event]
                   ) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[tuple[int, int]]]:
    """Byte ranges of one direction's sends, receives and peeks in one
    coordinate system: offsets from the first traced byte, so they do not
    depend on the ISN."""
    exact = (all(e.seq_w is not None for e in sends)
             and all(e.seq_r is not None for e in (*recvs, *peeks)))
    if not exact:
        recv_r = _ranges(recvs, None, 0)
        return _ranges(sends, None, 0), recv_r, _peek_ranges(recvs, recv_r, peeks, None)
    first = sends[0] if sends else (recvs or peeks)[0]
    base = ((first.seq_w if sends else first.seq_r) - first.ret) % MOD
    recv_r = _ranges(recvs, "seq_r", base)
    return _ranges(sends, "seq_w", base), recv_r, _peek_ranges(recvs, recv_r, peeks, base)


def _peek_ranges(recvs: list[Event], recv_r: list[tuple[int, int]], peeks: list[Event],
                 base: int | None) -> list[tuple[int, int]]:
    """[start, end) of each peek: from where the receives before it had read
    up to (its own seq_r when known, unwrapped from the last of them)."""
    raw_ends = _raw_ends(recvs, "seq_r") if base is not None else []
    out: list[tuple[int, int]] = []
    i = 0  # receives before the peek
    for p in peeks:
        while i < len(recvs) and recvs[i].seq < p.seq:
            i += 1
        if base is None:
            start = recv_r[i - 1][1] if i else 0
        elif i:
            start = recv_r[i - 1][1] + _signed(p.seq_r - raw_ends[i - 1])
        else:
            start = _signed(p.seq_r - base)
        out.append((start, start + p.ret))
    return out


def _sweep(send_r: list[tuple[int, int]], recv_r: list[tuple[int, int]]) -> list[list[int]]:
    """For each send (by index), the indexes of receives overlapping it. Both
    sides sorted by start and swept once: linear in sends + receives + matches."""
    hits: list[list[int]] = [[] for _ in send_r]
    s_order = sorted(range(len(send_r)), key=lambda i: send_r[i])
    r_order = sorted(range(len(recv_r)), key=lambda i: recv_r[i])
    lo = 0
    for r in r_order:
        c, d = recv_r[r]
        while lo < len(s_order) and send_r[s_order[lo]][1] <= c:
            lo += 1
        k = lo
        while k < len(s_order) and send_r[s_order[k]][0] < d:
            a, b = send_r[s_order[k]]
            if a < d and c < b:
                hits[s_order[k]].append(r)
            k += 1
    return hits


def _seq_agree(sends: list[Event], recvs: list[Event]) -> bool:
    """Could these receives be reading these sends? (Same stream: the first byte
    read lies in the sent span, or the first byte sent in the read span.)"""
    if not sends or not recvs or sends[0].seq_w is None or recvs[0].seq_r is None:
        return True
    s0 = sends[0].seq_w - sends[0].ret
    r0 = recvs[0].seq_r - recvs[0].ret
    d = _signed(r0 - s0)
    if d >= 0:
        return d <= sum(e.ret for e in sends)
    return -d <= sum(e.ret for e in recvs)


def _compatible(a: _Epoch, b: _Epoch) -> bool:
    if (a.connect and b.connect) or (a.accept and b.accept):
        return False
    conn, acc = (a.connect, b.accept) if a.connect else (b.connect, a.accept)
    # the SYN leaves during connect, so the accept cannot return before connect began
    if conn and acc and acc.ts < conn.ts_enter:
        return False
    return _seq_agree(a.sends, b.recvs) and _seq_agree(b.sends, a.recvs)


def _pair(mine: list[_Epoch], theirs: list[_Epoch]
          ) -> list[tuple[_Epoch | None, _Epoch | None]]:
    """Pair two sides' epochs in time order (connections on one 4-tuple follow
    each other); an epoch with no counterpart stays alone."""
    out: list[tuple[_Epoch | None, _Epoch | None]] = []
    i = j = 0
    while i < len(mine) and j < len(theirs):
        a, b = mine[i], theirs[j]
        if _compatible(a, b):
            out.append((a, b))
            i, j = i + 1, j + 1
        elif a.first_seq < b.first_seq:
            out.append((a, None))
            i += 1
        else:
            out.append((None, b))
            j += 1
    out += [(a, None) for a in mine[i:]] + [(None, b) for b in theirs[j:]]
    return out


def _connections(sides: dict[tuple[str, Tuple4], list[_Epoch]], resolver: Resolver
                 ) -> list[tuple[_Epoch, _Epoch | None]]:
    by_tuple: dict[Tuple4, list[str]] = defaultdict(list)
    for node, t4 in sides:
        by_tuple[t4].append(node)
    done: set[tuple[str, Tuple4]] = set()
    conns: list[tuple[_Epoch, _Epoch | None]] = []
    for key in sorted(sides):
        if key in done:
            continue
        node, (la, lp, ra, rp) = key
        mirror = (ra, rp, la, lp)
        peer_node = resolver.node(ra, node)
        peers = [n for n in by_tuple.get(mirror, ()) if n == peer_node]
        if not peers and not resolver.is_node(peer_node):
            peers = by_tuple.get(mirror, [])  # unknown address: any node with the mirror
        theirs = sorted((ep for n in peers for ep in sides[(n, mirror)]),
                        key=lambda ep: ep.first_seq)
        done.add(key)
        done.update((n, mirror) for n in peers)
        for a, b in _pair(sides[key], theirs):
            first = a or b
            assert first is not None
            conns.append((first, b if a else None))
    return conns


def _roles(a: _Epoch, b: _Epoch | None, resolver: Resolver) -> tuple[str, str, int]:
    """(connecting node, accepting node, order) of a connection."""
    peer = b.node if b else resolver.node(a.tuple4[2], a.node)
    epochs = [a, b] if b else [a]
    order = min(ep.connect.seq if ep.connect else ep.first_seq for ep in epochs)
    if a.connect or (b and b.accept):
        return a.node, peer, order
    if (b and b.connect) or a.accept:
        return peer, a.node, order
    # neither end seen opening it (traced too late): the first to speak opened it
    if b is None:
        heard = [e.seq for e in (a.recvs[:1] + a.peeks[:1])]
        first_send = bool(a.sends) and (not heard or a.sends[0].seq < min(heard))
        return (a.node, peer, order) if first_send else (peer, a.node, order)
    return (a.node, peer, order) if a.first_seq <= b.first_seq else (peer, a.node, order)


def _opened_on_ipv6(a: _Epoch, b: _Epoch | None, opener: str) -> bool:
    """Was the connection opened from an IPv6 socket? Fault triggers number
    the channels of IPv4 sockets only (bpf/faults.bpf.c): a dual-stack socket
    talking IPv4 is one of the others."""
    side = a if a.node == opener and (a.connect or not (b and b.connect)) else b
    if side is None or side.node != opener:
        return ":" in a.tuple4[2]  # the opener was not traced: its address tells
    first = side.connect or (side.sends or side.recvs or side.peeks or [None])[0]
    return first is not None and first.family == 6


def _direction(src: _Epoch, dst: _Epoch | None, dst_node: str, ref: ChannelRef
               ) -> list[SendMatch]:
    recvs = dst.recvs if dst else []
    peeks = dst.peeks if dst else []
    if not src.sends and not recvs and not peeks:
        return []
    send_r, recv_r, peek_r = _stream_ranges(src.sends, recvs, peeks)
    hits, seen = _sweep(send_r, recv_r), _sweep(send_r, peek_r)
    return [SendMatch(e, src.node, dst_node, ref, [recvs[r].seq for r in sorted(hs)], rng,
                      [peeks[p].seq for p in sorted(ps)])
            for e, rng, hs, ps in zip(src.sends, send_r, hits, seen, strict=True)]


def _match_tcp(events: list[Event], resolver: Resolver
               ) -> tuple[list[SendMatch], list[tuple[int, int]]]:
    sends: list[SendMatch] = []
    connects: list[tuple[int, int]] = []
    for a, b in _connections(_epochs(events, resolver), resolver):
        accepted = b is not None and bool(a.connect or b.connect) and bool(a.accept or b.accept)
        if not (accepted or a.has_data or (b and b.has_data)):
            continue  # refused or never completed: not a connection, no channel
        opener, acceptor, order = _roles(a, b, resolver)
        ref = ChannelRef("tcp", opener, acceptor, order, _opened_on_ipv6(a, b, opener))
        peer = b.node if b else resolver.node(a.tuple4[2], a.node)
        sends += _direction(a, b, peer, ref)
        if b is not None:
            sends += _direction(b, a, a.node, ref)
            conn = a.connect or b.connect
            acc = a.accept or b.accept
            if conn and acc:
                connects.append((conn.seq, acc.seq))
    return sends, connects


# ---------------------------------------------------------------- UDP ----

def _match_udp(events: list[Event], resolver: Resolver, began: dict[int, int],
               dropped: set[tuple[int, int]]) -> list[SendMatch]:
    flows: dict[tuple[str, int, str, int], list[SendMatch]] = defaultdict(list)
    first_send: dict[tuple[str, str, int, int], int] = {}
    recvs: dict[tuple[str, int, str, int], list[Event]] = defaultdict(list)
    blind: dict[tuple[str, int], list[Event]] = defaultdict(list)  # (own, lport) -> receives
    peeks: list[Event] = []
    out: list[SendMatch] = []
    for e in events:
        own = resolver.own(e)
        if e.is_peek:
            peeks.append(e)
        elif e.is_send:
            dst = resolver.node(e.raddr, own)
            # a channel is one sending socket towards one node: sk, or port if sk unknown
            sock = (own, dst, e.sk, e.lport)
            first_send.setdefault(sock, e.seq)
            ref = ChannelRef("udp", own, dst, first_send[sock], e.family == 6)
            m = SendMatch(e, own, dst, ref)
            out.append(m)
            # known lost: no receive may take it. (Not to its own node: such a
            # datagram never crosses the classifier on eth0, so it arrived.)
            if dst == own or (e.sk, e.ts_enter) not in dropped:
                flows[(own, e.lport, dst, e.rport)].append(m)
        elif e.rport == 0:
            blind[(own, e.lport)].append(e)
        else:
            recvs[(resolver.node(e.raddr, own), e.rport, own, e.lport)].append(e)
    for key, rs in recvs.items():
        _fifo(flows.get(key, []), rs, began)
    for (own, lport), rs in blind.items():
        _fifo(_towards(flows, own, lport), rs, began)
    if peeks:
        _peeked(out, peeks, events, began)
    return out


def _peeked(sends: list[SendMatch], peeks: list[Event], events: list[Event],
            began: dict[int, int]) -> None:
    """A UDP peek saw the datagram its socket's next receive took, if that
    datagram had begun before the peek returned and begins with what the
    peek saw. (A peeked datagram that no traced receive took, or that
    another thread's receive took first, gets no peek edge.) `events` are
    in seq order (match() sorted them)."""
    took = {r: m for m in sends for r in m.recvs}
    later: dict[int, list[int]] = defaultdict(list)  # sk -> seqs of its receives, in order
    for r in events:
        if r.is_recv:
            later[r.sk].append(r.seq)
    for p in peeks:
        seqs = later.get(p.sk, [])
        i = bisect_right(seqs, p.seq)
        m = took.get(seqs[i]) if i < len(seqs) else None
        if m is not None and m.event.ret >= p.ret and began[m.event.seq] <= p.ts and (
                m.event.payload.startswith(p.payload) or p.payload.startswith(m.event.payload)):
            m.peeks.append(p.seq)


def _towards(flows: dict[tuple[str, int, str, int], list[SendMatch]], node: str, port: int
             ) -> list[SendMatch]:
    """The sends of every flow to `node`:`port` that no receive has taken yet,
    in the order they were recorded. A receive that did not ask for its
    source (recv() or read() on an unbound-peer socket) has none: the kernel
    hands it over only when the caller passes an address buffer (bpf/trace.bpf.c,
    keep_udp_source). It is matched among all the senders to its port."""
    towards = [m for (_, _, dst, dport), ms in flows.items() if (dst, dport) == (node, port)
               for m in ms if not m.recvs]
    return sorted(towards, key=lambda m: m.event.seq)


def _fifo(sends: list[SendMatch], recvs: list[Event], began: dict[int, int]) -> None:
    """Each receive takes the oldest unmatched send of the same content that had
    begun before the receive returned."""
    queues: dict[tuple[bytes, int], deque[SendMatch]] = defaultdict(deque)
    for m in sends:
        queues[(m.event.payload, m.event.ret)].append(m)
    for r in recvs:
        q = queues.get((r.payload, r.ret))
        while q and q[0].recvs:  # taken by the truncation fallback below
            q.popleft()
        if q and began[q[0].event.seq] <= r.ts:
            q.popleft().recvs.append(r.seq)
        elif not _by_prefix(sends, r, began) and _may_be_cut(r):
            _truncated(sends, r, began)


def _by_prefix(sends: list[SendMatch], r: Event, began: dict[int, int]) -> bool:
    """A vector call records its first iovecs only (a send: up to four; a
    readv/recvmsg: the first), so one side's payload may be a strict prefix
    of the other's."""
    for m in sends:
        e = m.event
        short, long_ = sorted((e.payload, r.payload), key=len)
        if (not m.recvs and e.ret == r.ret and began[e.seq] <= r.ts
                and len(short) < len(long_) and long_.startswith(short)):
            m.recvs.append(r.seq)
            return True
    return False


def _may_be_cut(r: Event) -> bool:
    """Could `r` be a datagram cut to the receiver's buffer? When it filled
    the buffer, or when its record does not say how big the buffer was. Not
    a recv_other: its count is a call number, and its empty payload would
    agree with any longer datagram."""
    if r.syscall == "recv_other":
        return False
    return r.ret == r.count or r.syscall in _UNSIZED_RECVS


def _truncated(sends: list[SendMatch], r: Event, began: dict[int, int]) -> None:
    n = len(r.payload)
    for m in sends:
        e = m.event
        if (not m.recvs and e.ret > r.ret and began[e.seq] <= r.ts
                and e.payload[:n] == r.payload[: len(e.payload)]):
            m.recvs.append(r.seq)
            return
