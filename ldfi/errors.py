"""One kind of error a user sees: a single line saying what is wrong, where,
and how to fix it, with the exit code the command should end with."""

from __future__ import annotations

import os

EXIT_OK = 0  # certified / predicate held / doctor found everything
EXIT_BUG = 1  # bug found / predicate failed / doctor found something missing
EXIT_USAGE = 2  # bad input: scenario, flags, files
EXIT_INCONCLUSIVE = 3  # the run could not say: a node did not start, budget ran out


class UserError(Exception):
    """An error caused by input or environment, shown as one line, no traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def require_root(command: str) -> None:
    """Refuse early, in one line, when not root: eBPF, netns and cgroups all need it."""
    if os.geteuid() != 0:
        raise UserError(
            f"'ldfi {command}' needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for eBPF, "
            "network namespaces and cgroups): run it with sudo",
            exit_code=EXIT_BUG if command == "doctor" else EXIT_USAGE,
        )
