"""The Molly benchmark models (models/<name>/, docs/models.md): every one runs
fault-free and passes its predicate for real, and every expected.toml says
what the engine's verdict tests need."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from conftest import MODELS, ldfi, run_json

from ldfi.scenario import load_scenario

# What each model's check prints when a fault-free run did the whole protocol
# (so that a predicate holding vacuously, e.g. nothing delivered, is caught).
FAULT_FREE_OUTCOME = {
    "simple-deliv": "OK: 3 correct node(s) all delivered ['hello']",
    "retry-deliv": "OK: 3 correct node(s) all delivered ['hello']",
    "redun-deliv": "OK: 3 correct node(s) all delivered ['hello']",
    "ack-deliv": "OK: 3 correct node(s) all delivered ['hello']",
    "classic-deliv": "OK: 3 correct node(s) all delivered ['hello']",
    "2pc": "OK: 4 correct node(s) decided commit",
    "2pc-ctp": "OK: 4 correct node(s) decided commit",
    "3pc": "OK: 4 correct node(s) decided commit",
    "kafka-isr": "OK: every acknowledged write (w1, w2) is on a correct replica",
    "paxos-synod": "OK: 3 of 3 correct node(s) decided, all 'foobar'",
    "bully-le": "OK: every correct node follows c",
}
BENCHMARKS = sorted(FAULT_FREE_OUTCOME)

FAULT_KINDS = {"omission", "cut", "reset", "crash", "partition", "pause", "restart"}
BUDGET_KEYS = {"kinds": list, "max_faults": int, "max_crashes": int}
CASE_KEYS = {**BUDGET_KEYS, "verdict": str}
OPTIONAL_KEYS = {"horizon": int, "molly_runs": int, "why": str}


def test_every_model_with_expectations_is_listed():
    on_disk = sorted(p.parent.name for p in MODELS.glob("*/expected.toml"))
    assert on_disk == BENCHMARKS


def _check_budget(where: str, table: dict, required: dict) -> None:
    for key, kind in required.items():
        assert key in table, f"{where}: missing {key!r}"
        assert isinstance(table[key], kind), f"{where}: {key!r} must be {kind.__name__}"
    for key, value in table.items():
        allowed = required | OPTIONAL_KEYS
        assert key in allowed, f"{where}: unknown key {key!r}"
        assert isinstance(value, allowed[key]), f"{where}: {key!r} must be {allowed[key].__name__}"
    assert table["kinds"] and set(table["kinds"]) <= FAULT_KINDS, f"{where}: kinds {table['kinds']}"
    assert 0 <= table["max_crashes"] <= table["max_faults"], f"{where}: crash budget"
    assert ("crash" in table["kinds"]) == (table["max_crashes"] > 0), f"{where}: crash kind"
    if "horizon" in table:
        assert table["horizon"] > 0, f"{where}: horizon"


@pytest.mark.parametrize("name", BENCHMARKS)
def test_expected_toml_is_complete(name):
    model = MODELS / name
    for required in ("README.md", "scenario.toml", "expected.toml"):
        assert (model / required).is_file(), f"{name}: no {required}"
    load_scenario(model / "scenario.toml")  # parses and validates, starts nothing
    scenario = tomllib.loads((model / "scenario.toml").read_text())
    assert "faults" in scenario, f"{name}: scenario.toml has no [faults] (the default budget)"
    _check_budget(f"{name} scenario [faults]", scenario["faults"], BUDGET_KEYS)
    assert scenario["check"].get("vacuous_exit") == 3, f"{name}: [check] vacuous_exit"
    expected = tomllib.loads((model / "expected.toml").read_text())
    assert set(expected) == {"case"}, f"{name}: tables {sorted(expected)}"
    assert expected["case"], f"{name}: no [[case]]"
    for i, case in enumerate(expected["case"]):
        where = f"{name} case #{i}"
        _check_budget(where, case, CASE_KEYS)
        assert case["verdict"] in ("bug", "certified"), f"{where}: verdict"
        if "molly_runs" in case:
            assert case["verdict"] == "bug" and case["molly_runs"] > 0, where


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("name", BENCHMARKS)
def test_model_passes_fault_free(name, tmp_path):
    out = tmp_path / "result.json"
    done = ldfi("run", str(MODELS / name / "scenario.toml"), "--no-faults",
                "--store", str(tmp_path / "store"), "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    result = run_json(out)
    assert result["status"] == "ok" and result["predicate_ok"] is True
    assert all(n["ready_after"] is not None for n in result["nodes"])
    assert result["workload"]["exit_code"] == 0
    assert result["workload"]["duration"] < 2.0  # a run is short
    logs = Path(result["run_dir"]) / "logs"
    assert FAULT_FREE_OUTCOME[name] in (logs / "check.out").read_text()
    for node in result["nodes"]:
        assert "ready:" in (logs / f"{node['name']}.out").read_text()
