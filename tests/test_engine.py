"""The LDFI loop end to end, through the CLI, on real protocol models (real
processes, real eBPF, real namespaces): a one-fault bug found at the second
run and confirmed, a model certified within its budget, a bug that needs a
crash found only once crashes are allowed, the other verdicts, and the
report and replay a person uses afterwards. Plus ddmin on its own."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from conftest import MODELS, ldfi

from ldfi.engine.minimize import ddmin
from ldfi.faults import parse_fault

pytestmark = pytest.mark.usefixtures("ebpf")


def search(tmp_path: Path, model: str, *flags: str) -> tuple[int, dict]:
    out = tmp_path / "result.json"
    done = ldfi("run", str(MODELS / model / "scenario.toml"), "--store", str(tmp_path / "store"),
                "--json", str(out), *flags)
    assert out.exists(), done.stderr
    return done.returncode, json.loads(out.read_text())


def test_one_omission_bug_is_found_at_the_second_run(tmp_path):
    code, result = search(tmp_path, "simple-deliv", "--kinds", "omission", "--max-faults", "1",
                          "--reruns", "2")
    assert code == 1 and result["verdict"] == "bug"
    runs = result["runs_detail"]
    assert [r["purpose"] for r in runs[:2]] == ["fault-free", "hypothesis"]
    assert runs[0]["predicate"] is True and runs[1]["predicate"] is False  # run 2 broke it
    cx = result["counterexample"]
    assert cx["faults"] in (["omission(a->b:udp0#0)"], ["omission(a->c:udp0#0)"])
    assert cx["reproduced"] == cx["attempts"] == 2
    fired = runs[1]["faults"][0]
    assert fired["fired"] and fired["message"] == cx["faults"][0][len("omission("):-1]
    for key in ("verdict", "runs", "strategy", "budget", "search_space", "counterexample",
                "runs_detail"):
        assert key in result
    assert result["runs"] == len(runs)
    assert all({"faults", "predicate", "duration", "lost_events"} <= set(r) for r in runs)
    # the replay command of the report reproduces it
    replay = ldfi("replay", result["report_path"], "--store", str(tmp_path / "store"))
    assert replay.returncode == 1, replay.stderr
    assert "reproduced 1/1" in replay.stdout


def test_a_tolerant_model_is_certified(tmp_path):
    code, result = search(tmp_path, "ack-deliv", "--kinds", "omission", "--max-faults", "1")
    assert code == 0 and result["verdict"] == "certified"
    assert result["counterexample"] is None
    assert result["hypotheses_tried"] >= 1  # it did try faults: certified by search, not luck
    assert result["hypotheses_tried"] <= result["search_space"]
    hypotheses = [r for r in result["runs_detail"] if r["purpose"] == "hypothesis"]
    assert all(r["predicate"] for r in hypotheses)
    assert all(f["fired"] or f["vacuous"] for r in hypotheses for f in r["faults"])


def test_a_crash_bug_is_found_only_when_crashes_are_allowed(tmp_path):
    code, without = search(tmp_path / "a", "retry-deliv", "--kinds", "omission",
                           "--max-faults", "1", "--reruns", "1")
    assert code == 0 and without["verdict"] == "certified"
    code, with_crash = search(tmp_path / "b", "retry-deliv", "--kinds", "omission,crash",
                              "--max-faults", "1", "--max-crashes", "1", "--reruns", "1")
    assert code == 1 and with_crash["verdict"] == "bug"
    assert with_crash["counterexample"]["faults"][0].startswith("crash(a, ")


def test_a_set_whose_crash_silences_its_other_faults_runs_as_the_crash_alone(tmp_path):
    """{crash(a, ...), omission of a later message of a} is the crash in
    disguise: the crash runs alone, then answers the set (no run of its own).
    redun-deliv's certification meets such sets: the broadcaster's crash
    before its first send, with any loss of its messages."""
    code, result = search(tmp_path, "redun-deliv", "--kinds", "omission,crash",
                          "--max-faults", "2", "--max-crashes", "1", "--horizon", "5",
                          "--reruns", "0")
    assert code == 0 and result["verdict"] == "certified"
    for run in result["runs_detail"]:
        if run["purpose"] != "hypothesis":
            continue
        faults = [(parse_fault(f["fault"]), f["fired"]) for f in run["faults"]]
        down = {f.node for f, _ in faults if f.kind == "crash"}
        silenced = [str(f) for f, fired in faults
                    if f.kind == "omission" and not fired and f.anchor.id.src in down]
        assert not silenced, (run["index"], silenced)
    answered = result["answered_by_earlier_runs"]
    assert any(any(f.startswith("crash(a, ") for f in a["faults"])
               and any(f.startswith("omission(a->") for f in a["faults"]) for a in answered)


def test_other_strategies_share_the_loop(tmp_path):
    for strategy in ("random", "exhaustive"):
        code, result = search(tmp_path / strategy, "simple-deliv", "--kinds", "omission",
                              "--strategy", strategy, "--seed", "7", "--reruns", "0")
        assert code == 1 and result["verdict"] == "bug", strategy
        assert result["strategy"] == strategy


def test_run_budget_exhausted_is_inconclusive(tmp_path):
    code, result = search(tmp_path, "ack-deliv", "--kinds", "omission", "--max-runs", "2")
    assert code == 3 and result["verdict"] == "inconclusive"
    assert "run budget (2 runs)" in result["reason"]


def test_a_predicate_that_fails_without_faults_is_a_bug_without_faults(tmp_path):
    scenario = tmp_path / "broken.toml"
    scenario.write_text('name = "broken"\n[[node]]\nname = "a"\ncmd = "sleep 30"\n'
                        '[workload]\ncmd = "true"\n[check]\ncmd = "false"\n')
    out = tmp_path / "r.json"
    done = ldfi("run", str(scenario), "--store", str(tmp_path / "s"), "--json", str(out),
                "--reruns", "1")
    result = json.loads(out.read_text())
    assert done.returncode == 1 and result["verdict"] == "bug"
    assert "WITHOUT any fault" in result["reason"]
    assert result["counterexample"]["faults"] == []


@pytest.mark.parametrize(("flags", "message"), [
    (["--kinds", "omision"], "unknown fault kind 'omision'"),
    (["--max-runs", "0"], "--max-runs 0"),
    (["--inject", "crash(nobody, before send 1)"], "no node named 'nobody'"),
    (["--inject", "frobnicate(a)"], "frobnicate"),
    (["--inject", "cut(a->b:tcp0#0)", "--no-faults"], "exclude each other"),
])
def test_bad_search_input_is_one_line_exit_2(tmp_path, flags, message):
    done = ldfi("run", str(MODELS / "simple-deliv" / "scenario.toml"), "--store",
                str(tmp_path), *flags)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


# -- ddmin on its own ------------------------------------------------------------------

@pytest.mark.parametrize("n", range(1, 7))
def test_ddmin_finds_the_needed_faults_without_repeating_a_test(n):
    items = [f"f{i}" for i in range(n)]
    for k in range(1, min(n, 3) + 1):
        for needed in itertools.combinations(items, k):
            calls: list[tuple[str, ...]] = []

            def fails(subset: list[str], needed=needed, calls=calls) -> bool:
                calls.append(tuple(subset))
                return set(needed) <= set(subset)

            assert sorted(ddmin(items, fails)) == sorted(needed)
            assert len(calls) == len(set(calls)) and () not in calls


def test_a_fault_that_fired_at_another_message_flaws_its_run() -> None:
    """A message fault whose report names another message than its anchor
    tested another hypothesis than planned: the search must not count it."""
    from ldfi.engine.loop import misfired
    from ldfi.engine.records import FaultOutcome

    cut, crash = parse_fault("cut(a->b:tcp0#2)"), parse_fault("crash(a, at 1s)")
    right = FaultOutcome(str(cut), True, message="a->b:tcp0#2")
    wrong = FaultOutcome(str(cut), True, message="a->b:tcp0#3")
    unnamed = FaultOutcome(str(cut), True, message="")  # the trace lost the send
    timed = FaultOutcome(str(crash), True, message="")
    assert misfired([cut, crash], [right, timed]) == []
    assert misfired([cut], [unnamed]) == []
    assert misfired([cut, crash], [wrong, timed]) == [(cut, "a->b:tcp0#3")]
