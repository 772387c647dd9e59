"""``make bench``'s code path, once, with a handful of samples: it runs and writes its table and JSON.

The figures of so short a run mean nothing; the shape of the report does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    assert set(first) == {"floor-postback", "baseline", "postback", "floor-callback", "callback"}
    assert all(figures["wall_ms"] > 0 for figures in first.values())
    for phase in ("emulator", "stubbed"):
        assert set(results["warm"][phase]) == {"baseline", "postback"}
    logs = results["warm"]["log_bytes"]
    assert logs["accepted_lines"] == 1  # one line per accepted postback, and the baseline writes none
    assert results["warm"]["emulator"]["baseline"]["log_bytes_per_request"] == 0
    assert results["first_invocation"]["postback_heavy_modules"] == []  # neither requests nor pydantic
    assert results["cost_per_million"]["postback"]["total"] > results["cost_per_million"]["baseline"]["total"]

    table = (tmp_path / "RESULTS.md").read_text()
    assert "| Whole first invocation, postback (wall ms) |" in table
    assert "Cost per million postbacks" in table
    assert table in finished.stdout
