"""Faults as values, and their hand-writable text form.

A `Fault` says *what* (its kind, e.g. "cut") and *when* (its anchor): at a
message's send, before a node's n-th send, some time after the workload
started, or from the start. It names nodes, channels and ordinals only, so a
fault written from one run's trace applies to the next run (see
docs/fault-models.md for the syntax and docs/trace.md for message ids).

Parsing a kind's arguments and printing them back is the kind's own job
(`FaultModel.parse` / `FaultModel.format`); this module holds the shared
grammar pieces and turns anchors into the injector's triggers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ldfi.durations import DURATION_FORMS, parse_duration
from ldfi.errors import UserError
from ldfi.trace.model import MessageId
from tracer.faults import SendTrigger, TimeTrigger

# Node names as the trace writes them: scenario names, "client", or an address
# the topology did not know (dots).
NODE = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_NODE_RE = re.compile(NODE)
_CHANNEL_RE = re.compile(rf"(tcp|udp)(\d+)(?:@({NODE}))?")
_PREFIX_MAX = 16  # bytes a send trigger can compare (tracer.faults.SendTrigger)

# ------------------------------------------------------------------ anchors


@dataclass(frozen=True, slots=True)
class MessageAnchor:
    """At that message's send: the trigger fires as the send begins, before
    any of its bytes leave."""

    id: MessageId

    def sort_key(self) -> tuple[Any, ...]:
        return (0, *self.id)


@dataclass(frozen=True, slots=True)
class SendAnchor:
    """Before `node`'s `nth` (0-based) successful send, counting only sends to
    `to` (if given) whose payload starts with `payload` (if given)."""

    node: str
    nth: int = 0
    to: str | None = None
    payload: bytes | None = None

    def sort_key(self) -> tuple[Any, ...]:
        return (1, self.node, self.nth, self.to or "", self.payload or b"")


@dataclass(frozen=True, slots=True)
class TimeAnchor:
    """`seconds` after the workload starts."""

    seconds: float

    def sort_key(self) -> tuple[Any, ...]:
        return (2, self.seconds)


@dataclass(frozen=True, slots=True)
class StartAnchor:
    """From the start (of the workload)."""

    def sort_key(self) -> tuple[Any, ...]:
        return (3,)


Anchor = MessageAnchor | SendAnchor | TimeAnchor | StartAnchor
START = StartAnchor()

# -------------------------------------------------------------------- fault


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: a kind, an anchor, and what the kind needs.

    node:     the node a node-level fault acts on (crash, pause, restart)
    sides:    partition: the two node sets (each sorted, the smaller side first)
    duration: seconds: cut/partition heal time, delay window, pause length,
              restart delay; None = not given (cut/partition: never heal)
    params:   extra (key, value) pairs for third-party kinds, sorted by key

    Hashable and totally ordered (by kind, then anchor, then the rest), so sets
    of faults are deterministic to print and to enumerate.
    """

    kind: str
    anchor: Anchor = START
    node: str | None = None
    sides: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    duration: float | None = None
    params: tuple[tuple[str, str], ...] = ()
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        # Normalize so that the same partition written two ways is one value.
        if self.sides is not None:
            a, b = (tuple(sorted(set(side))) for side in self.sides)
            object.__setattr__(self, "sides", (a, b) if (len(a), a) <= (len(b), b) else (b, a))
        if self.params:
            object.__setattr__(self, "params", tuple(sorted(self.params)))
        # cached: the solver keys dicts and sets by faults, 10^5 of them, often
        object.__setattr__(self, "_hash", hash((self.kind, self.anchor, self.node, self.sides,
                                               self.duration, self.params)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Fault], tuple[Any, ...]]:
        # rebuilt, not restored: the cached hash of strings differs between
        # processes (pickle, multiprocessing)
        return (Fault, (self.kind, self.anchor, self.node, self.sides, self.duration,
                        self.params))

    def sort_key(self) -> tuple[Any, ...]:
        return (self.kind, self.anchor.sort_key(), self.node or "", self.sides or (),
                -1.0 if self.duration is None else self.duration, self.params)

    def __lt__(self, other: Fault) -> bool:
        return self.sort_key() < other.sort_key()

    def __le__(self, other: Fault) -> bool:
        return self.sort_key() <= other.sort_key()

    def __gt__(self, other: Fault) -> bool:
        return self.sort_key() > other.sort_key()

    def __ge__(self, other: Fault) -> bool:
        return self.sort_key() >= other.sort_key()

    @property
    def nodes(self) -> frozenset[str]:
        """Every node this fault names (its anchor's included)."""
        names: set[str] = set()
        if self.node:
            names.add(self.node)
        if self.sides:
            names.update(self.sides[0], self.sides[1])
        anchor = self.anchor
        if isinstance(anchor, MessageAnchor):
            names.update((anchor.id.src, anchor.id.dst))
        elif isinstance(anchor, SendAnchor):
            names.add(anchor.node)
            if anchor.to:
                names.add(anchor.to)
        return frozenset(names)

    @property
    def message(self) -> MessageId | None:
        """The message it is anchored at, if any."""
        return self.anchor.id if isinstance(self.anchor, MessageAnchor) else None

    def __str__(self) -> str:
        from .registry import get  # the kind formats itself; imported late (cycle)

        try:
            return get(self.kind).format(self)
        except UserError:  # kind not installed: still printable, not parseable
            return f"{self.kind}(<{format_anchor(self.anchor) or 'start'}>)"

    def __repr__(self) -> str:
        return f"Fault<{self}>"


# ------------------------------------------------------------- parsing text


def parse_fault(text: str) -> Fault:
    """One fault from its text form, e.g. "cut(client->server:tcp0#2, heal 1s)";
    UserError (one line: what, where, how to fix) when it is not one."""
    from .registry import get, kinds

    match = re.fullmatch(r"\s*([A-Za-z][A-Za-z0-9_-]*)\s*\((.*)\)\s*", text, re.DOTALL)
    if match is None:
        raise UserError(f"bad fault {text.strip()!r}: write kind(arguments), e.g. "
                        f"cut(client->server:tcp0#2) or crash(server, before send 3)")
    kind, inner = match.groups()
    if kind not in kinds():
        raise UserError(f"unknown fault kind {kind!r} in {text.strip()!r}: known kinds are "
                        f"{', '.join(kinds())}")
    model = get(kind)
    try:
        fault = model.parse(split_args(inner))
    except ValueError as err:
        raise UserError(f"bad fault {text.strip()!r}: {err}; e.g. {model.example}") from None
    if fault.kind != kind:  # a plugin bug, but say so where it shows
        raise UserError(f"fault kind {kind!r} parsed {text.strip()!r} as kind {fault.kind!r}")
    return fault


def parse_plan(plan: str | Iterable[str]) -> list[Fault]:
    """Several faults: one text with faults separated by ';' or newlines, or a
    list of texts (each of which may itself hold several)."""
    texts = [plan] if isinstance(plan, str) else list(plan)
    faults: list[Fault] = []
    for text in texts:
        faults += [parse_fault(piece) for piece in _split_top(text, ";\n") if piece.strip()]
    return faults


def format_plan(faults: Iterable[Fault]) -> str:
    """The text form of several faults, sorted, ';'-separated (parse_plan's inverse)."""
    return "; ".join(str(f) for f in sorted(faults))


def split_args(inner: str) -> list[str]:
    """A kind's arguments: split at top-level commas (not inside "..."), stripped."""
    args = [a.strip() for a in _split_top(inner, ",")]
    if args == [""]:
        return []
    if any(not a for a in args):
        raise ValueError("empty argument (two commas in a row, or a trailing comma)")
    return args


def _split_top(text: str, separators: str) -> list[str]:
    """Split at separators outside double quotes and parentheses."""
    out, current, depth, quoted, escaped = [], [], 0, False, False
    for char in text:
        if quoted:
            quoted = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char in separators and depth == 0:
            out.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise ValueError('unterminated "..." string')
    out.append("".join(current))
    return out


# ---------------------------------------------- grammar pieces kinds share


def parse_node(text: str, what: str = "node") -> str:
    if not _NODE_RE.fullmatch(text):
        raise ValueError(f"{what} {text!r} is not a node name")
    return text


def parse_message_id(text: str) -> MessageId:
    """"src->dst:channel#n" with a channel the trace could have named."""
    try:
        mid = MessageId.parse(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a message id (write src->dst:tcp0#2)") from None
    parse_node(mid.src, "sender")
    parse_node(mid.dst, "receiver")
    if not _CHANNEL_RE.fullmatch(mid.channel):
        raise ValueError(f"channel {mid.channel!r} in {text!r} is not tcp<k>, tcp<k>@<node> "
                         "or udp<k>")
    if mid.channel.startswith("udp") and "@" in mid.channel:
        raise ValueError(f"channel {mid.channel!r}: only TCP channels carry @<opener>")
    if mid.ordinal < 0:
        raise ValueError(f"ordinal in {text!r} must be >= 0")
    return mid


def channel_parts(channel: str) -> tuple[str, int, str | None]:
    """("tcp"|"udp", k, opener written after "@" or None) of a channel name."""
    match = _CHANNEL_RE.fullmatch(channel)
    if match is None:
        raise ValueError(f"channel {channel!r} is not tcp<k>, tcp<k>@<node> or udp<k>")
    return match[1], int(match[2]), match[3]


def parse_duration_arg(text: str, what: str) -> float:
    try:
        return parse_duration(text)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {text!r} is not a duration (write {DURATION_FORMS})") from None


def format_duration(seconds: float) -> str:
    """A duration as text that parse_duration() reads back to exactly `seconds`."""
    candidates = [f"{_plain(seconds * 1000)}ms"] if 0 < seconds < 1 else []
    candidates.append(f"{_plain(seconds)}s")
    for text in candidates:
        if parse_duration(text) == seconds:
            return text
    return f"{format(Decimal(seconds), 'f')}s"  # exact binary value: always reads back


def _plain(x: float) -> str:
    """Shortest decimal of x without an exponent ("1.5", "2", "0.00001")."""
    text = format(Decimal(repr(x)), "f")
    return text[:-2] if text.endswith(".0") else text


def quote_bytes(data: bytes) -> str:
    """A payload prefix as a "..." literal: printable ASCII as is, \\ \" \\n \\r \\t
    escaped, any other byte as \\xNN."""
    named = {0x5C: "\\\\", 0x22: '\\"', 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
    out = [named.get(b) or (chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}") for b in data]
    return '"' + "".join(out) + '"'


def unquote_bytes(text: str) -> bytes:
    """Inverse of quote_bytes; other characters stand for their UTF-8 bytes."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ValueError(f"{text} is not a quoted payload (write \"PREPARE\")")
    out, body, i = bytearray(), text[1:-1], 0
    simple = {"\\": 0x5C, '"': 0x22, "n": 0x0A, "r": 0x0D, "t": 0x09}
    while i < len(body):
        char = body[i]
        if char != "\\":
            out += char.encode()
            i += 1
            continue
        nxt = body[i + 1 : i + 2]
        if nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", body[i + 2 : i + 4]):
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        else:
            raise ValueError(f"bad escape in {text} (use \\\\ \\\" \\n \\r \\t or \\xNN)")
    return bytes(out)


_BEFORE_SEND = re.compile(
    rf'before\s+send(?:\s+(\d+))?(?:\s+("(?:[^"\\]|\\.)*"))?(?:\s+to\s+({NODE}))?\s*')


def parse_anchor(text: str, node: str | None) -> Anchor:
    """An anchor argument: "before send N ["P"] [to X]" (needs `node`: whose
    sends), "at <message id>" or "at <duration>"."""
    text = text.strip()
    if text.startswith("before"):
        match = _BEFORE_SEND.fullmatch(text)
        if node is None:
            raise ValueError(f"{text!r}: this kind anchors at a message or a time "
                             "(at a->b:tcp0#1, at 1.5s)")
        if match is None:
            raise ValueError(f'{text!r}: write before send 3, before send "PREPARE" '
                             "or before send 2 to b")
        nth, payload, to = match.groups()
        if nth is not None and int(nth) < 1:
            raise ValueError(f"{text!r}: sends count from 1 (before send 1 = before the first)")
        prefix = unquote_bytes(payload) if payload is not None else None
        if prefix is not None and not 0 < len(prefix) <= _PREFIX_MAX:
            raise ValueError(f"{text!r}: a payload prefix has 1 to {_PREFIX_MAX} bytes")
        return SendAnchor(node, int(nth) - 1 if nth else 0, to, prefix)
    if text.startswith("at ") or text.startswith("at\t"):
        rest = text[2:].strip()
        if "->" in rest:
            return MessageAnchor(parse_message_id(rest))
        return TimeAnchor(parse_duration_arg(rest, "time"))
    raise ValueError(f"{text!r} is not an anchor (write before send 3, at a->b:tcp0#1 "
                     "or at 1.5s)")


def is_anchor(text: str) -> bool:
    return text.startswith(("before ", "at ", "at\t"))


def format_anchor(anchor: Anchor) -> str:
    """Inverse of parse_anchor ("" for StartAnchor: an omitted anchor)."""
    if isinstance(anchor, MessageAnchor):
        return f"at {anchor.id}"
    if isinstance(anchor, TimeAnchor):
        return f"at {format_duration(anchor.seconds)}"
    if isinstance(anchor, SendAnchor):
        filtered = anchor.payload is not None or anchor.to is not None
        parts = ["before send"]
        if anchor.nth or not filtered:  # "before send "P"" means the first such send
            parts.append(str(anchor.nth + 1))
        if anchor.payload is not None:
            parts.append(quote_bytes(anchor.payload))
        if anchor.to is not None:
            parts.append(f"to {anchor.to}")
        return " ".join(parts)
    return ""


# --------------------------------------------------------- to the injector


def anchor_trigger(anchor: Anchor) -> SendTrigger | TimeTrigger:
    """The injector's trigger for an anchor. A message a->b:tcpK#n is a's n-th
    send to b on the K-th TCP connection that `opener` opened towards the other
    node: "tcpK@x" says the opener is x; a name without "@" was opened by the
    node whose name sorts first (ldfi.trace.ids.channel_names). a->b:udpK#n is
    a's n-th send to b from its K-th UDP socket towards b."""
    if isinstance(anchor, MessageAnchor):
        mid = anchor.id
        proto, k, opener = channel_parts(mid.channel)
        if proto == "tcp" and opener is None:
            opener = min(mid.src, mid.dst)
        return SendTrigger(node=mid.src, nth=mid.ordinal, peer=mid.dst, proto=proto,
                           channel=k, opener=opener if proto == "tcp" else None)
    if isinstance(anchor, SendAnchor):
        return SendTrigger(node=anchor.node, nth=anchor.nth, peer=anchor.to,
                           prefix=anchor.payload or b"")
    if isinstance(anchor, TimeAnchor):
        return TimeTrigger(after=anchor.seconds)
    return TimeTrigger(after=0.0)
