"""The fault injector end to end: real processes in the real sandbox, each
fault kind armed through tracer.injector and checked by its exact effect on
what the receiving process got, on the trace, and on the fault's own report.

The nodes are tests/programs/fnode.py: a sender sends numbered messages
("d0".. over UDP, "m0\\n".. over TCP) to a receiver, and both write what
happened to files in the run's work directory. One TraceProgram (which holds
the injector's kernel side too) serves the whole module.
"""

from __future__ import annotations

import ctypes as ct
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ldfi.scenario import load_scenario
from ldfi.traced_run import TracedRun, traced_run
from tracer.events import FAULT
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
from tracer.injector import MAX_FAULTS, Injector, PlanError, PlannedFault

pytestmark = pytest.mark.usefixtures("ebpf")

FNODE = f"{sys.executable} -S {Path(__file__).resolve().parent / 'programs' / 'fnode.py'}"
TNODE = f"{sys.executable} -S {Path(__file__).resolve().parent / 'programs' / 'tnode.py'}"


@pytest.fixture(scope="module")
def program(ebpf):
    from tracer.program import TraceProgram

    with TraceProgram(payload_bytes=64) as loaded:
        yield loaded


def scenario(directory: Path, proto: str, count: int, gap: float, wait: float,
             late: float = 0.0) -> Path:
    """receiver + sender; `late`: the receiver starts that much later, so the
    sender's first connects are refused (and retried)."""
    recv = f"{FNODE} {proto}-recv 9000 {{workdir}}/received"
    if late:
        recv = f"sleep {late}; exec {recv}"
    send = f"{FNODE} {proto}-send {{receiver}} 9000 {count} {gap} {{workdir}}/sent"
    text = f"""
name = "faults-{proto}"
[run]
timeout = "30s"
[[node]]
name = "receiver"
cmd = {json.dumps(recv)}
ready = {{ {proto} = 9000 }}
[[node]]
name = "sender"
cmd = {json.dumps(send)}
[workload]
cmd = "sleep {wait}"
[check]
cmd = "true"
"""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "scenario.toml"
    path.write_text(text)
    return path


def run(program, tmp_path: Path, proto: str, plan: list[PlannedFault], *, count: int = 6,
        gap: float = 0.05, wait: float = 1.0,
        late: float = 0.0) -> tuple[TracedRun, list[str], list[str]]:
    """One run with the plan armed: (run, receiver's lines, sender's lines)."""
    traced = traced_run(load_scenario(scenario(tmp_path, proto, count, gap, wait, late)),
                        tmp_path / "store", program, plan)
    assert traced.result.status == "ok", traced.result.error
    work = Path(traced.result.run_dir) / "work"

    def lines(name: str) -> list[str]:
        path = work / name
        return path.read_text().splitlines() if path.exists() else []

    return traced, lines("received"), lines("sent")


def client_and_server(directory: Path, server: str, ready: str, workload: str) -> Path:
    """A scenario of one node, "server", and a workload (the "client")."""
    path = directory / "scenario.toml"
    path.write_text(f"""
name = "client-server"
[run]
timeout = "30s"
[[node]]
name = "server"
cmd = {json.dumps(server)}
ready = {{ {ready} }}
[workload]
cmd = {json.dumps(workload)}
[check]
cmd = "true"
""")
    return path


def sends(traced: TracedRun, node: str) -> list[str]:
    return [str(m.id) for m in traced.trace.messages if m.src == node]


def delivered(traced: TracedRun, node: str) -> list[str]:
    return [str(m.id) for m in traced.trace.messages if m.src == node and m.delivered]


def sender_sends(traced: TracedRun) -> list:
    found = [e for e in traced.trace.events if e.node == "sender" and e.is_send]
    assert found
    return found


def only_report(traced: TracedRun):
    assert len(traced.trace.faults) == 1
    return traced.trace.faults[0]


# -- message faults ------------------------------------------------------------

def test_omission_drops_exactly_datagram_k(program, tmp_path):
    trigger = SendTrigger("sender", nth=2, peer="receiver", proto="udp", channel=0)
    traced, received, sent = run(program, tmp_path, "udp",
                                 [PlannedFault("omission", trigger, DropMessage())])
    assert received == ["d0", "d1", "d3", "d4", "d5"]
    assert sent == [f"sent d{i}" for i in range(6)] + ["done"]  # UDP loss is silent
    report = only_report(traced)
    assert report.fired and report.packets_dropped == 1
    assert report.message == "sender->receiver:udp0#2"
    # a send trigger runs in the sends' entry programs: attached for this run
    assert program.send_syscalls_attached
    assert all(not e.exit_only and e.ts_enter < e.ts for e in sender_sends(traced))
    assert delivered(traced, "sender") == [f"sender->receiver:udp0#{i}" for i in (0, 1, 3, 4, 5)]
    # the fault is in the trace, in the sender's program order
    fault_events = [e for e in traced.trace.events if e.kind == FAULT]
    assert [(e.node, e.fault_slot) for e in fault_events] == [("sender", 0)]


def test_a_dropped_datagram_is_the_one_undelivered_even_if_others_look_the_same(tmp_path):
    """With no payload recorded, all six datagrams look alike (same length,
    same empty prefix) to matching: the fault's record must tell which one
    was dropped, or FIFO would report #2 delivered and #5 lost."""
    from tracer.program import TraceProgram

    trigger = SendTrigger("sender", nth=2, peer="receiver", proto="udp", channel=0)
    with TraceProgram(payload_bytes=0) as blind:
        traced, received, _ = run(blind, tmp_path, "udp",
                                  [PlannedFault("omission", trigger, DropMessage())])
    assert received == ["d0", "d1", "d3", "d4", "d5"]
    assert delivered(traced, "sender") == [f"sender->receiver:udp0#{i}" for i in (0, 1, 3, 4, 5)]


def test_sends_no_trigger_can_act_on_still_count_towards_nth(program, tmp_path):
    """A sendfile is message #0 of its channel in the trace, but its bytes
    have left before any program sees it: it never fires a trigger, yet it
    counts, so that nth=2 is the trace's #2 (the second write), not the third."""
    path = client_and_server(tmp_path, f"{TNODE} serve 7000", "tcp = 7000",
                             f"{TNODE} client-sendfile-writes {{server}} 7000 {{workdir}}")
    for nth, fires in ((2, True), (0, False)):
        trigger = SendTrigger("client", nth=nth, peer="server", proto="tcp", channel=0,
                              opener="client")
        traced = traced_run(load_scenario(path), tmp_path / f"store{nth}", program,
                            [PlannedFault("cut", trigger, CutFlow())])
        assert traced.result.status == "ok", traced.result.error
        report = only_report(traced)
        assert report.fired is fires
        if fires:
            assert report.message == "client->server:tcp0#2"
            assert traced.trace.event(traced.trace.message(
                "client->server:tcp0#2").send_seq).payload == b"more2\n"
        assert traced.trace.event(traced.trace.message(
            "client->server:tcp0#0").send_seq).syscall == "sendfile"


def test_a_sendmmsg_counts_each_of_its_messages_towards_nth(program, tmp_path):
    """A sendmmsg of three datagrams is messages #0-#2 in the trace, so the
    sendto after it is #3: a trigger at nth=3 must drop that one (the
    kernel counted the call as one send and never got there)."""
    cnode = tmp_path / "cnode"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(cnode),
                    str(Path(__file__).resolve().parent / "programs" / "cnode.c")], check=True)
    path = client_and_server(tmp_path, f"{TNODE} serve-udp-sink 9000 4", "udp = 9000",
                             f"{cnode} mmsg {{server}} 9000 {{workdir}} 3")
    trigger = SendTrigger("client", nth=3, peer="server", proto="udp", channel=0)
    traced = traced_run(load_scenario(path), tmp_path / "store", program,
                        [PlannedFault("omission", trigger, DropMessage())])
    assert traced.result.status == "ok", traced.result.error
    report = only_report(traced)
    assert report.fired and report.message == "client->server:udp0#3"
    t = traced.trace
    assert t.event(t.message("client->server:udp0#3").send_seq).payload == b"after"
    assert [m.delivered for m in t.messages] == [True, True, True, False]


def test_cut_blocks_tcp_from_message_k_on(program, tmp_path):
    trigger = SendTrigger("sender", nth=3, peer="receiver", proto="tcp", channel=0,
                          opener="sender")
    traced, received, sent = run(program, tmp_path, "tcp",
                                 [PlannedFault("cut", trigger, CutFlow())])
    assert received == ["m0", "m1", "m2"]  # no EOF either: the FIN is cut too
    assert sent[-1] == "done"  # send() kept succeeding: a cut is silent to the sender
    report = only_report(traced)
    assert report.fired and report.packets_dropped >= 3  # m3..m5 and retransmissions
    assert report.message == "sender->receiver:tcp0@sender#3"
    assert delivered(traced, "sender") == [f"sender->receiver:tcp0@sender#{i}" for i in range(3)]
    assert len(sends(traced, "sender")) == 6


def test_refused_connects_take_no_channel_number(program, tmp_path):
    """The receiver starts late: the sender's first connects are refused. They
    carry no message, so the trace does not number them, and neither may the
    kernel: the cut still fires on tcp0, the connection that carried data."""
    trigger = SendTrigger("sender", nth=3, peer="receiver", proto="tcp", channel=0,
                          opener="sender")
    traced, received, _ = run(program, tmp_path, "tcp", [PlannedFault("cut", trigger, CutFlow())],
                              late=0.3)
    refused = [e for e in traced.trace.events if e.syscall == "connect" and e.node == "sender"
               and e.ret == -111]
    assert refused  # the situation this test is about did arise
    assert received == ["m0", "m1", "m2"]
    assert only_report(traced).message == "sender->receiver:tcp0@sender#3"


def test_payload_prefix_anchor(program, tmp_path):
    trigger = SendTrigger("sender", prefix=b"m4")
    traced, received, _ = run(program, tmp_path, "tcp",
                              [PlannedFault("cut at m4", trigger, CutFlow())])
    assert received == ["m0", "m1", "m2", "m3"]
    assert only_report(traced).message == "sender->receiver:tcp0@sender#4"


def test_delay_delivers_late_by_retransmission(program, tmp_path):
    trigger = SendTrigger("sender", nth=1, proto="tcp")
    traced, received, _ = run(program, tmp_path, "tcp",
                              [PlannedFault("delay", trigger, DelayFlow(0.4))],
                              count=4, gap=0.05, wait=2.0)
    assert received == ["m0", "m1", "m2", "m3"]  # nothing lost
    report = only_report(traced)
    assert report.fired and report.packets_dropped >= 1 and report.healed
    m0, m1 = (traced.trace.message(f"sender->receiver:tcp0@sender#{i}") for i in (0, 1))
    recv_ts = {e.seq: e.ts for e in traced.trace.events}
    gap = recv_ts[m1.recv_seqs[0]] - recv_ts[m0.recv_seqs[0]]
    assert gap >= 0.35e9  # held back for (about) the window


def test_reset_gives_econnreset_at_message_k(program, tmp_path):
    trigger = SendTrigger("sender", nth=2, proto="tcp")
    traced, received, sent = run(program, tmp_path, "tcp",
                                 [PlannedFault("reset", trigger, ResetFlow())])
    assert received == ["m0", "m1", "RESET"]
    errors = [line for line in sent if line.startswith("error")]
    assert len(errors) == 1 and errors[0].split()[1] in ("ConnectionResetError",
                                                          "BrokenPipeError")
    report = only_report(traced)
    assert report.fired and report.packets_reset >= 1
    assert report.message == "sender->receiver:tcp0@sender#2"


def test_partition_that_heals_lets_tcp_recover(program, tmp_path):
    action = Partition(("sender",), ("receiver",), heal=0.6)
    traced, received, _ = run(program, tmp_path, "tcp",
                              [PlannedFault("partition", TimeTrigger(0.1), action)],
                              count=8, gap=0.05, wait=2.5)
    assert received == [f"m{i}" for i in range(8)]  # late, but all of it
    report = only_report(traced)
    assert report.fired and report.healed and report.packets_dropped >= 1
    # no send trigger: sends are recorded at exit alone, as in a run without faults
    assert not program.send_syscalls_attached
    assert all(e.exit_only and e.ts_enter == e.ts for e in sender_sends(traced))


def test_partition_leaves_host_loopback_alone(program, tmp_path):
    """While the run's nodes are partitioned, this (host) process still talks
    to itself over 127.0.0.1: faults touch only the run's namespaces."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    echoed: list[bytes] = []

    def loopback_during_run() -> None:
        import time

        time.sleep(0.6)  # the partition below is active from 0.0 s on
        c = socket.create_connection(("127.0.0.1", port), timeout=2)
        conn, _ = server.accept()
        c.sendall(b"ping")
        echoed.append(conn.recv(4))
        c.close()
        conn.close()

    thread = threading.Thread(target=loopback_during_run)
    thread.start()
    action = Partition(("sender",), ("receiver",))
    traced, received, _ = run(program, tmp_path, "udp",
                              [PlannedFault("partition", TimeTrigger(0.0), action)],
                              gap=0.2, wait=1.2)
    thread.join()
    server.close()
    assert echoed == [b"ping"]
    assert received == []  # nothing crossed the partition
    assert only_report(traced).packets_dropped >= 3


# -- process faults --------------------------------------------------------------

def test_crash_exactly_before_the_third_send(program, tmp_path):
    traced, received, sent = run(program, tmp_path, "tcp",
                                 [PlannedFault("crash", SendTrigger("sender", nth=2),
                                               Kill("sender"))])
    assert sends(traced, "sender") == ["sender->receiver:tcp0@sender#0",
                                       "sender->receiver:tcp0@sender#1"]
    assert received == ["m0", "m1"]  # the third send never left, nor did a FIN
    assert sent == ["sent m0", "sent m1"]
    report = only_report(traced)
    assert report.fired and report.message == ""
    assert any(s.startswith("SIGKILL from BPF") for s in report.signals)
    node = next(n for n in traced.result.nodes if n.name == "sender")
    assert node.exit_code is not None  # dead before the run ended


def test_pause_stops_then_continues(program, tmp_path):
    traced, received, _ = run(program, tmp_path, "udp",
                              [PlannedFault("pause", SendTrigger("sender", nth=2),
                                            Stop("sender", 0.5))],
                              gap=0.02, wait=1.5)
    assert received == [f"d{i}" for i in range(6)]
    report = only_report(traced)
    assert report.fired and report.healed
    assert any("SIGCONT" in s for s in report.signals)
    ts = {str(m.id): traced.trace.event(m.send_seq).ts for m in traced.trace.messages}
    pause = ts["sender->receiver:udp0#3"] - ts["sender->receiver:udp0#2"]
    assert pause >= 0.45e9  # stopped right after the anchored send, for the duration


def test_restart_runs_the_node_again(program, tmp_path):
    traced, received, _ = run(program, tmp_path, "udp",
                              [PlannedFault("restart", SendTrigger("sender", nth=2),
                                            Kill("sender", restart_after=0.3))],
                              count=4, gap=0.02, wait=1.5)
    assert received == ["d0", "d1", "d0", "d1", "d2", "d3"]
    report = only_report(traced)
    assert report.fired and report.restarted
    pids = {traced.trace.event(m.send_seq).pid for m in traced.trace.messages
            if m.src == "sender"}
    assert len(pids) == 2  # the crashed process and its successor


# -- proof and cleanup -------------------------------------------------------------

def test_a_fault_whose_trigger_never_happens_says_so(program, tmp_path):
    traced, received, _ = run(program, tmp_path, "udp",
                              [PlannedFault("never", SendTrigger("sender", nth=99),
                                            DropMessage())])
    assert received == [f"d{i}" for i in range(6)]
    report = only_report(traced)
    assert not report.fired
    assert "did not fire" in report.describe()


def test_bad_plans_are_refused_before_the_run(program, tmp_path):
    with pytest.raises(PlanError, match="no node named 'nobody'"):
        run(program, tmp_path, "udp", [PlannedFault("x", SendTrigger("nobody"), DropMessage())])
    with pytest.raises(PlanError, match="at most"):
        Injector(program, [PlannedFault("x", SendTrigger("sender"), DropMessage())]
                 * (MAX_FAULTS + 1))


def test_nothing_is_left_armed_after_a_run(program, tmp_path):
    run(program, tmp_path, "tcp", [PlannedFault("cut", SendTrigger("sender", nth=1),
                                                 CutFlow())])
    bpf = program.bpf
    assert bpf[b"fault_armed"][ct.c_int(0)].value == 0
    for name in (b"flow_rules", b"pair_rules", b"drop_tids", b"dead_cgroups", b"sk_chans",
                 b"tuple_chans", b"chan_counts"):
        assert len(list(bpf[name].keys())) == 0, name
    assert all(bpf[b"triggers"][ct.c_int(i)].cgroup == 0 for i in range(MAX_FAULTS))


def test_sigterm_while_a_node_is_paused_and_partitioned_leaves_nothing(tmp_path):
    """Every exit path: the engine is stopped mid-run with a node SIGSTOPped and a
    partition active; the node must not stay stopped and nothing may remain."""
    import signal
    import subprocess
    import time

    from conftest import REPO, ldfi_resources

    path = scenario(tmp_path, "udp", count=200, gap=0.02, wait=30)
    before = ldfi_resources()
    plan = "pause(sender, at 0.2s, 60s); partition(sender | receiver)"
    engine = subprocess.Popen(
        [sys.executable, "-m", "ldfi.cli", "run", str(path), "--inject", plan,
         "--store", str(tmp_path / "store")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not list((tmp_path / "store").glob("runs/*/logs/workload.out")):
        assert engine.poll() is None and time.monotonic() < deadline, engine.communicate()
        time.sleep(0.05)
    time.sleep(0.6)  # the pause has fired
    mine = _mine(tmp_path)
    assert mine
    # our slot, from one of our processes' cgroup: /.../ldfi-<slot>/<node>
    slot = Path(Path(f"/proc/{mine[0]}/cgroup").read_text().strip().split(":")[-1]).parent.name
    ours = {r for r in ldfi_resources() - before
            if r.startswith(("netns:", "hosts:", "cgroup:")) and f"{slot}-" in r + "-"}
    assert ours
    engine.send_signal(signal.SIGTERM)
    _, err = engine.communicate(timeout=30)
    assert engine.returncode == 128 + signal.SIGTERM, err
    # (other runs may be going on, on a developer's machine: look only at ours)
    assert not _mine(tmp_path), "a node process of this run survived the engine"
    assert ldfi_resources() & ours == set()


def _mine(tmp_path: Path) -> list[int]:
    """Live processes started for this test's run (their command line names its
    work directory), stopped ones included."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(tmp_path).encode() in cmdline and b"fnode.py" in cmdline:
                found.append(int(entry.name))
    return found


def test_cli_inject_a_hand_written_plan(tmp_path):
    from conftest import MODELS, ldfi

    out = tmp_path / "r.json"
    done = ldfi("run", str(MODELS / "echo" / "scenario.toml"), "--inject",
                "crash(server, before send 2)", "--store", str(tmp_path / "s"), "--json", str(out))
    assert done.returncode == 1, done.stderr  # the echo client misses its second answer
    assert "fault crash(server, before send 2): fired on server" in done.stdout
    result = json.loads(out.read_text())
    (fault,) = result["faults"]
    assert fault["fired"] and any(s.startswith("SIGKILL from BPF") for s in fault["signals"])
    from ldfi.trace.wire import read_trace

    trace = read_trace(result["trace"])
    assert [str(m.id) for m in trace.messages if m.src == "server"] == [
        "server->client:tcp0#0"]  # exactly one send before the crash
