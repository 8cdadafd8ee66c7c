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


def require_ebpf() -> None:
    """Skip the calling test when eBPF is unavailable; fail instead under CI=true."""
    why = _ebpf_missing()
    if why is None:
        return
    message = f"eBPF unavailable: {why}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a CI runner must have eBPF)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def ebpf() -> None:
    """Fixture form of require_ebpf(); session-scoped so that module-scoped
    fixtures which load programs can depend on it too."""
    require_ebpf()
