"""The store: every search and every run of it in SQLite (sqlite-utils), next
to the run directories (logs, work dirs, traces) and one JSON report per
search. `<store>/ldfi.db` answers "what did we try, and what happened" across
sessions; the report file is what a person or a CI job reads."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from ldfi.engine.records import RunRecord, SearchResult


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = sqlite_utils.Database(root / "ldfi.db")
        if "searches" not in self.db.table_names():
            self.db["searches"].create({
                "id": int, "started": str, "scenario": str, "scenario_path": str,
                "strategy": str, "budget": str, "seed": int, "verdict": str, "reason": str,
                "runs": int, "search_space": int, "wall": float, "report": str,
            }, pk="id")
            self.db["runs"].create({
                "search": int, "idx": int, "purpose": str, "faults": str, "fired": str,
                "predicate": int, "vacuous": int, "status": str, "error": str, "duration": float,
                "engine_overhead": float, "lost_events": int, "support_size": int,
                "run_id": str, "run_dir": str,
            }, pk=("search", "idx"), foreign_keys=[("search", "searches", "id")])

    def begin(self, scenario: str, scenario_path: str, strategy: str,
              budget: dict[str, Any], seed: int | None) -> int:
        table = self.db["searches"]
        table.insert({
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "scenario": scenario, "scenario_path": scenario_path, "strategy": strategy,
            "budget": json.dumps(budget), "seed": seed, "verdict": "running",
        })
        assert table.last_pk is not None
        return int(table.last_pk)

    def add_run(self, search: int, run: RunRecord) -> None:
        self.db["runs"].insert({  # alter: stores written by older versions gain columns
            "search": search, "idx": run.index, "purpose": run.purpose,
            "faults": json.dumps([f.fault for f in run.faults]),
            "fired": json.dumps([asdict(f) for f in run.faults]),
            "predicate": None if run.predicate is None else int(run.predicate),
            "vacuous": int(run.vacuous), "status": run.status, "error": run.error,
            "duration": run.duration,
            "engine_overhead": run.engine_overhead, "lost_events": run.lost_events,
            "support_size": run.support_size, "run_id": run.run_id, "run_dir": run.run_dir,
        }, alter=True)

    def finish(self, search: int, result: SearchResult) -> Path:
        """Write the report file and close the search's row; returns the report's path."""
        directory = self.root / "searches" / str(search)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "report.json"
        result.report_path = str(path.resolve())
        path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        self.db["searches"].update(search, {
            "verdict": result.verdict, "reason": result.reason, "runs": result.runs,
            "search_space": result.search_space, "wall": result.wall, "report": str(path),
        })
        return path
