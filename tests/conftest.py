"""Shared test helpers.

require_ebpf(): tests that load real BPF programs skip on a machine without
eBPF (not root, no bpf(), no bcc), except in CI (CI=true), where a missing
eBPF is a broken runner and must fail loudly instead of passing as skipped."""

from __future__ import annotations

import functools
import os

import pytest


@functools.cache
def _ebpf_missing() -> str | None:
    """Why eBPF is unusable here, or None when it is usable."""
    if os.geteuid() != 0:
        return "needs root"
    try:
        import bcc  # noqa: F401  (only whether it imports)
    except ImportError as err:
        return f"bcc is not importable ({err}): apt-get install python3-bpfcc"
    from tracer.probes import probe_bpf_syscall

    ok, detail = probe_bpf_syscall()
    return None if ok else detail


def unavailable(message: str) -> None:
    """Skip the calling test on a developer's machine that lacks what it needs;
    under CI=true fail instead: a CI runner that lacks it is broken, and a
    skip there would pass a suite that tested nothing."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: the CI runner must provide it)")
    pytest.skip(message)


def require_ebpf() -> None:
    """Skip the calling test when eBPF is unavailable; fail instead under CI=true."""
    why = _ebpf_missing()
    if why is not None:
        unavailable(f"eBPF unavailable: {why}")


@pytest.fixture(scope="session")
def root() -> None:
    """Namespaces and cgroups need root: skip without it, fail under CI=true."""
    if os.geteuid() != 0:
        unavailable("needs root (network namespaces and cgroups)")


@pytest.fixture(scope="session")
def ebpf() -> None:
    """Fixture form of require_ebpf(); session-scoped so that module-scoped
    fixtures which load programs can depend on it too."""
    require_ebpf()


# -- running the real CLI and inspecting what runs leave in the kernel -------

import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


def ldfi(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run the real `ldfi` command line (this venv's) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "ldfi.cli", *args], capture_output=True, text=True,
        timeout=timeout, cwd=kwargs.pop("cwd", REPO), **kwargs,
    )


def run_json(result_file: Path) -> dict:
    return json.loads(result_file.read_text())


def ldfi_resources() -> set[str]:
    """Every ldfi-named kernel object visible from the host: namespaces,
    cgroups, /etc/netns entries, host interfaces, and processes living in an
    ldfi namespace."""
    from tracer.kernel import cgroup2_root

    found: set[str] = set()
    for kind, directory in (("netns", Path("/run/netns")), ("hosts", Path("/etc/netns")),
                            ("cgroup", cgroup2_root())):
        if directory and directory.is_dir():
            found |= {f"{kind}:{p.name}" for p in directory.iterdir()
                      if p.name.startswith("ldfi-")}
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found |= {f"link:{line.split(':')[1].strip()}" for line in links.splitlines()
              if "ldfi" in line}
    inodes = {}
    for p in Path("/run/netns").glob("ldfi-*"):
        with contextlib.suppress(OSError):
            inodes[p.stat().st_ino] = p.name
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ino = (proc / "ns/net").stat().st_ino
            except OSError:
                continue
            if ino in inodes:
                found.add(f"process:{proc.name}")
    return found
