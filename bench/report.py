"""The benchmark report: report.json (everything), report.md (for people), optional PNG charts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import scenarios


def _ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _ratio(value: float | None, limit: float | None) -> str:
    if value is None or not limit:
        return "—"
    return f"{value / limit:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _find(results: dict[str, Any], group: str, name: str, clients: int) -> dict[str, Any] | None:
    return next((s for s in results["scenarios"] if s["group"] == group and s["name"] == name
                 and s["clients"] == clients), None)


def comparisons(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each Santong CRUD figure with the matching limits and the ratios to them."""
    rows = []
    for name, _, raw_op in scenarios.CRUD:
        for clients in scenarios.CLIENTS:
            mine = _find(results, "santong", name, clients)
            if mine is None:
                continue
            bare = _find(results, "bare", name, clients)
            raw = results.get("limits", {}).get(f"{raw_op}/{clients}")
            rows.append({
                "scenario": name, "clients": clients, "rate": mine["rate"],
                "p50_us": mine["p50_us"], "p95_us": mine["p95_us"], "p99_us": mine["p99_us"],
                "errors": mine["errors"],
                "bare_rate": bare["rate"] if bare else None,
                "bare_p50_us": bare["p50_us"] if bare else None,
                "ratio_to_bare": round(mine["rate"] / bare["rate"], 3) if bare else None,
                "asyncpg_rate": raw["per_second"] if raw else None,
                "ratio_to_asyncpg": round(mine["rate"] / raw["per_second"], 3) if raw else None,
                "target": scenarios.TARGETS.get((name, clients), ("", None))[0],
            })
    return rows


def _markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    m, v, s, d = meta["machine"], meta["versions"], meta["settings"], meta["data"]
    out = [f"# Santong benchmark — {meta['mode']} mode — {meta['date']}", ""]
    out += ["Every Santong figure is shown with the limit measured **in the same run, on the same "
            "machine and PostgreSQL, with the same load generator and concurrency**, and as a "
            "ratio to it (1.00 = as fast as the limit). The machines are shared and noisy: "
            "compare ratios, not absolute rates across runs.", ""]
    out += ["## Machine, versions, data", "",
            "| | |", "|---|---|",
            f"| Date (UTC) | {meta['date']} ({meta['seconds']} s run) |",
            f"| CPU | {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB |",
            f"| OS | {m['os']} |",
            f"| Santong | {v['santong']} ({v['commit']}) |",
            f"| Python / PostgreSQL | {v['python']} / {v['postgresql']} (embedded, pgserver "
            f"{v['pgserver']}, default settings) |",
            f"| FastAPI / uvicorn / SQLAlchemy / asyncpg | {v['fastapi']} / {v['uvicorn']} / "
            f"{v['sqlalchemy']} / {v['asyncpg']} |",
            f"| Load generator | {v['load_generator']}, separate process |",
            f"| Data | {d['patients']:,} patients, {d['resources']:,} resources "
            f"(generated in {d['generate_seconds']} s) |",
            f"| Per scenario | {s['duration']} s of load after {s['warmup']} s warm-up, cycling "
            f"over up to {s['sample']} distinct resources/queries; server log level "
            f"{s['server_log_level']} |", ""]
    counts = ", ".join(f"{k} {n:,}" for k, n in d["counts"].items())
    out += [f"Resources by type: {counts}.", ""]
    load = results.get("load")
    if load:
        out += [f"Loading: {load['resources']:,} resources by PUT (update-as-create) with 16 "
                f"clients in {load['seconds']} s = **{load['per_second']:,.0f} resources/s**, "
                f"{load['errors']} errors.", ""]

    out += ["## Santong against the limits", "",
            "Bare = a FastAPI + asyncpg app with no validation, versioning or history "
            "(bench/bare_app.py), same uvicorn setup. asyncpg = the same statement from asyncpg "
            "alone, one row per commit, as many connections as clients.", "",
            "| Scenario | Clients | Santong req/s | p50 / p95 / p99 ms | Errors | Bare req/s | "
            "Santong ÷ bare | asyncpg ops/s | Santong ÷ asyncpg | Target |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for row in comparisons(results):
        out.append(
            f"| {row['scenario']} | {row['clients']} | {_rate(row['rate'])} | "
            f"{_ms(row['p50_us'])} / {_ms(row['p95_us'])} / {_ms(row['p99_us'])} | "
            f"{row['errors']} | {_rate(row['bare_rate'])} | "
            f"{_ratio(row['rate'], row['bare_rate'])} | {_rate(row['asyncpg_rate'])} | "
            f"{_ratio(row['rate'], row['asyncpg_rate'])} | {row['target']} |")
    out.append("")

    searches = [x for x in results["scenarios"] if x["group"] == "search"]
    bare_read = _find(results, "bare", "read by id", 16)
    out += ["## Search", "",
            "First page (`_count` 20 where a query can match many). The nearest limit is the "
            f"bare app's read by id at 16 clients ({_rate(bare_read['rate']) if bare_read else '—'}"
            " req/s): an indexed lookup by key over HTTP.", "",
            "| Query | Clients | req/s | p50 / p95 / p99 ms | Errors | ÷ bare read |",
            "|---|---:|---:|---|---:|---:|"]
    for x in searches:
        out.append(f"| {_cell(x['name'])} | {x['clients']} | {_rate(x['rate'])} | "
                   f"{_ms(x['p50_us'])} / {_ms(x['p95_us'])} / {_ms(x['p99_us'])} | "
                   f"{x['errors']} | "
                   f"{_ratio(x['rate'], bare_read['rate'] if bare_read else None)} |")
    for x in results["skipped"]:
        if x["group"] == "search":
            out.append(f"| {_cell(x['name'])} | | skipped | {_cell(x['reason'])} | | |")
    out.append("")

    out += ["## Transactions", ""]
    transactions = [x for x in results["scenarios"] if x["group"] == "transaction"]
    executemany = results.get("limits", {}).get("executemany")
    for x in transactions:
        out.append(f"- {x['name']}, {x['clients']} clients: **{_rate(x['rate'])} resources/s** "
                   f"({x['per_second']} Bundles/s, p50 {_ms(x['p50_us'])} ms, p99 "
                   f"{_ms(x['p99_us'])} ms, {x['errors']} errors); ÷ asyncpg executemany: "
                   f"{_ratio(x['rate'], executemany['per_second'] if executemany else None)}")
    for x in results["skipped"]:
        if x["group"] == "transaction":
            out.append(f"- {x['name']}: skipped — {x['reason']}")
    out.append("")

    limits = results.get("limits", {})
    out += ["## The raw limits (asyncpg on the same PostgreSQL, same JSON, text column)", "",
            "| Operation | Connections | rows/s | p50 / p95 / p99 ms |", "|---|---:|---:|---|"]
    for key, value in limits.items():
        op, _, clients = key.partition("/")
        label = {"executemany": "executemany, batches of 1,000, one commit each"}.get(
            op, f"{op}, one statement per round trip (autocommit)")
        out.append(f"| {label} | {clients or 1} | {_rate(value['per_second'])} | "
                   f"{_ms(value['p50_us'])} / {_ms(value['p95_us'])} / {_ms(value['p99_us'])} |")
    out.append("")
    bare_rows = [x for x in results["scenarios"] if x["group"] == "bare"]
    out += ["Bare FastAPI + asyncpg app:", "",
            "| Scenario | Clients | req/s | p50 / p95 / p99 ms | Errors |",
            "|---|---:|---:|---|---:|"]
    for x in bare_rows:
        out.append(f"| {x['name']} | {x['clients']} | {_rate(x['rate'])} | {_ms(x['p50_us'])} / "
                   f"{_ms(x['p95_us'])} / {_ms(x['p99_us'])} | {x['errors']} |")
    out.append("")

    out += ["## Load generator", "",
            "Both load generators against the bare app's `GET /ping` (no database), 16 "
            "connections: the load generator must cost little CPU per request, or it takes the "
            "server's core on a 2-core machine.", "",
            "| Load generator | req/s | its CPU % | server CPU % | CPU µs per request |",
            "|---|---:|---:|---:|---:|"]
    for x in results.get("calibration", []):
        per_request = (x["loadgen_cpu_percent"] / 100 * x["seconds"] / max(1, x["requests"])
                       * 1e6)
        out.append(f"| {x['loadgen']} | {_rate(x['per_second'])} | {x['loadgen_cpu_percent']} "
                   f"| {x['server_cpu_percent']} | {per_request:.1f} |")
    out += ["", "Per scenario, the load generator's and server's CPU (100 % = one core):", "",
            "| Group | Scenario | Clients | load generator CPU % | server CPU % | machine busy % |",
            "|---|---|---:|---:|---:|---:|"]
    for x in results["scenarios"]:
        out.append(f"| {x['group']} | {_cell(x['name'])} | {x['clients']} | "
                   f"{x['loadgen_cpu_percent']} "
                   f"| {x.get('server_cpu_percent', '—')} | {x['machine_busy_percent']} |")
    out.append("")

    validation = results.get("validation")
    if validation:
        out += ["## Validation cost per resource (in process, structural R4 validation)", "",
                f"With a profile: {validation['profile']}.", "",
                "| Type | Mean JSON bytes | µs per resource | per second (one core) |",
                "|---|---:|---:|---:|"]
        for row in validation["rows"]:
            out.append(f"| {row['type']} | {row['bytes']:,} | {row['structural_us']} | "
                       f"{1e6 / row['structural_us']:,.0f} |")
        out.append("")

    memory = results.get("memory", {})
    out += ["## Memory", ""]
    santong = memory.get("santong", {})
    if santong:
        out.append(f"- Santong server process: peak resident **{santong.get('VmHWM', 0) / 1024:.0f}"
                   f" MiB** (idle after start {memory.get('santong_idle_rss_kib', 0) / 1024:.0f}"
                   f" MiB, after loading {memory.get('santong_loaded_rss_kib', 0) / 1024:.0f} MiB, "
                   f"at the end {santong.get('VmRSS', 0) / 1024:.0f} MiB); one process (1 uvicorn "
                   "worker). Target: < 300 MB with 100,000 patients.")
    bare = memory.get("bare", {})
    if bare:
        out.append(f"- Bare app: peak resident {bare.get('VmHWM', 0) / 1024:.0f} MiB.")
    out.append("")
    errors = sum(x["errors"] for x in results["scenarios"]) + (load or {}).get("errors", 0)
    out += ["## Errors", "", f"{errors} failed requests in all scenarios." if errors else
            "No failed requests in any scenario.", ""]
    if results.get("profiles"):
        out += ["## Profiles", ""] + [f"- {k}: `{name}`" for k, name in
                                      results["profiles"].items()] + [""]
    if results.get("charts"):
        out += ["## Charts", ""] + [f"![{c}]({c})" for c in results["charts"]] + [""]
    return "\n".join(out)


def _charts(results: dict[str, Any], out_dir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = comparisons(results)
    if not rows:
        return []
    labels = [f"{r['scenario']}\n{r['clients']} client{'s' if r['clients'] > 1 else ''}"
              for r in rows]
    x = range(len(rows))
    width = 0.27
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar([i - width for i in x], [r["rate"] for r in rows], width, label="Santong")
    ax.bar(list(x), [r["bare_rate"] or 0 for r in rows], width, label="bare FastAPI+asyncpg")
    ax.bar([i + width for i in x], [r["asyncpg_rate"] or 0 for r in rows], width,
           label="asyncpg alone")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("requests (rows) per second")
    ax.set_title(f"Throughput — {results['meta']['data']['patients']:,} patients, "
                 f"{results['meta']['date'][:10]}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=110)
    plt.close(fig)
    measured = [s for s in results["scenarios"] if s["group"] in ("santong", "search",
                                                                   "transaction")]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    names = [f"{s['name'][:28]}\nc={s['clients']}" for s in measured]
    for key, label in (("p50_us", "p50"), ("p95_us", "p95"), ("p99_us", "p99")):
        ax.plot(range(len(measured)), [s[key] / 1000 for s in measured], marker="o", label=label)
    ax.set_xticks(range(len(measured)), names, fontsize=6, rotation=30, ha="right")
    ax.set_ylabel("latency, ms")
    ax.set_yscale("log")
    ax.set_title("Santong latency percentiles by scenario")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "latency.png", dpi=110)
    plt.close(fig)
    return ["throughput.png", "latency.png"]


def write(results: dict[str, Any], out_dir: Path) -> None:
    results["comparisons"] = comparisons(results)
    results["charts"] = _charts(results, out_dir)
    (out_dir / "report.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    (out_dir / "report.md").write_text(_markdown(results))


def summarise_profile(collapsed: str, top: int = 25) -> str:
    """Top functions by own and by inclusive samples, from py-spy's collapsed-stack output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "Own time:"]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "Inclusive time:"]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "Inclusive time, Santong's own functions:"]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common()
              if "santong/" in frame][:40]
    return "\n".join(lines) + "\n"
