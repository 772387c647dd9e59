"""``make bench``'s code path, once, with a handful of samples: it runs and writes its table and JSON.

The figures of so short a run mean nothing; the shape of the report does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_the_benchmark_runs_and_writes_its_table_and_json(tmp_path: Path) -> None:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "POWERTOOLS_", "KITE_"))
    }
    environment.update(
        PYTHONPATH=f"{ROOT / 'layers' / 'kitehooks'}:{ROOT}",
        BENCH_QUICK="1",
        BENCH_COLD_RUNS="1",
        BENCH_WARM_ROUNDS="1",
        BENCH_OUTPUT=str(tmp_path),
    )
    finished = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "postback.py")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    results = json.loads((tmp_path / "results.json").read_text())
    first = results["first_invocation"]["medians"]
    assert set(first) == {
        "floor-postback",
        "baseline-off",
        "postback-off",
        "baseline-on",
        "postback-on",
        "floor-callback",
        "callback",
    }
    assert all(figures["wall_ms"] > 0 for figures in first.values())
    assert results["first_invocation"]["postback_heavy_modules"] == []  # neither requests nor pydantic
    assert set(results["warm"]["modes"]) == {"off", "on"}
    for mode, figures in results["warm"]["modes"].items():
        for phase in ("emulator", "stubbed"):
            assert set(figures[phase]) == {"baseline", "postback"}
            assert figures[phase]["baseline"]["log_bytes_per_request"] == 0  # the baseline writes none
        # One line per accepted postback in both modes: a failed ledger write would add a warning.
        assert figures["log_lines_per_accepted"] == 1, mode
        assert 0 < figures["log_bytes_per_accepted"] <= 300, mode
        costs = results["cost_per_million"][mode]
        # The logs are the postback path's own cost; the billed ms of so short a run mean nothing.
        assert costs["postback"]["logs"] > 0
        assert costs["baseline"]["logs"] == 0
        for side in ("postback", "baseline"):
            parts = {k: v for k, v in costs[side].items() if k not in ("total", "billed_ms")}
            assert costs[side]["total"] == pytest.approx(sum(parts.values()))
        # The same I/O on both sides: the ledger's writes are priced for both with on, neither with off.
        assert costs["postback"]["dynamodb_writes"] == costs["baseline"]["dynamodb_writes"]
        assert (costs["postback"]["dynamodb_writes"] > 0) == (mode == "on")
    assert results["warm"]["modes"]["on"]["ledger_items_after"] > 0

    table = (tmp_path / "RESULTS.md").read_text()
    for title in ("## OrderConfirmation=off", "## OrderConfirmation=on", "## Both modes"):
        assert title in table
    assert table.count("| Whole first invocation (wall ms) |") == 2
    assert "Cost per million postbacks" in table
    assert table in finished.stdout
