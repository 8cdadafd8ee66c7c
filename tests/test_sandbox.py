"""The sandbox itself: cgroup membership, reaping, side-by-side runs, and
cleanup on every exit path (normal, SIGTERM, Ctrl-C, kill -9 + ldfi gc)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import MODELS, REPO, ldfi, ldfi_resources

from ldfi.sandbox import Sandbox, cgroups

pytestmark = pytest.mark.usefixtures("root")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _cmdlines(group: Path) -> list[str]:
    out = []
    for pid in cgroups.procs(group):
        with contextlib.suppress(FileNotFoundError):  # exited (the subshell) meanwhile
            out.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip())
    return sorted(out)


def test_every_process_a_node_forks_stays_in_its_cgroup_and_is_reaped(tmp_path):
    with Sandbox(["a"], tmp_path) as sb:
        # A background child, and a grandchild that leaves the session (as a
        # self-daemonizing server would) and whose parent exits at once.
        sb.start("a", "sleep 301 & (setsid sleep 302 &) ; exec sleep 303", cwd=tmp_path, env={})
        group = sb.cgroup_path("a")
        want = ["sleep 301", "sleep 302", "sleep 303"]
        # three processes is not enough to wait for: the subshell forked for
        # setsid can be there, still named /bin/sh, before sleep 302 is
        deadline = time.monotonic() + 5
        while (cmdlines := _cmdlines(group)) != want and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cmdlines == want
        pids = cgroups.procs(group)
    assert not any(_alive(p) for p in pids)
    assert not any(Path(f"/proc/{p}").exists() for p in pids)  # reaped, not zombies
    assert not group.exists()


def test_two_runs_side_by_side_are_separate_networks(tmp_path):
    with Sandbox(["a"], tmp_path / "one") as one, Sandbox(["a"], tmp_path / "two") as two:
        assert one.slot.index != two.slot.index
        assert one.network.subnet != two.network.subnet
        assert one.addresses["a"] != two.addresses["a"]
        one.start("a", f"exec python3 {MODELS}/echo/server.py --port 7000", cwd=tmp_path, env={})
        time.sleep(0.3)
        same = one.run_client(f"python3 {MODELS}/echo/client.py --server a:7000 --out ok",
                              cwd=tmp_path, env={}, timeout=10, log_name="same")
        other = two.run_client(
            f"python3 {MODELS}/echo/client.py --server {one.addresses['a']}:7000 --out ok",
            cwd=tmp_path, env={}, timeout=10, log_name="other")
        assert same.exit_code == 0
        assert other.exit_code != 0  # run two cannot reach run one's node


LONG_RUN = textwrap.dedent(f"""
    name = "long"
    [[node]]
    name = "server"
    cmd = "sleep 300 & python3 {MODELS}/echo/server.py --port 7000"
    ready = {{ tcp = 7000 }}
    [[node]]
    name = "tc-user"
    cmd = "tc qdisc add dev eth0 clsact && tc filter add dev eth0 egress bpf bytecode '1,6 0 0 0,' && exec sleep 300"
    [workload]
    cmd = "sleep 300"
    [check]
    cmd = "true"
""")


def _start_long_run(tmp_path: Path) -> tuple[subprocess.Popen[str], set[str]]:
    scenario = tmp_path / "long.toml"
    scenario.write_text(LONG_RUN)
    before = ldfi_resources()
    engine = subprocess.Popen(
        [sys.executable, "-m", "ldfi.cli", "run", str(scenario), "--no-faults",
         "--store", str(tmp_path / "store")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # until the workload is running
        if list((tmp_path / "store").glob("runs/*/logs/workload.out")):
            return engine, before
        assert engine.poll() is None, engine.communicate()
        time.sleep(0.05)
    engine.kill()
    raise AssertionError("the run never reached its workload")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_engine_cleans_up_everything(tmp_path, sig):
    engine, before = _start_long_run(tmp_path)
    during = ldfi_resources() - before
    assert any(r.startswith("netns:") for r in during) and any(r.startswith("process:")
                                                                for r in during)
    engine.send_signal(sig)
    _, err = engine.communicate(timeout=20)
    assert engine.returncode == 128 + sig  # 130 for Ctrl-C, 143 for SIGTERM, as a shell says
    said = "interrupted" if sig == signal.SIGINT else "terminated"
    assert err.strip().splitlines() == [f"ldfi: {said}; cleaned up"]
    assert ldfi_resources() - before == set()


def test_kill_9_then_gc_leaves_nothing(tmp_path):
    engine, before = _start_long_run(tmp_path)
    during = ldfi_resources() - before
    kinds = {r.split(":")[0] for r in during}
    assert {"netns", "cgroup", "hosts", "process"} <= kinds
    node_pids = [int(r.split(":")[1]) for r in during if r.startswith("process:")]
    engine.kill()
    engine.wait()
    time.sleep(0.2)
    left = ldfi_resources() - before  # a killed engine cannot clean up
    assert _named(left) == _named(during)
    assert any(r.startswith("process:") for r in left)

    gc = ldfi("gc")
    assert gc.returncode == 0, gc.stderr
    assert "removed" in gc.stdout
    assert ldfi_resources() - before == set()
    time.sleep(0.2)
    assert not any(_alive(p) for p in node_pids)
    # no namespace means no veth, bridge or tc filter inside it; and none on the host
    host_filters = subprocess.run(["tc", "filter", "show", "dev", "lo", "egress"],
                                  capture_output=True, text=True).stdout
    assert "bytecode" not in host_filters


def _named(resources: set[str]) -> set[str]:
    """Namespaces, cgroups, host files, links: what has a stable name (the
    processes inside come and go, e.g. the tc commands of a node)."""
    return {r for r in resources if not r.startswith("process:")}


def test_gc_never_touches_a_live_run(tmp_path):
    with Sandbox(["a"], tmp_path) as sb:
        sb.start("a", "exec sleep 300", cwd=tmp_path, env={})
        mine = ldfi_resources()
        gc = ldfi("gc")
        assert gc.returncode == 0
        assert ldfi_resources() >= mine
        assert sb.nodes["a"].exited() is None
        assert Path(f"/run/netns/{sb.netns('a')}").exists()


def test_a_run_cleans_a_dead_runs_slot_before_using_it(tmp_path):
    engine, before = _start_long_run(tmp_path)
    engine.kill()
    engine.wait()
    leftovers = ldfi_resources() - before
    assert leftovers
    # The next run takes the lowest free slot: the dead one's. It must clean it.
    done = ldfi("run", str(MODELS / "echo" / "scenario.toml"), "--no-faults",
                "--store", str(tmp_path / "store2"))
    assert done.returncode == 0, done.stderr
    assert ldfi_resources() - before == set()


def test_probe_connections_are_not_used_for_readiness(tmp_path):
    """tcp readiness reads the node's socket table: the server never sees a
    connection that the workload did not make."""
    with Sandbox(["a"], tmp_path) as sb:
        sb.start("a", f"exec python3 {MODELS}/echo/server.py --port 7000", cwd=tmp_path, env={})
        from ldfi.readiness import wait_ready
        from ldfi.scenario import Ready

        wait_ready(Ready("tcp", port=7000), sb.nodes["a"], netns=sb.netns("a"), cwd=tmp_path,
                   env={}, ready_cmd=None, deadline=time.monotonic() + 5)
        tcp = Path(f"/proc/{sb.nodes['a'].pid}/net/tcp").read_text().splitlines()[1:]
        states = [line.split()[3] for line in tcp]
        assert states == ["0A"]  # one listener, no connection ever made
