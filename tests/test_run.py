"""`ldfi run --no-faults`: real multi-node scenarios in real namespaces."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import MODELS, ldfi, ldfi_resources, run_json

pytestmark = pytest.mark.usefixtures("root")


def write_scenario(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(textwrap.dedent(body))
    return path


def run(scenario: Path, tmp_path: Path, *extra: str):
    out = tmp_path / "result.json"
    done = ldfi("run", str(scenario), "--no-faults", "--store", str(tmp_path / "store"),
                "--json", str(out), *extra)
    return done, (run_json(out) if out.exists() else None)


def test_tcp_echo_model_holds(tmp_path):
    before = ldfi_resources()
    done, result = run(MODELS / "echo" / "scenario.toml", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "PREDICATE HOLDS" in done.stdout
    assert result["status"] == "ok" and result["predicate_ok"] is True
    [server] = result["nodes"]
    assert server["name"] == "server" and server["ready"] == "tcp 7000"
    assert server["ready_after"] is not None and server["address"].startswith("198.1")
    assert result["workload"]["exit_code"] == 0
    run_dir = Path(result["run_dir"])
    assert (run_dir / "work" / "result").read_text().startswith("OK 3/3")
    assert "listening on 7000" in (run_dir / "logs" / "server.out").read_text()
    assert ldfi_resources() <= before  # nothing of this run is left


def test_relative_store_gives_absolute_workdir(tmp_path):
    """Commands run in the scenario's directory: {workdir} must not be relative."""
    done = ldfi("run", str(MODELS / "echo" / "scenario.toml"), "--no-faults",
                "--store", "rel-store", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert list((tmp_path / "rel-store" / "runs").glob("*/work/result"))


def test_udp_model_holds(tmp_path):
    done, result = run(MODELS / "udp-ping" / "scenario.toml", tmp_path)
    assert done.returncode == 0, done.stderr
    assert result["nodes"][0]["ready"] == "udp 9000"
    assert (Path(result["run_dir"]) / "work" / "result").read_text().strip() == "5/5"


def test_failing_predicate_is_reported_as_failing(tmp_path):
    # The echo model, but the check demands more lines than the client sends.
    scenario = write_scenario(tmp_path, f"""
        name = "echo-wrong-check"
        [[node]]
        name = "server"
        cmd = "python3 {MODELS}/echo/server.py --port 7000"
        ready = {{ tcp = 7000 }}
        [workload]
        cmd = "python3 {MODELS}/echo/client.py --server {{server}}:7000 --count 2 --out {{workdir}}/r"
        [check]
        cmd = "grep -qx 'OK 3/3' {{workdir}}/r"
    """)
    done, result = run(scenario, tmp_path)
    assert done.returncode == 1
    assert "PREDICATE FAILED" in done.stdout
    assert result["status"] == "failed" and result["predicate_ok"] is False
    assert result["check"]["exit_code"] == 1
    assert (Path(result["run_dir"]) / "work" / "r").read_text().startswith("OK 2/2")


def test_host_names_placeholders_and_identity(tmp_path):
    """Node names resolve as hosts in every namespace; {node}, {scenario_dir}
    and {workdir} are filled in."""
    scenario = write_scenario(tmp_path, f"""
        name = "names"
        [[node]]
        name = "alpha"
        cmd = "sleep 300 & python3 {MODELS}/echo/server.py --port 7100"
        ready = {{ tcp = 7100 }}
        [[node]]
        name = "beta"
        cmd = "echo I am {{node}} in {{scenario_dir}} >&2; exec python3 {MODELS}/echo/server.py --port 7200"
        ready = {{ log = "I am beta" }}
        [workload]
        cmd = "python3 {MODELS}/echo/client.py --server alpha:7100 --count 1 --out {{workdir}}/a && python3 {MODELS}/echo/client.py --server beta:7200 --count 1 --out {{workdir}}/b"
        [check]
        cmd = "grep -q OK {{workdir}}/a && grep -q OK {{workdir}}/b"
    """)
    done, result = run(scenario, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = Path(result["run_dir"])
    assert f"I am beta in {tmp_path}" in (run_dir / "logs" / "beta.err").read_text()


def test_node_that_exits_early_ends_the_run_with_its_log(tmp_path):
    scenario = write_scenario(tmp_path, """
        name = "crashy"
        [[node]]
        name = "server"
        cmd = "python3 -c 'import sys; print(\\"cannot bind: boom\\", file=sys.stderr); sys.exit(3)'"
        ready = { tcp = 7000 }
        [workload]
        cmd = "true"
        [check]
        cmd = "true"
    """)
    done, result = run(scenario, tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "INCONCLUSIVE" in done.stdout
    assert "exited with code 3" in result["error"] and "cannot bind: boom" in result["error"]
    assert result["predicate_ok"] is None and result["workload"] is None


def test_node_never_ready_times_out(tmp_path):
    scenario = write_scenario(tmp_path, """
        name = "deaf"
        [[node]]
        name = "server"
        cmd = "sleep 30"
        ready = { tcp = 7000, timeout = "0.5s" }
        [workload]
        cmd = "true"
        [check]
        cmd = "true"
    """)
    done, result = run(scenario, tmp_path)
    assert done.returncode == 3
    assert "was not ready (tcp 7000) after 0.5s" in result["error"]
    assert result["wall"] < 10


def test_workload_timeout_is_recorded_and_check_still_decides(tmp_path):
    scenario = write_scenario(tmp_path, """
        name = "slow-client"
        [[node]]
        name = "server"
        cmd = "sleep 30"
        [workload]
        cmd = "sleep 30"
        timeout = "0.5s"
        [check]
        cmd = "true"
    """)
    done, result = run(scenario, tmp_path)
    assert done.returncode == 0
    assert result["workload"]["timed_out"] is True and result["workload"]["exit_code"] is None
    assert result["predicate_ok"] is True


def test_no_route_to_the_host_network(tmp_path):
    """A node's namespace has only the run's /24: the host is unreachable."""
    scenario = write_scenario(tmp_path, """
        name = "isolated"
        [[node]]
        name = "server"
        cmd = "sleep 30"
        [workload]
        cmd = "ip route > {workdir}/routes; python3 -c 'import socket; socket.create_connection((\\"1.1.1.1\\", 80), timeout=1)' 2> {workdir}/err"
        [check]
        cmd = "grep -q 'Network is unreachable' {workdir}/err"
    """)
    done, result = run(scenario, tmp_path)
    assert done.returncode == 0, (Path(result["run_dir"]) / "work" / "err").read_text()
    routes = (Path(result["run_dir"]) / "work" / "routes").read_text().strip().splitlines()
    assert len(routes) == 1 and routes[0].startswith(result["subnet"])


def test_bad_scenario_is_one_line_exit_2_and_starts_nothing(tmp_path):
    before = ldfi_resources()
    scenario = write_scenario(tmp_path, """
        name = "typo"
        [[node]]
        name = "server"
        cmd = "pyton3-does-not-exist server.py"
        [workload]
        cmd = "true"
        [check]
        cmd = "true"
    """)
    done, _ = run(scenario, tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert f"{scenario}:5:" in lines[0] and "pyton3-does-not-exist" in lines[0]
    assert not (tmp_path / "store").exists()
    assert ldfi_resources() <= before
    missing = ldfi("run", str(tmp_path / "nope.toml"), "--no-faults")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_redis_replication_third_party_system(tmp_path):
    """Debian's unmodified redis-server: a primary and two replicas."""
    done, result = run(MODELS / "redis-replication" / "scenario.toml", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [n["name"] for n in result["nodes"]] == ["primary", "replica1", "replica2"]
    assert all(n["ready_after"] is not None for n in result["nodes"])
    assert (Path(result["run_dir"]) / "work" / "acks").read_text().strip() == "2"


def test_unwritable_store_or_json_fails_first_in_one_line(tmp_path):
    before = ldfi_resources()
    for extra in (["--store", "/etc/hostname"],
                  ["--store", str(tmp_path / "s"), "--json", "/proc/no/such/dir/out.json"]):
        done = ldfi("run", str(MODELS / "echo" / "scenario.toml"), "--no-faults", *extra)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert extra[-2] in lines[0] and "writable" in lines[0]
        assert done.stdout == ""  # nothing ran
    assert ldfi_resources() <= before
