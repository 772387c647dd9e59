"""``make bench``'s reconciliation benchmark, once, on a day of a dozen orders and a short cadence
model: it runs, writes its table and JSON, and counts what the reconciler did.

The figures of so short a run mean nothing; the shape of the report and the counts do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT

USERS = 3


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    output = tmp_path_factory.mktemp("bench-reconcile")
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "POWERTOOLS_", "KITE_", "BENCH_"))
    }
    environment.update(
        PYTHONPATH=f"{ROOT / 'layers' / 'kitehooks'}:{ROOT}",
        BENCH_QUICK="1",
        BENCH_RECONCILE_USERS=str(USERS),
        BENCH_OUTPUT=str(output),
    )
    finished = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "reconcile.py")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    results: dict[str, Any] = json.loads((output / "reconcile.json").read_text())
    return results, (output / "RECONCILE.md").read_text(), finished.stdout


def test_each_run_is_counted_at_kite_and_aws_and_scaled_per_thousand_orders(
    report: tuple[dict[str, Any], str, str],
) -> None:
    results, _, _ = report
    assert set(results["scenarios"]) == {"all_delivered", "dropped_20", "confirmation_off"}
    for name, scenario in results["scenarios"].items():
        catch_up, paced = scenario["catch_up"], scenario["paced"]
        assert catch_up["users"] == paced["users"] == USERS
        runs = [catch_up["first_run"], catch_up["second_run"], *paced["runs"]]
        assert len(paced["runs"]) == results["paced_minutes"] + 2
        for measured in runs:
            # One GET /orders per session per run, counted at the simulator; the rest are histories.
            assert measured["kite"]["orders"] == USERS, name
            assert (
                measured["summary"]["kite_calls"]
                == measured["kite"]["orders"] + measured["kite"]["histories"]
            )
            assert measured["summary"]["polled"] == USERS
            assert measured["wall_seconds"] > 0
            assert measured["wall_seconds_at_default_rate"] >= measured["wall_seconds"]
        figures = catch_up["per_1000_orders"]["first_run"]
        assert figures["kite_calls"] == pytest.approx(
            catch_up["first_run"]["summary"]["kite_calls"] * 1000 / catch_up["orders"]
        )
        assert paced["totals"]["get_order_history"] == sum(run["kite"]["histories"] for run in paced["runs"])
        # The second run after the day finds nothing new: no history, nothing sent.
        assert catch_up["second_run"]["kite"]["histories"] == 0, name
        assert catch_up["second_run"]["aws"]["sqs"] == 0, name


def test_lost_postbacks_are_recovered_and_delivered_ones_are_not(
    report: tuple[dict[str, Any], str, str],
) -> None:
    scenarios = report[0]["scenarios"]
    delivered, dropped, off = (
        scenarios[name] for name in ("all_delivered", "dropped_20", "confirmation_off")
    )
    for day in ("catch_up", "paced"):
        assert delivered[day]["postbacks"]["dropped"] == 0
        assert delivered[day]["postbacks"]["accepted"] == delivered[day]["postbacks"]["sent_by_kite"] > 0
        assert dropped[day]["postbacks"]["dropped"] > 0
    assert delivered["catch_up"]["first_run"]["summary"]["recovered"] == 0
    assert delivered["catch_up"]["first_run"]["aws"]["sqs"] == 0
    assert delivered["paced"]["totals"]["recovered"] == delivered["paced"]["totals"]["sqs_requests"] == 0
    assert dropped["catch_up"]["first_run"]["summary"]["recovered"] > 0
    assert (
        dropped["catch_up"]["first_run"]["aws"]["sqs"]
        == dropped["catch_up"]["first_run"]["summary"]["recovered"]
    )
    assert dropped["paced"]["totals"]["recovered"] > 0
    # With OrderConfirmation=off the postback path records nothing: every order costs its history.
    assert off["catch_up"]["postbacks"]["accepted"] == 0
    assert off["catch_up"]["first_run"]["kite"]["histories"] == off["catch_up"]["orders"]
    assert off["paced"]["totals"]["get_order_history"] > delivered["paced"]["totals"]["get_order_history"]


def test_the_cadence_model_covers_each_size_and_says_what_the_defaults_reach(
    report: tuple[dict[str, Any], str, str],
) -> None:
    results, _, _ = report
    defaults = results["defaults"]
    assert defaults["interval_minutes"] >= 1
    assert 0 < defaults["requests_per_second"] <= defaults["max_requests_per_second"] <= 10
    assert defaults["run_seconds"] < defaults["interval_minutes"] * 60
    rows = results["cadence"]
    assert {row["sessions"] for row in rows} == {100, 1_000, 10_000}
    for row in rows:
        assert row["with_open_orders"] == row["sessions"] // 10
        assert row["sessions_per_run"]["max"] <= row["sessions"]
    small = next(row for row in rows if row["sessions"] == 100 and row["calls_open_session"] == 1)
    # A hundred sessions fit in one run: every one is polled every run.
    assert small["sessions_per_run"]["median"] == 100
    assert small["open"]["worst_gap_minutes"] == defaults["interval_minutes"]
    large = [row for row in rows if row["sessions"] == 10_000]
    # Ten thousand do not: a run reaches a small share of them.
    assert all(row["sessions_per_run"]["max"] < 1_000 for row in large)
    assert any("cannot poll every session with open orders" in line for line in results["verdict"])


def test_the_table_is_written_and_printed(report: tuple[dict[str, Any], str, str]) -> None:
    _, table, stdout = report
    assert "## 1. What reconciliation costs, per 1,000 orders" in table
    assert "## 2. The cadence each session gets" in table
    assert "| OrderConfirmation=off | 6 |" in table  # a run every minute: 4 minutes and 2 more runs
    assert "| every postback delivered | after the day |" in table
    assert "| 10,000 | 5/s |" in table
    assert table in stdout
