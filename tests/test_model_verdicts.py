"""Every protocol model under every budget of its expected.toml, searched for
real by the engine (real processes, eBPF tracing and injection): the verdict
must be the one the literature gives (docs/models.md). Bugs are confirmed by
one re-run.

The two long certifications (ack-deliv, paxos-synod: 70 and ~140
executions, minutes each, more on a loaded machine) are marked slow: `make
test` leaves them out to stay under 15 minutes, `make test-slow` runs them."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from conftest import MODELS, ldfi

pytestmark = pytest.mark.usefixtures("ebpf")

SLOW = {("ack-deliv", 0), ("paxos-synod", 0)}


def _cases() -> list:
    out = []
    for path in sorted(MODELS.glob("*/expected.toml")):
        for i, case in enumerate(tomllib.loads(path.read_text())["case"]):
            key = (path.parent.name, i)
            marks = [pytest.mark.slow, pytest.mark.timeout(1200)] if key in SLOW else []
            out.append(pytest.param(path.parent.name, case, marks=marks,
                                    id=f"{key[0]}-{i}-{case['verdict']}"))
    return out


@pytest.mark.parametrize(("model", "case"), _cases())
def test_model_verdict(tmp_path: Path, model: str, case: dict) -> None:
    flags = ["--kinds", ",".join(case["kinds"]), "--max-faults", str(case["max_faults"]),
             "--max-crashes", str(case["max_crashes"]), "--reruns", "1", "--max-runs", "300"]
    if "horizon" in case:
        flags += ["--horizon", str(case["horizon"])]
    out = tmp_path / "result.json"
    done = ldfi("run", str(MODELS / model / "scenario.toml"), "--store", str(tmp_path / "s"),
                "--json", str(out), *flags, timeout=600)
    result = json.loads(out.read_text())
    assert result["verdict"] == case["verdict"], (result["reason"], done.stderr[-500:])
    if case["verdict"] == "bug":
        assert done.returncode == 1
        assert result["counterexample"]["reproduced"] == 1  # the one re-run failed too
    else:
        assert done.returncode == 0
