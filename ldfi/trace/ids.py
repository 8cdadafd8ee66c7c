"""Logical message ids: (src node, dst node, channel, ordinal).

Ports, pids, fds, sequence numbers and times change from run to run; node
names and the order of things on one channel do not (for the same behaviour).
So channels are numbered per pair of nodes, in the order they were opened,
and messages per channel direction, in send order. Traffic on other node
pairs never shifts a message's id.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from tracer.events import UNSEEN_SENDS

from .matching import ChannelRef, SendMatch
from .model import Message, MessageId


def payload_hash(payload: bytes, size: int) -> str:
    """Content key of a send: equal hashes on one channel mean the same bytes were
    sent again (a retransmission, for the lineage's purposes)."""
    h = hashlib.sha256(size.to_bytes(8, "little", signed=True))
    h.update(payload)
    return h.hexdigest()[:16]


def channel_names(refs: list[ChannelRef]) -> dict[ChannelRef, str]:
    """"tcp<k>" / "udp<k>": k-th channel of (proto, opener, peer) by `order`.

    Both directions of a TCP connection share its name, so when two nodes both
    open connections to each other, the k-th connection opened by each would
    collide; those opened by the node whose name sorts later are written
    "tcp<k>@<opener>" (stable, and it says who connected).

    IPv6 channels are numbered apart, "tcp6.<k>" / "udp6.<k>": the kernel's
    fault triggers number IPv4 channels only (bpf/faults.bpf.c), and an IPv4
    channel's number must be the one a trigger counts."""
    groups: dict[tuple[str, str, str, bool], list[ChannelRef]] = defaultdict(list)
    for ref in set(refs):
        groups[(ref.proto, ref.opener, ref.peer, ref.ipv6)].append(ref)
    names: dict[ChannelRef, str] = {}
    for (proto, opener, peer, ipv6), group in groups.items():
        for k, ref in enumerate(sorted(group, key=lambda r: r.order)):
            name = f"{proto}6.{k}" if ipv6 else f"{proto}{k}"
            if proto == "tcp" and opener > peer:
                name += f"@{opener}"
            names[ref] = name
    return names


def assign_ids(sends: list[SendMatch]) -> list[Message]:
    """Messages, with logical ids, for matched sends (any order; result in send order)."""
    names = channel_names([s.channel for s in sends])
    counters: dict[tuple[str, str, str], int] = defaultdict(int)
    out: list[Message] = []
    for s in sorted(sends, key=lambda m: m.event.seq):
        e = s.event
        key = (s.src, s.dst, names[s.channel])
        mid = MessageId(s.src, s.dst, key[2], counters[key])
        counters[key] += 1
        start, end = s.byte_range if s.byte_range and e.proto == "tcp" else (None, None)
        out.append(Message(mid, e.proto, e.seq, tuple(s.recvs), e.ret, e.payload,
                           _content_key(e.syscall, e.payload, e.ret, mid), bool(s.recvs),
                           start, end, tuple(s.peeks)))
    return out


def _content_key(syscall: str, payload: bytes, size: int, mid: MessageId) -> str:
    """payload_hash, except for a send whose content nobody saw: two such
    sends of one size are not a retransmission of each other, so it is keyed
    by its own (stable) id."""
    if syscall in UNSEEN_SENDS:
        return payload_hash(str(mid).encode(), size)
    return payload_hash(payload, size)
