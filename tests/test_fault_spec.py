"""Fault values, their text form, triggers/actions, and the plugin registry
(ldfi.faults). Every text in docs/fault-models.md round-trips here."""

from __future__ import annotations

import random
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from ldfi.errors import UserError
from ldfi.faults import (
    START,
    Fault,
    MessageAnchor,
    SendAnchor,
    TimeAnchor,
    anchor_trigger,
    arm,
    format_plan,
    parse_fault,
    parse_plan,
    registry,
)
from ldfi.faults.model import ArmContext
from ldfi.faults.spec import format_duration, quote_bytes, unquote_bytes
from ldfi.trace.model import MessageId
from tracer.faults import (
    CutFlow,
    DelayFlow,
    DropMessage,
    Kill,
    Partition,
    ResetFlow,
    SendTrigger,
    Stop,
    TimeTrigger,
)

PLUGIN_SRC = Path(__file__).parent / "plugins" / "ldfi-isolate"
M = MessageId.parse

EXAMPLES = {
    "omission(a->b:udp0#2)": Fault("omission", MessageAnchor(M("a->b:udp0#2"))),
    "cut(client->server:tcp0#2)": Fault("cut", MessageAnchor(M("client->server:tcp0#2"))),
    "cut(client->server:tcp0#2, heal 1s)":
        Fault("cut", MessageAnchor(M("client->server:tcp0#2")), duration=1.0),
    "delay(client->server:tcp0#1, 500ms)":
        Fault("delay", MessageAnchor(M("client->server:tcp0#1")), duration=0.5),
    "reset(client->server:tcp0#2)": Fault("reset", MessageAnchor(M("client->server:tcp0#2"))),
    "crash(server, before send 3)": Fault("crash", SendAnchor("server", 2), node="server"),
    "crash(server, at server->client:tcp0#1)":
        Fault("crash", MessageAnchor(M("server->client:tcp0#1")), node="server"),
    "crash(server, at 1.5s)": Fault("crash", TimeAnchor(1.5), node="server"),
    'crash(server, before send "PREPARE" to b)':
        Fault("crash", SendAnchor("server", 0, "b", b"PREPARE"), node="server"),
    "crash(server)": Fault("crash", START, node="server"),
    "pause(server, before send 2, 1s)":
        Fault("pause", SendAnchor("server", 1), node="server", duration=1.0),
    "restart(server, before send 3, 500ms)":
        Fault("restart", SendAnchor("server", 2), node="server", duration=0.5),
    "partition(a b | c, at 1.5s, heal 2s)":
        Fault("partition", TimeAnchor(1.5), sides=(("a", "b"), ("c",)), duration=2.0),
    "partition(a | b c, at a->c:tcp0#0)":
        Fault("partition", MessageAnchor(M("a->c:tcp0#0")), sides=(("a",), ("b", "c"))),
    "partition(a | b)": Fault("partition", START, sides=(("a",), ("b",))),
    "cut(b->a:tcp0@b#1)": Fault("cut", MessageAnchor(M("b->a:tcp0@b#1"))),
    "omission(n1->198.18.0.9:udp1#0)": Fault("omission", MessageAnchor(M("n1->198.18.0.9:udp1#0"))),
}


@pytest.mark.parametrize("text", list(EXAMPLES))
def test_examples_parse_to_the_expected_fault_and_round_trip(text: str) -> None:
    fault = parse_fault(text)
    assert fault == EXAMPLES[text]
    assert parse_fault(str(fault)) == fault
    assert str(parse_fault(str(fault))) == str(fault)


def test_text_is_canonical_where_the_input_was_loose() -> None:
    assert str(parse_fault("  cut( client->server:tcp0#2 ,heal 1000ms )")) == \
        "cut(client->server:tcp0#2, heal 1s)"
    assert str(parse_fault("partition(c | b a)")) == "partition(c | a b)"
    assert parse_fault("partition(c | b a)") == parse_fault("partition(a b | c)")
    assert str(parse_fault("restart(n1, before send 2)")) == "restart(n1, before send 2, 0s)"
    assert str(parse_fault('crash(s, before send 2 "A\\x00\\"" to b)')) == \
        'crash(s, before send 2 "A\\x00\\"" to b)'


def test_before_send_is_one_based_in_text_and_zero_based_in_values() -> None:
    assert parse_fault("crash(n, before send 1)").anchor == SendAnchor("n", 0)
    assert str(Fault("crash", SendAnchor("n", 0), node="n")) == "crash(n, before send 1)"


def test_random_faults_round_trip() -> None:
    rng = random.Random(7)
    nodes = ["a", "b", "n1", "client", "x_y-2"]
    for _ in range(500):
        src, dst = rng.sample(nodes, 2)
        chan = rng.choice(["tcp0", "tcp3", f"tcp1@{max(src, dst)}", "udp0", "udp2"])
        mid = MessageId(src, dst, chan, rng.randrange(50))
        dur = rng.choice([None, 0.0, 0.001, 0.25, 1.5, 3.0, 0.1 + 0.2, 12345.678])
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 17)))
        faults = [
            Fault("cut", MessageAnchor(mid), duration=dur),
            Fault("crash", SendAnchor(src, rng.randrange(9), rng.choice([None, dst]),
                                      rng.choice([None, payload])), node=src),
            Fault("partition", rng.choice([START, TimeAnchor(dur or 0.5), MessageAnchor(mid)]),
                  sides=((src,), tuple(n for n in nodes if n != src)), duration=dur),
        ]
        if chan.startswith("udp"):
            faults.append(Fault("omission", MessageAnchor(mid)))
        for f in faults:
            assert parse_fault(str(f)) == f, str(f)


def test_durations_and_payloads_print_back_exactly() -> None:
    rng = random.Random(3)
    for x in [0.0, 0.5, 1.0, 0.001, 0.1 + 0.2, 1e-7, 1e6, 2.5e-3] + [rng.random() * 10
                                                                    for _ in range(300)]:
        from ldfi.durations import parse_duration

        assert parse_duration(format_duration(x)) == x
    assert format_duration(0.5) == "500ms"
    assert format_duration(2.0) == "2s"
    every = bytes(range(256))
    assert unquote_bytes(quote_bytes(every)) == every
    assert unquote_bytes('"é"') == "é".encode()


def test_plans_split_on_semicolons_and_newlines_not_inside_quotes() -> None:
    text = 'cut(a->b:tcp0#1); crash(b, before send ";x" to a)\n omission(a->b:udp0#0);'
    faults = parse_plan(text)
    assert [f.kind for f in faults] == ["cut", "crash", "omission"]
    assert faults[1].anchor == SendAnchor("b", 0, "a", b";x")
    assert parse_plan(["cut(a->b:tcp0#1)", "omission(a->b:udp0#0)"]) == [faults[0], faults[2]]
    assert parse_plan(format_plan(faults)) == sorted(faults)


@pytest.mark.parametrize(("text", "says"), [
    ("explode(a)", "known kinds are crash, cut, delay"),
    ("cut client->server:tcp0#2", "write kind(arguments)"),
    ("omission(a->b:tcp0#1)", "use cut("),
    ("cut(a->b:tcp0)", "not a message id"),
    ("cut(a->b:sctp0#1)", "channel 'sctp0'"),
    ("cut(a->b:tcp0#1, heal soon)", "not a duration"),
    ("cut(a->b:tcp0#1, 1s)", "write heal <duration>"),
    ("cut(a->b:tcp0#1,)", "empty argument"),
    ("reset(a->b:udp0#1)", "UDP has no connection"),
    ("delay(a->b:tcp0#1)", "delay takes 2 argument(s)"),
    ("delay(a->b:tcp0#1, 0s)", "window must be > 0"),
    ("crash(server, before send 0)", "sends count from 1"),
    ("crash(server, at client->server:tcp0#1)", "is a send of client, not of server"),
    ("crash(server, before send \"0123456789abcdefX\")", "1 to 16 bytes"),
    ("crash(server, before send \"abc)", "unterminated"),
    ("crash(server, soon)", "unexpected 'soon'"),
    ("pause(server, before send 2)", "needs a duration"),
    ("partition(a b c)", "separated by one '|'"),
    ("partition(a b | b c)", "b on both sides"),
    ("partition(a | b, before send 2)", "anchors at a message or a time"),
    ("crash()", "needs a node"),
])
def test_errors_are_one_line_with_what_where_and_how(text: str, says: str) -> None:
    with pytest.raises(UserError) as err:
        parse_fault(text)
    message = str(err.value)
    assert says in message
    assert "\n" not in message
    assert text.split("(")[0] in message  # where: the fault (or at least its kind)


def test_anchor_triggers_follow_the_kernel_channel_numbering() -> None:
    # no "@": opened by the node whose name sorts first, whichever way it flows
    assert anchor_trigger(MessageAnchor(M("server->client:tcp1#4"))) == SendTrigger(
        node="server", nth=4, peer="client", proto="tcp", channel=1, opener="client")
    assert anchor_trigger(MessageAnchor(M("b->a:tcp0@b#1"))) == SendTrigger(
        node="b", nth=1, peer="a", proto="tcp", channel=0, opener="b")
    assert anchor_trigger(MessageAnchor(M("a->b:udp2#0"))) == SendTrigger(
        node="a", nth=0, peer="b", proto="udp", channel=2, opener=None)
    assert anchor_trigger(SendAnchor("s", 3, "b", b"PRE")) == SendTrigger(
        node="s", nth=3, peer="b", prefix=b"PRE")
    assert anchor_trigger(TimeAnchor(1.5)) == TimeTrigger(1.5)
    assert anchor_trigger(START) == TimeTrigger(0.0)


def test_every_builtin_arms_to_its_injector_action() -> None:
    t = SendTrigger(node="a", nth=2, peer="b", proto="udp", channel=0)
    assert arm(parse_fault("omission(a->b:udp0#2)")) == (t, DropMessage())
    c = SendTrigger(node="a", nth=2, peer="b", proto="tcp", channel=0, opener="a")
    assert arm(parse_fault("cut(a->b:tcp0#2, heal 1s)")) == (c, CutFlow(heal=1.0))
    assert arm(parse_fault("cut(a->b:tcp0#2)")) == (c, CutFlow(heal=None))
    assert arm(parse_fault("delay(a->b:tcp0#2, 500ms)")) == (c, DelayFlow(window=0.5))
    assert arm(parse_fault("reset(a->b:tcp0#2)")) == (c, ResetFlow())
    s = SendTrigger(node="n", nth=2)
    assert arm(parse_fault("crash(n, before send 3)")) == (s, Kill("n"))
    assert arm(parse_fault("restart(n, before send 3, 2s)")) == (s, Kill("n", restart_after=2.0))
    assert arm(parse_fault("pause(n, before send 3, 1s)")) == (s, Stop("n", 1.0))
    assert arm(parse_fault("partition(a | b c, at 1s, heal 2s)")) == (
        TimeTrigger(1.0), Partition(("a",), ("b", "c"), heal=2.0))


def test_faults_are_hashable_and_totally_ordered_across_anchor_kinds() -> None:
    faults = [parse_fault(t) for t in EXAMPLES] + [Fault("cut", MessageAnchor(M("a->b:tcp0#1")),
                                                         duration=None)]
    ordered = sorted(faults)
    assert ordered == sorted(reversed(faults))
    assert len(set(faults)) == len(EXAMPLES) + 1
    assert hash(parse_fault("partition(c | a b)")) == hash(parse_fault("partition(b a | c)"))
    assert parse_fault("crash(s)").nodes == {"s"}
    assert parse_fault("cut(a->b:tcp0#1)").nodes == {"a", "b"}
    assert "cut(a->b:tcp0#1)" in repr(parse_fault("cut(a->b:tcp0#1)"))


def test_a_fault_pickled_in_another_process_still_hashes_right() -> None:
    import pickle
    import subprocess

    fault = parse_fault("partition(a | b c, at a->c:tcp0#0, heal 1s)")
    code = ("import pickle, sys; from ldfi.faults import parse_fault; "
            "sys.stdout.buffer.write(pickle.dumps(parse_fault(sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", code, str(fault)], capture_output=True,
                         check=True, env={"PYTHONHASHSEED": "123", "PATH": ""},
                         cwd=Path(__file__).parent.parent).stdout
    back = pickle.loads(out)
    assert back == fault and hash(back) == hash(fault) and back in {fault}


# ------------------------------------------------------------------ registry


def test_builtins_register_through_the_entry_point_group() -> None:
    found = {ep.name: ep.value for ep in entry_points(group=registry.GROUP)}
    assert found == registry.BUILTIN  # from bop-bpf's installed dist-info, not the fallback
    assert registry.kinds() == sorted(registry.BUILTIN)
    for kind in registry.kinds():
        model = registry.get(kind)
        assert model.kind == kind and model.summary and parse_fault(model.example).kind == kind


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="unknown fault kind 'nope': known kinds are crash, cut"):
        registry.get("nope")


def write_dist(site: Path, name: str, entry_points_txt: str) -> None:
    """What `pip install` leaves on sys.path for a distribution: its dist-info."""
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[ldfi.fault_models]\n{entry_points_txt}\n")


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A site directory on sys.path that plugins can be "installed" into."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(PLUGIN_SRC))
    registry.reload()
    yield tmp_path
    registry.reload()
    sys.modules.pop("ldfi_isolate", None)


def test_a_third_party_plugin_is_found_parsed_printed_and_armed(plugin_site: Path) -> None:
    write_dist(plugin_site, "ldfi-isolate", "isolate = ldfi_isolate:Isolate")
    assert "isolate" in registry.kinds()
    fault = parse_fault("isolate(n1, before send 3, heal 1s)")
    assert fault == Fault("isolate", SendAnchor("n1", 2), node="n1", duration=1.0)
    assert str(fault) == "isolate(n1, before send 3, heal 1s)"
    assert arm(fault, ArmContext(nodes=("n1", "n2", "n3"))) == (
        SendTrigger(node="n1", nth=2), Partition(("n1",), ("n2", "n3"), heal=1.0))
    with pytest.raises(UserError, match=r"bad fault 'isolate\(n1, at 1s\)'.*e\.g\. isolate\("):
        parse_fault("isolate(n1, at 1s)")


def test_a_broken_plugin_is_one_line_naming_its_entry_point(plugin_site: Path) -> None:
    write_dist(plugin_site, "ldfi-broken", "broken = no_such_module_here:Model\n"
                                           "liar = ldfi_isolate:Isolate")
    with pytest.raises(UserError) as err:
        parse_fault("broken(x)")
    assert "'broken = no_such_module_here:Model' (from ldfi-broken) failed to load" in str(err.value)
    assert "ModuleNotFoundError" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="says its kind is 'isolate'"):
        registry.get("liar")
    assert parse_fault("cut(a->b:tcp0#1)").kind == "cut"  # the others still work


def test_two_plugins_claiming_one_kind_conflict(plugin_site: Path) -> None:
    write_dist(plugin_site, "ldfi-evil", "cut = ldfi_isolate:Isolate")
    with pytest.raises(UserError, match="two fault-model plugins both define kind 'cut'"):
        registry.kinds()
