"""The benchmark's quickest mode, end to end: it must produce a complete report without errors.

Never asserts on speed (the machines are shared and noisy), only that every scenario ran or was
explicitly skipped with a reason, that every request succeeded, and that the report says what it
must (machine, versions, data size, date, ratios to the limits, memory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import scenarios  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANTONG_")}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke",
                             "--out", str(out)], capture_output=True, text=True, timeout=600,
                            env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_every_scenario_ran_or_was_skipped_with_a_reason(report: tuple[dict, str]) -> None:
    results, _ = report
    ran = {(s["group"], s["name"], s["clients"]) for s in results["scenarios"]}
    skipped = {(s["group"], s["name"]) for s in results["skipped"]}
    for name, _, _ in scenarios.CRUD:
        for clients in scenarios.CLIENTS:
            assert ("santong", name, clients) in ran
            assert ("bare", name, clients) in ran
    for search in scenarios.SEARCHES:
        assert ("search", search.name) in skipped or any(
            g == "search" and n == search.name for g, n, _ in ran), search.name
    assert any(g == "transaction" for g, _, _ in ran) or any(
        g == "transaction" for g, _ in skipped)
    assert all(s["reason"] for s in results["skipped"])
    assert set(results["limits"]) == {"executemany", "insert/1", "insert/16", "select/1",
                                      "select/16", "update/1", "update/16"}
    assert {c["loadgen"] for c in results["calibration"]} >= {"python"}
    assert {r["type"] for r in results["validation"]["rows"]} >= {"Patient", "Observation",
                                                                   "Encounter", "Task"}


def test_no_request_failed(report: tuple[dict, str]) -> None:
    results, _ = report
    assert results["load"]["errors"] == 0, results["load"]["failures"]
    assert results["load"]["resources"] == results["meta"]["data"]["resources"]
    failed = {(s["group"], s["name"], s["clients"]): s["errors"] for s in results["scenarios"]
              if s["errors"]}
    assert failed == {}, results.get("server_log_tail")
    assert all(s["requests"] > 0 for s in results["scenarios"])
    assert all(v["rows"] > 0 for v in results["limits"].values())


def test_report_states_machine_versions_data_ratios_and_memory(report: tuple[dict, str]) -> None:
    results, markdown = report
    meta = results["meta"]
    assert meta["machine"]["cores"] and meta["versions"]["postgresql"]
    assert meta["data"]["patients"] == 30 and meta["data"]["resources"] > 300
    assert meta["date"][:4].isdigit()
    rows = results["comparisons"]
    assert len(rows) == len(scenarios.CRUD) * len(scenarios.CLIENTS)
    assert all(r["ratio_to_bare"] and r["ratio_to_asyncpg"] for r in rows)
    assert results["memory"]["santong"]["VmHWM"] > 10_000  # KiB
    for heading in ("## Machine, versions, data", "## Santong against the limits", "## Search",
                    "## Transactions", "## The raw limits", "## Load generator",
                    "## Validation cost", "## Memory"):
        assert heading in markdown
    assert "No failed requests in any scenario." in markdown
