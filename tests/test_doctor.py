"""`ldfi doctor` against what the kernel really does.

The doctor runs as a user would run it (a subprocess of the installed `ldfi`),
and its claims are checked against ground truth this file gathers on its own,
with different programs, targets and tools where a claim can be wrong: a kprobe
attached through bcc directly, fentry/LSM programs on other kernel functions,
its own namespace pair built with the `ip` CLI where a tc drop program must
drop a ping, its own cgroup where a cgroup_skb program must make sendto fail."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import unavailable

from tracer.kernel import cgroup2_root, quiet_stderr

pytestmark = pytest.mark.usefixtures("ebpf")

PROBE_NAMES = [
    "root",
    "bpf_syscall",
    "bcc",
    "btf",
    "tracefs",
    "syscall_tracepoints",
    "sock_tracepoints",
    "cgroup_sock",
    "record_slots",
    "task_storage",
    "send_signal",
    "netns_veth",
    "tc_clsact",
    "cgroup_skb",
    "kprobes",
    "fentry",
    "bpf_lsm",
]
OPTIONAL = {"kprobes", "fentry", "bpf_lsm"}


def ldfi_cmd() -> list[str]:
    script = Path(sys.executable).parent / "ldfi"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ldfi.cli"]


class DoctorRun:
    def __init__(self, args: list[str], prefix: list[str] | None = None) -> None:
        start = time.monotonic()
        proc = subprocess.Popen(
            [*(prefix or []), *ldfi_cmd(), "doctor", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        self.stdout, self.stderr = proc.communicate(timeout=60)
        self.seconds = time.monotonic() - start
        self.pid = proc.pid
        self.returncode = proc.returncode

    def probes(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in json.loads(self.stdout)["probes"]}


@pytest.fixture(scope="module")
def doctor(ebpf: None) -> DoctorRun:
    return DoctorRun(["--json"])


# ------------------------------------------------------------- ground truth

GROUND_TRUTH_C = rb"""
#include <uapi/linux/pkt_cls.h>
int gt_tc_drop(struct __sk_buff *skb) { return TC_ACT_SHOT; }
int gt_tc_pass(struct __sk_buff *skb) { return TC_ACT_OK; }
int gt_cgroup_drop(struct __sk_buff *skb) { return 0; }
int gt_cgroup_pass(struct __sk_buff *skb) { return 1; }
int gt_kprobe(struct pt_regs *ctx) { return 0; }
"""


@pytest.fixture(scope="module")
def gt_bpf(ebpf: None) -> Iterator[Any]:
    from bcc import BPF

    with quiet_stderr():
        bpf = BPF(text=GROUND_TRUTH_C)
    yield bpf
    with quiet_stderr():
        bpf.cleanup()


def bcc_module_loads(text: bytes) -> bool:
    """bcc attaches kfunc__/lsm__ programs while constructing the module, so
    constructing it is the whole load-and-attach attempt. A compile error is
    the test's own bug, never a 'missing'."""
    from bcc import BPF

    with quiet_stderr():
        try:
            bpf = BPF(text=text)
        except Exception as err:
            assert "compile" not in str(err), err
            return False
        bpf.cleanup()
    return True


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


def ping(ns: str, addr: str, wait: float) -> bool:
    cmd = ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", str(wait), addr]
    return subprocess.run(cmd, capture_output=True, timeout=wait + 5, check=False).returncode == 0


@contextlib.contextmanager
def cli_veth_pair(prefix: str) -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth, built with the ip CLI (not pyroute2)."""
    a, b = f"{prefix}-a", f"{prefix}-b"
    try:
        run("ip", "netns", "add", a)
        run("ip", "netns", "add", b)
        run("ip", "-n", a, "link", "add", "gt0", "type", "veth", "peer", "name", "gt1", "netns", b)
        for ns, dev, addr in ((a, "gt0", "198.19.255.5/30"), (b, "gt1", "198.19.255.6/30")):
            run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def tc_program_drops_ping(gt_bpf: Any, program: str) -> bool:
    """Baseline ping works, with the direct-action program on egress it does
    not (and tc shows the filter), after deleting clsact it works again."""
    from bcc import BPF
    from pyroute2 import IPRoute

    fn = gt_bpf.load_func(program.encode(), BPF.SCHED_CLS)
    with cli_veth_pair(f"ldfi-test-{os.getpid()}") as (a, _b):
        if not ping(a, "198.19.255.6", wait=2):
            return False
        with IPRoute(netns=a) as ipr:
            index = ipr.link_lookup(ifname="gt0")[0]
            ipr.tc("add", "clsact", index)
            ipr.tc(
                "add-filter", "bpf", index, ":1", fd=fn.fd, name=program,
                parent="ffff:fff3", classid=1, direct_action=True,
            )  # fmt: skip
        shown = subprocess.run(
            ["tc", "-n", a, "filter", "show", "dev", "gt0", "egress"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert program in shown and "direct-action" in shown, shown
        dropped = not ping(a, "198.19.255.6", wait=0.5)
        run("tc", "-n", a, "qdisc", "del", "dev", "gt0", "clsact")
        return dropped and ping(a, "198.19.255.6", wait=2)


UDP_FROM_CGROUP = """
import socket, sys
open(sys.argv[1] + "/cgroup.procs", "w").write("0")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"ground truth", ("127.0.0.1", 9))
    print(0)
except OSError as e:
    print(e.errno)
"""


def udp_errno_from(cgroup: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-c", UDP_FROM_CGROUP, str(cgroup)],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    return int(out.strip())


def cgroup_program_gives_eperm(gt_bpf: Any, program: str) -> bool:
    from bcc import BPF, BPFAttachType

    root = cgroup2_root()
    assert root is not None, "cgroup v2 not mounted"
    fn = gt_bpf.load_func(program.encode(), BPF.CGROUP_SKB)
    cgroup = root / f"ldfi-test-{os.getpid()}"
    cgroup.mkdir()
    try:
        fd = os.open(cgroup, os.O_RDONLY)
        try:
            BPF.attach_func(fn, fd, BPFAttachType.CGROUP_INET_EGRESS)
            try:
                with_program = udp_errno_from(cgroup)
            finally:
                BPF.detach_func(fn, fd, BPFAttachType.CGROUP_INET_EGRESS)
            without = udp_errno_from(cgroup)
        finally:
            os.close(fd)
    finally:
        for _ in range(50):
            with contextlib.suppress(OSError):
                cgroup.rmdir()
            if not cgroup.exists():
                break
            time.sleep(0.02)
    return with_program == errno.EPERM and without == 0


# ------------------------------------------------------------- the tests


def test_json_report_exits_zero_and_names_every_probe(doctor: DoctorRun) -> None:
    assert doctor.returncode == 0, doctor.stderr
    report = json.loads(doctor.stdout)
    assert report["ok"] is True
    assert report["kernel"] == platform.release()
    assert [p["name"] for p in report["probes"]] == PROBE_NAMES
    for probe in report["probes"]:
        assert set(probe) == {"name", "title", "ok", "required", "detail", "loses"}
        assert probe["detail"] and probe["loses"] and probe["title"]


def test_required_probes_ok_and_extras_optional(doctor: DoctorRun) -> None:
    for name, probe in doctor.probes().items():
        assert probe["required"] == (name not in OPTIONAL), name
        if probe["required"]:
            assert probe["ok"], f"{name}: {probe['detail']}"


def test_kprobes_claim_matches_a_direct_attach(doctor: DoctorRun, gt_bpf: Any) -> None:
    event = gt_bpf.get_syscall_fnname(b"getppid")
    with quiet_stderr():
        try:
            gt_bpf.attach_kprobe(event=event, fn_name=b"gt_kprobe")
            attached = True
            gt_bpf.detach_kprobe(event)
        except Exception:
            attached = False
    assert doctor.probes()["kprobes"]["ok"] == attached


def test_fentry_claim_matches_another_function(doctor: DoctorRun) -> None:
    works = bcc_module_loads(b"KFUNC_PROBE(vfs_read) { return 0; }")
    assert doctor.probes()["fentry"]["ok"] == works


def test_lsm_claim_matches_another_hook(doctor: DoctorRun) -> None:
    loads = bcc_module_loads(b"LSM_PROBE(file_open, void *file) { return 0; }")
    probe = doctor.probes()["bpf_lsm"]
    # A hook can load and attach yet never run ('bpf' not in lsm=): then the
    # doctor says missing, and says why.
    assert probe["ok"] <= loads
    if loads and not probe["ok"]:
        assert "not run" in probe["detail"]


def test_tc_claim_matches_a_ping_dropped_in_our_own_namespaces(
    doctor: DoctorRun, gt_bpf: Any
) -> None:
    assert doctor.probes()["tc_clsact"]["ok"] == tc_program_drops_ping(gt_bpf, "gt_tc_drop")


def test_cgroup_skb_claim_matches_eperm_in_our_own_cgroup(doctor: DoctorRun, gt_bpf: Any) -> None:
    drops = cgroup_program_gives_eperm(gt_bpf, "gt_cgroup_drop")
    assert doctor.probes()["cgroup_skb"]["ok"] == drops


def test_doctor_leaves_no_namespace_or_cgroup(doctor: DoctorRun) -> None:
    from pyroute2 import netns

    mine = f"ldfi-doctor-{doctor.pid}"
    assert "ldfi-doctor-" in doctor.probes()["netns_veth"]["detail"]
    assert not [ns for ns in netns.listnetns() if ns.startswith(mine)]
    root = cgroup2_root()
    assert root is not None
    assert not (root / mine).exists()


def test_doctor_is_fast(doctor: DoctorRun) -> None:
    # The aim is under 5 s; the bound leaves room for a loaded test machine.
    assert doctor.seconds < 10, f"doctor took {doctor.seconds:.1f} s"


def test_table_names_every_probe(doctor: DoctorRun) -> None:
    table = DoctorRun([])
    assert table.returncode == 0, table.stderr
    for probe in doctor.probes().values():
        assert probe["title"] in table.stdout, probe["title"]
    assert "Traceback" not in table.stderr


# Imports as root, then drops to nobody and runs the CLI: the check under test
# is the CLI's own euid check, and this works wherever the checkout lives
# (a 0700 temporary clone is unreadable to nobody).
_AS_NOBODY = """
import os, sys
from ldfi import cli, doctor, errors
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
sys.exit(cli.main(["doctor"]))
"""


def test_non_root_gets_one_line_about_root(ebpf: None) -> None:
    run_ = subprocess.run([sys.executable, "-c", _AS_NOBODY], capture_output=True, text=True,
                          timeout=60, cwd="/")
    lines = run_.stderr.splitlines()
    assert run_.returncode != 0
    assert len(lines) == 1, run_.stderr
    assert "root" in lines[0] and "Traceback" not in run_.stderr
    assert run_.stdout == ""


def test_unusable_bpf_is_said_in_one_line(ebpf: None) -> None:
    """In a user namespace euid is 0 but the kernel refuses bpf(): the doctor
    must blame bpf() itself, once, instead of listing fifteen failures."""
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True)
    if probe.returncode != 0:
        unavailable("cannot create a user namespace here")
    run_ = DoctorRun(["--json"], prefix=["unshare", "--user", "--map-root-user"])
    assert run_.returncode == 1
    lines = run_.stderr.splitlines()
    assert len(lines) == 1 and "bpf()" in lines[0], run_.stderr
    probes = run_.probes()
    assert not probes["bpf_syscall"]["ok"]
    assert probes["syscall_tracepoints"]["detail"].startswith("not tried")


def test_ground_truth_can_say_no(gt_bpf: Any) -> None:
    """Pass-through programs in the same set-ups must not count as drops, so a
    'dropped' from the helpers above means the program dropped."""
    assert not tc_program_drops_ping(gt_bpf, "gt_tc_pass")
    assert not cgroup_program_gives_eperm(gt_bpf, "gt_cgroup_pass")
