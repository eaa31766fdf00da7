"""The benchmark's quickest mode, end to end: it must produce a complete report without errors.

Never asserts on speed (the machines are shared and noisy), only that every scenario ran or was
explicitly skipped with a reason, that every request succeeded, and that the report says what it
must (machine, versions, data sizes, date, ratios to the limits, memory, the soak). Two tiny
data sizes and a two-second soak exercise `--sizes` and `--soak` cheaply.
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

import report as bench_report  # noqa: E402
import scenarios  # noqa: E402

SIZES = (30, 45)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANTONG_")}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke",
                             "--sizes", ",".join(map(str, SIZES)), "--soak", "--soak-seconds",
                             "2", "--soak-interval", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
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
    for size in SIZES:
        for search in scenarios.SEARCHES:
            assert any(s["name"] == search.name and s["patients"] == size
                       for s in results["scenarios"] + results["skipped"]), (size, search.name)
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
    for size in SIZES:
        setup = results["setup"][str(size)]
        assert setup["errors"] == 0, setup["failures"]
        assert setup["resources"] == results["meta"]["data"]["by_size"][str(size)]["resources"]
    assert results["setup"][str(SIZES[1])]["resources"] > results["setup"][str(SIZES[0])][
        "resources"]
    failed = {(s["group"], s["name"], s["clients"]): s["errors"] for s in results["scenarios"]
              if s["errors"]}
    assert failed == {}, results.get("server_log_tail")
    assert results["soak"]["errors"] == 0, results.get("server_log_tail")
    assert results["soak"]["requests"] > 0
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
    for size in SIZES:
        assert results["memory"]["sizes"][str(size)]["peak_kib"] > 10_000
    soak = results["soak"]
    assert len(soak["samples"]) >= 3 and soak["growth_percent"] is not None
    assert all(s["rss_kib"] > 10_000 for s in soak["samples"])
    by_size = [r for r in results["search_by_size"] if all(r["by_size"].values())]
    assert by_size and all(r["throughput_change_percent"] is not None for r in by_size)
    # the machine probed before and after each size's searches, and every change also given
    # against the machine's
    for size in SIZES:
        probes = results["probes"][str(size)]
        assert [p["when"] for p in probes] == ["before", "after"]
        assert all(p[name]["per_second"] > 0 and p[name]["errors"] == 0
                   for p in probes for name in ("health", "read"))
    assert all(r["change_against_machine_percent"] is not None for r in by_size)
    assert "against the machine" in markdown and "Read probe from" in markdown
    for heading in ("## Machine, versions, data", "## Data set-up",
                    "## Santong against the limits", "## Search", "## Search by data size",
                    "## Transactions", "## The raw limits", "## Load generator",
                    "## Validation cost", "## Memory", "## Soak"):
        assert heading in markdown
    assert "No failed requests in any scenario." in markdown
    # PostgreSQL's CPU during each run, by kind of process: its backends ran the statements
    for scenario in results["scenarios"]:
        split = [scenario[f"database_{kind}_cpu_percent"]
                 for kind in ("backends", "autovacuum", "background")]
        assert all(share >= 0 for share in split), scenario
    transactions = [s for s in results["scenarios"] if s["group"] == "transaction"]
    assert all(s["database_backends_cpu_percent"] > 0 for s in transactions)
    assert all("PostgreSQL backends" in line for line in markdown.splitlines()
               if " resources/s** (" in line) and transactions


def test_search_change_is_also_given_against_the_machine() -> None:
    """A search 30 % slower at the larger size while the read probe was 25 % slower: the
    data's own effect is a 6.7 % loss (0.70 / 0.75), within the 20 % allowed."""
    def search(patients: int, rate: float) -> dict:
        return {"group": "search", "name": "string: family", "clients": 16, "rate": rate,
                "patients": patients, "p50_us": 5000, "p95_us": 9000, "p99_us": 12000,
                "errors": 0, "completed": True}

    def probe(when: str, read: float) -> dict:
        return {"when": when, "health": {"per_second": 9000.0, "steal_percent": 0.0},
                "read": {"per_second": read, "steal_percent": 0.0}}

    results = {"meta": {"data": {"sizes": [10, 100], "patients": 10}}, "skipped": [],
               "scenarios": [search(10, 1000.0), search(100, 700.0)],
               "probes": {"10": [probe("before", 2100.0), probe("after", 1900.0)],
                          "100": [probe("before", 1400.0), probe("after", 1600.0)]}}
    [row] = bench_report.search_by_size(results)
    assert row["throughput_change_percent"] == -30.0 and row["change_met"] is False
    assert row["machine_change_percent"] == -25.0
    assert row["change_against_machine_percent"] == -6.7
    assert row["change_against_machine_met"] is True
    # without probes there is nothing to compare against
    del results["probes"]
    [row] = bench_report.search_by_size(results)
    assert row["change_against_machine_percent"] is None
    assert row["change_against_machine_met"] is None
