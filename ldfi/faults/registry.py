"""Fault models, found through the `ldfi.fault_models` entry point group.

A third-party package adds a kind with one line in its pyproject.toml:

    [project.entry-points."ldfi.fault_models"]
    isolate = "my_package.isolate:Isolate"

The built-ins register the same way (bop-bpf's own pyproject.toml). Models are
imported lazily: listing kinds imports nothing, and a broken plugin only
breaks the faults of its own kind, with a one-line error naming its entry point.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points

from ldfi.errors import UserError

from .model import FaultModel

GROUP = "ldfi.fault_models"

# The built-ins, in case this source tree runs without its dist-info (e.g. a
# checkout on PYTHONPATH, never `pip install`ed): then the group is empty and
# nothing would work. An installed tree gets them from its entry points.
BUILTIN = {
    "omission": "ldfi.faults.kinds:Omission",
    "cut": "ldfi.faults.kinds:Cut",
    "delay": "ldfi.faults.kinds:Delay",
    "reset": "ldfi.faults.kinds:Reset",
    "crash": "ldfi.faults.kinds:Crash",
    "pause": "ldfi.faults.kinds:Pause",
    "restart": "ldfi.faults.kinds:Restart",
    "partition": "ldfi.faults.kinds:Partition",
}


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        seen = found.get(ep.name)
        # the same distribution can be visible twice (an editable install and a
        # source tree on sys.path): same target, no conflict
        if seen is not None and seen.value != ep.value:
            raise UserError(f"two fault-model plugins both define kind {ep.name!r}: "
                            f"{_where(seen)} and {_where(ep)}; uninstall one of them")
        found[ep.name] = ep
    for name, value in BUILTIN.items():
        found.setdefault(name, EntryPoint(name, value, GROUP))
    return found


def _where(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    origin = f" (from {dist.name})" if dist is not None else ""
    return f"'{ep.name} = {ep.value}'{origin}"


def kinds() -> list[str]:
    """Every registered kind, sorted (nothing is imported)."""
    return sorted(_entry_points())


@functools.cache
def get(kind: str) -> FaultModel:
    """The model of a kind (one instance per process)."""
    eps = _entry_points()
    if kind not in eps:
        raise UserError(f"unknown fault kind {kind!r}: known kinds are {', '.join(kinds())}")
    ep = eps[kind]
    try:
        cls = ep.load()
    except Exception as err:  # any import-time failure of third-party code
        raise UserError(f"fault-model plugin {_where(ep)} failed to load: "
                        f"{type(err).__name__}: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, FaultModel)):
        raise UserError(f"fault-model plugin {_where(ep)} is not a FaultModel subclass")
    if getattr(cls, "kind", None) != kind:
        raise UserError(f"fault-model plugin {_where(ep)} says its kind is "
                        f"{getattr(cls, 'kind', None)!r}; make the entry point name and "
                        "the class's `kind` agree")
    try:
        return cls()
    except Exception as err:
        raise UserError(f"fault-model plugin {_where(ep)} failed to start: "
                        f"{type(err).__name__}: {err}") from None


def models(names: list[str] | tuple[str, ...] | None = None) -> list[FaultModel]:
    """The models of `names` (default: every kind), in that order."""
    return [get(k) for k in (kinds() if names is None else names)]


def reload() -> None:
    """Forget what was found (after installing a plugin in this process; tests)."""
    _entry_points.cache_clear()
    get.cache_clear()
