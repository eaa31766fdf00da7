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


def _find(results: dict[str, Any], group: str, name: str, clients: int,
          patients: int | None = None) -> dict[str, Any] | None:
    return next((s for s in results["scenarios"] if s["group"] == group and s["name"] == name
                 and s["clients"] == clients
                 and (patients is None or s.get("patients") == patients)), None)


def _latencies(x: dict[str, Any]) -> str:
    if not x.get("completed", True):
        return f"none completed in {x['seconds']:.0f} s"
    return f"{_ms(x['p50_us'])} / {_ms(x['p95_us'])} / {_ms(x['p99_us'])}"


def _mib(kib: float | None) -> str:
    return "—" if not kib else f"{kib / 1024:,.0f}"


def _sizes(results: dict[str, Any]) -> list[int]:
    return list(results["meta"]["data"].get("sizes") or [results["meta"]["data"]["patients"]])


def probe_rates(results: dict[str, Any], name: str) -> dict[str, float]:
    """The mean rate of probe `name` (health, read) around each size's searches, by size."""
    rates = {}
    for size, entries in results.get("probes", {}).items():
        values = [e[name]["per_second"] for e in entries if e.get(name)]
        if values:
            rates[size] = sum(values) / len(values)
    return rates


def machine_change(results: dict[str, Any]) -> float | None:
    """How much faster (+) or slower (-) the machine ran the read probe at the last size's
    searches than at the first's, in per cent (None without probes at both)."""
    sizes, rates = _sizes(results), probe_rates(results, "read")
    first, last = rates.get(str(sizes[0])), rates.get(str(sizes[-1]))
    if len(sizes) < 2 or not first or not last:  # no probe, or one that completed nothing
        return None
    return round(100 * (last - first) / first, 1)


def search_by_size(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each search (and client count) at every data size, the throughput change from the
    first size to the last (also against the machine's: see Bench.probe), and issue 3's
    targets at the last size."""
    sizes = _sizes(results)
    machine = machine_change(results)
    rows = []
    seen: list[tuple[str, int]] = []
    for x in results["scenarios"]:
        if x["group"] == "search" and (x["name"], x["clients"]) not in seen:
            seen.append((x["name"], x["clients"]))
    kinds = {s.name: s.kind for s in scenarios.SEARCHES}
    for name, clients in seen:
        at = {size: _find(results, "search", name, clients, size) for size in sizes}
        first, last = at[sizes[0]], at[sizes[-1]]
        change = (round(100 * (last["rate"] - first["rate"]) / first["rate"], 1)
                  if first and last and first["rate"] else None)
        p95_target = scenarios.SEARCH_P95_TARGET_MS.get(kinds.get(name, ""))
        # the change the data made, the machine's own change taken out
        adjusted = (round(100 * ((1 + change / 100) / (1 + machine / 100) - 1), 1)
                    if change is not None and machine is not None else None)
        missing = {size: next((x["reason"] for x in results["skipped"] if x["name"] == name
                               and x.get("patients") == size), "not run")
                   for size, x in at.items() if x is None}
        rows.append({
            "name": name, "kind": kinds.get(name), "clients": clients,
            "by_size": {str(size): ({"rate": x["rate"], "p50_us": x["p50_us"],
                                     "p95_us": x["p95_us"], "p99_us": x["p99_us"],
                                     "errors": x["errors"],
                                     "completed": x.get("completed", True)} if x else None)
                        for size, x in at.items()},
            "missing": {str(k): v for k, v in missing.items()},
            "throughput_change_percent": change,
            "machine_change_percent": machine,
            "change_against_machine_percent": adjusted,
            "p95_target_ms": p95_target,
            "p95_met": (last["completed"] and last["p95_us"] / 1000 < p95_target
                        if last and p95_target else False if p95_target else None),
            # the target is about slowing down as data grows: a rise is noise, not a miss
            "change_met": (change >= -100 * scenarios.SEARCH_THROUGHPUT_DRIFT
                           if change is not None and len(sizes) > 1 else None),
            "change_against_machine_met": (
                adjusted >= -100 * scenarios.SEARCH_THROUGHPUT_DRIFT
                if adjusted is not None else None),
        })
    return rows


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


def _setup_lines(results: dict[str, Any]) -> list[str]:
    setups = results.get("setup", {})
    if not setups:
        return []
    out = ["## Data set-up", "",
           "Bulk = bench/bulkload.py: the rows the server's PUT (update-as-create) of each "
           "resource writes — same validation, stored JSON, search index rows (with the custom "
           "SearchParameters the server stored at start-up) and history, checked equal by "
           "tests/test_bench_bulkload.py — written by binary COPY from several processes, "
           "secondary indexes rebuilt after; resources whose writes set off more (referral "
           "ServiceRequests and Tasks) then go through the server's own write path, in "
           "process. PUT = through the server's REST API, 16 clients. Either way followed by "
           "VACUUM ANALYZE. Times include generating the data.", "",
           "| Patients | Resources | Method | Processes | Seconds (COPY / indexes / through "
           "the server / VACUUM ANALYZE) | Resources/s | Database | Errors |",
           "|---:|---:|---|---:|---|---:|---:|---:|"]
    for size, x in setups.items():
        parts = " / ".join(str(x.get(k, "—")) for k in ("write_seconds", "index_seconds",
                                                         "server_seconds", "analyze_seconds"))
        out.append(f"| {int(size):,} | {x['resources']:,} | {x['method']} | "
                   f"{x.get('processes', '—')} | {x['seconds']} ({parts}) | "
                   f"**{_rate(x['per_second'])}** | "
                   f"{x.get('database_bytes', 0) / 2**30:.2f} GiB | {x['errors']} |")
    out.append("")
    failures = [f for x in setups.values() for f in x.get("failures", [])]
    if failures:
        out += ["Set-up failures (first ones):", ""] + [f"- {_cell(f)}" for f in
                                                        failures[:10]] + [""]
    return out


def _cpu_split(x: dict[str, Any]) -> str:
    """`; CPU: server …, PostgreSQL backends …` of a scenario, when the run measured it."""
    if "database_backends_cpu_percent" not in x:
        return ""
    return (f"; CPU: server {x.get('server_cpu_percent', '?')} %, PostgreSQL backends "
            f"{x['database_backends_cpu_percent']} %, autovacuum "
            f"{x['database_autovacuum_cpu_percent']} %, background "
            f"{x['database_background_cpu_percent']} %")


def _search_lines(results: dict[str, Any]) -> list[str]:
    sizes = _sizes(results)
    bare_read = _find(results, "bare", "read by id", 16)
    out = ["## Search", "",
           "First page (`_count` 20 where a query can match many), cycling over queries built "
           "from up to the sample's patients. The nearest limit is the bare app's read by id "
           f"at 16 clients ({_rate(bare_read['rate']) if bare_read else '—'} req/s): an "
           "indexed lookup by key over HTTP.", ""]
    for size in sizes:
        searches = [x for x in results["scenarios"] if x["group"] == "search"
                    and x.get("patients", size) == size]
        if len(sizes) > 1:
            out += [f"### {size:,} patients", ""]
        out += ["| Query | Clients | req/s | p50 / p95 / p99 ms | Errors | ÷ bare read |",
                "|---|---:|---:|---|---:|---:|"]
        for x in searches:
            out.append(f"| {_cell(x['name'])} | {x['clients']} | {_rate(x['rate'])} | "
                       f"{_latencies(x)} | {x['errors']} | "
                       f"{_ratio(x['rate'], bare_read['rate'] if bare_read else None)} |")
        for x in results["skipped"]:
            if x["group"] == "search" and x.get("patients", size) == size:
                out.append(f"| {_cell(x['name'])} | | skipped | {_cell(x['reason'])} | | |")
        out.append("")
    rows = search_by_size(results)
    if len(sizes) > 1 and rows:
        first, last = f"{sizes[0]:,}", f"{sizes[-1]:,}"
        drift = round(100 * scenarios.SEARCH_THROUGHPUT_DRIFT)
        out += ["## Search by data size", "",
                f"Issue 3's targets at {last} patients: token and string searches p95 < 20 "
                f"ms, a first page with `_include` p95 < 50 ms; throughput no more than {drift} % "
                f"lower at {last} than at {first} patients (a rise is the shared machine's "
                "noise, not a miss).", "", *_probe_lines(results, sizes),
                f"| Query | Clients | req/s at {first} | req/s at {last} | throughput change | "
                f"against the machine | p95 ms at {first} | p95 ms at {last} | p95 target | "
                "met? |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for row in rows:
            a, b = row["by_size"][str(sizes[0])], row["by_size"][str(sizes[-1])]
            change = row["throughput_change_percent"]
            target = row["p95_target_ms"]
            verdicts = []
            if row["p95_met"] is not None:
                verdicts.append("p95 yes" if row["p95_met"] else "p95 **no**")
            if row["change_met"] is not None:
                verdicts.append("throughput yes" if row["change_met"] else "throughput **no**")
            if row["change_against_machine_met"] is not None:
                verdicts.append("against the machine yes" if row["change_against_machine_met"]
                                else "against the machine **no**")
            adjusted = row["change_against_machine_percent"]
            verdicts += [f"at {int(k):,}: {_cell(v)}" for k, v in row["missing"].items()]
            out.append(
                f"| {_cell(row['name'])} | {row['clients']} | {_rate(a and a['rate'])} | "
                f"{_rate(b and b['rate'])} | {'—' if change is None else f'{change:+.0f} %'} | "
                f"{'—' if adjusted is None else f'{adjusted:+.0f} %'} | "
                f"{_ms(a['p95_us']) if a and a['completed'] else '—'} | "
                f"{_ms(b['p95_us']) if b and b['completed'] else '—'} | "
                f"{'—' if target is None else f'< {target:.0f}'} | "
                f"{', '.join(verdicts)} |")
        out.append("")
    if results.get("plans"):
        out += ["SQL and plans of one query of each search at each size (the server's "
                "`_explain`): `plans-<patients>.txt`.", ""]
    return out


def _probe_lines(results: dict[str, Any], sizes: list[int]) -> list[str]:
    """The machine probes around each size's searches, and what "against the machine" means."""
    probes = results.get("probes", {})
    if not probes:
        return []
    out = ["The machine's speed around each size's searches (Bench.probe: requests whose cost "
           "does not grow with the data, 16 clients, before and after the searches). The "
           "column *against the machine* is a search's throughput change divided by the read "
           "probe's, so a machine slower (or faster) during one size's searches does not pass "
           "for the data's effect; CPU steal is the time the hypervisor gave these cores to "
           "other machines.", "",
           "| Patients | `/healthz` req/s before / after | read by id req/s before / after "
           "| steal % (read) |", "|---:|---|---|---|"]
    for size in sizes:
        entries = {e["when"]: e for e in probes.get(str(size), [])}
        around = [entries.get("before", {}), entries.get("after", {})]
        rates = {name: " / ".join(_rate(e[name]["per_second"] if name in e else None)
                                  for e in around) for name in ("health", "read")}
        steal = " / ".join(str(e["read"]["steal_percent"]) if "read" in e else "—"
                           for e in around)
        out.append(f"| {size:,} | {rates['health']} | {rates['read']} | {steal} |")
    change = machine_change(results)
    if change is not None:
        out += ["", f"Read probe from {sizes[0]:,} to {sizes[-1]:,} patients: "
                f"**{change:+.1f} %**."]
    return [*out, ""]


def _memory_lines(results: dict[str, Any]) -> list[str]:
    memory = results.get("memory", {})
    out = ["## Memory", "",
           "Resident memory (RSS) of the Santong server's processes (uvicorn's supervisor and "
           "its workers: the processes column); peak = the largest process's high-water "
           "mark (VmHWM) over the server's life at that size. Target: < 300 MB with "
           "100,000 patients.", "",
           "| Patients | idle after start MiB | after set-up | after the scenarios | at the end | "
           "peak | processes |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for size, x in memory.get("sizes", {}).items():
        out.append(f"| {int(size):,} | {_mib(x.get('idle_rss_kib'))} | "
                   f"{_mib(x.get('loaded_rss_kib'))} | {_mib(x.get('after_scenarios_rss_kib'))}"
                   f" | {_mib(x.get('rss_kib'))} | **{_mib(x.get('peak_kib'))}** | "
                   f"{len(x.get('processes', [])) or '—'} |")
    bare = memory.get("bare", {})
    out += ["", f"Bare app: peak resident {_mib(bare.get('VmHWM'))} MiB." if bare else "", ""]
    soak = results.get("soak")
    if soak:
        growth = soak["growth_percent"]
        out += ["## Soak", "",
                f"{soak['seconds']:.0f} s of mixed traffic ({soak['mix']}), 16 clients, at "
                f"{soak['patients']:,} patients: {soak['requests']:,} requests, "
                f"{soak['errors']} errors; searches left out of the mix (taking over a "
                f"second at this size): {', '.join(soak.get('excluded_searches', [])) or 'none'}"
                f". The server's RSS every {soak['interval']:.0f} s; "
                "growth is measured from the sample after the first tenth of the soak (caches "
                "and pools warm) to the last. Target: ≤ 10 %.", "",
                f"- RSS: {_mib(soak['samples'][0]['rss_kib'])} MiB before, "
                f"{_mib(soak['baseline_rss_kib'])} MiB warm, {_mib(soak['final_rss_kib'])} MiB "
                f"at the end, {_mib(soak['max_rss_kib'])} MiB at most: growth "
                f"**{'—' if growth is None else f'{growth:+.1f} %'}**.", "",
                "| Seconds | req/s | p50 / p95 / p99 ms | RSS MiB | Errors |",
                "|---:|---:|---|---:|---:|"]
        for x in soak["samples"][1:]:
            out.append(f"| {x['seconds']:.0f} | {_rate(x['per_second'])} | {_ms(x['p50_us'])} /"
                       f" {_ms(x['p95_us'])} / {_ms(x['p99_us'])} | {x['rss_kib'] / 1024:.1f} | "
                       f"{x['errors']} |")
        out.append("")
    return out


def _markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    m, v, s, d = meta["machine"], meta["versions"], meta["settings"], meta["data"]
    sizes = _sizes(results)
    out = [f"# Santong benchmark — {meta['mode']} mode — {meta['date']}", ""]
    out += ["Every Santong figure is shown with the limit measured **in the same run, on the same "
            "machine and PostgreSQL, with the same load generator and concurrency**, and as a "
            "ratio to it (1.00 = as fast as the limit). The machines are shared and noisy: "
            "compare ratios, not absolute rates across runs.", ""]
    by_size = d.get("by_size") or {str(d["patients"]): {"resources": d["resources"]}}
    data_text = " and ".join(f"{int(k):,} patients ({x['resources']:,} resources)"
                             for k, x in by_size.items())
    load = meta.get("load")
    out += ["## Machine, versions, data", "",
            "| | |", "|---|---|",
            f"| Date (UTC) | {meta['date']} ({meta['seconds']} s run) |",
            f"| CPU | {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB |",
            f"| OS | {m['os']} |",
            f"| Santong | {v['santong']} ({v['commit']}) |",
            f"| Python / PostgreSQL | {v['python']} / {v['postgresql']} (embedded, pgserver "
            f"{v['pgserver']}; {v.get('postgresql_settings', 'default settings')}) |",
            f"| FastAPI / uvicorn / SQLAlchemy / asyncpg | {v['fastapi']} / {v['uvicorn']} / "
            f"{v['sqlalchemy']} / {v['asyncpg']} |",
            f"| Load generator | {v['load_generator']}, separate process |",
            f"| Data | {data_text}; seed {s['seed']} |",
            f"| Per scenario | {s['duration']} s of load after {s['warmup']} s warm-up, cycling "
            f"over up to {s['sample']} distinct resources/queries; server log level "
            f"{s['server_log_level']} |",
            f"| Server processes | {s.get('server_processes', 1)} for Santong and for the bare "
            "app alike (uvicorn workers) |"]
    if load:
        out.append(f"| Machine load average at the end | {' / '.join(f'{x:.2f}' for x in load)}"
                   " (1 / 5 / 15 min) |")
    out.append("")
    counts = ", ".join(f"{k} {n:,}" for k, n in d["counts"].items())
    out += [f"Resources by type at {sizes[0]:,} patients: {counts}.", ""]
    out += _setup_lines(results)

    out += ["## Santong against the limits", "",
            f"At {sizes[0]:,} patients. "
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
    out += _search_lines(results)

    out += ["## Transactions", "",
            "CPU during each run in % of one core (the machine has "
            f"{results.get('meta', {}).get('machine', {}).get('cores', '?')}): the server's "
            "processes; PostgreSQL's client backends (the server's statements), its autovacuum "
            "workers (with any other process that exited during the run) and its background "
            "processes (checkpointer, WAL writer, …). Autovacuum vacuums and analyzes a table "
            "after enough of its rows changed, here the Bundles' own inserts: it competes for "
            "the same cores.", ""]
    transactions = [x for x in results["scenarios"] if x["group"] == "transaction"]
    executemany = results.get("limits", {}).get("executemany")
    for x in transactions:
        out.append(f"- {x['name']}, {x['clients']} clients: **{_rate(x['rate'])} resources/s** "
                   f"({x['per_second']} Bundles/s, p50 {_ms(x['p50_us'])} ms, p99 "
                   f"{_ms(x['p99_us'])} ms, {x['errors']} errors); ÷ asyncpg executemany: "
                   f"{_ratio(x['rate'], executemany['per_second'] if executemany else None)}"
                   + _cpu_split(x))
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
            "| Group | Scenario | Patients | Clients | load generator CPU % | server CPU % | "
            "machine busy % |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for x in results["scenarios"]:
        out.append(f"| {x['group']} | {_cell(x['name'])} | {x.get('patients', 0):,} | "
                   f"{x['clients']} | {x['loadgen_cpu_percent']} "
                   f"| {x.get('server_cpu_percent', '—')} | {x['machine_busy_percent']} |")
    out.append("")

    validation = results.get("validation")
    if validation:
        with_profile = any("profile_us" in row for row in validation["rows"])
        out += ["## Validation cost per resource (in process)", "",
                f"Structural R4 validation; with a profile: {validation['profile']}.", "",
                "| Type | Mean JSON bytes | structural µs | per second (one core) |"
                + (" with profile µs | per second |" if with_profile else ""),
                "|---|---:|---:|---:|" + ("---:|---:|" if with_profile else "")]
        for row in validation["rows"]:
            line = (f"| {row['type']} | {row['bytes']:,} | {row['structural_us']} | "
                    f"{1e6 / row['structural_us']:,.0f} |")
            if with_profile:
                profile = row.get("profile_us")
                line += (" — | — |" if profile is None else
                         " < 1 (no profile for the type) | — |" if profile < 1 else
                         f" {profile} | {1e6 / profile:,.0f} |")
            out.append(line)
        out.append("")

    out += _memory_lines(results)
    soak_errors = (results.get("soak") or {}).get("errors", 0)
    setup_errors = sum(x["errors"] for x in results.get("setup", {}).values())
    errors = sum(x["errors"] for x in results["scenarios"]) + soak_errors + setup_errors
    out += ["## Errors", "", f"{errors} failed requests or set-up writes in all." if errors else
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
                                                                   "transaction")
                and s.get("patients") == _sizes(results)[0]]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    names = [f"{s['name'][:28]}\nc={s['clients']}" for s in measured]
    for key, label in (("p50_us", "p50"), ("p95_us", "p95"), ("p99_us", "p99")):
        ax.plot(range(len(measured)), [s[key] / 1000 for s in measured], marker="o", label=label)
    ax.set_xticks(range(len(measured)), names, fontsize=6, rotation=30, ha="right")
    ax.set_ylabel("latency, ms")
    ax.set_yscale("log")
    ax.set_title(f"Santong latency percentiles by scenario, {_sizes(results)[0]:,} patients")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "latency.png", dpi=110)
    plt.close(fig)
    charts = ["throughput.png", "latency.png"]
    if len(_sizes(results)) > 1 and _search_by_size_chart(plt, results, out_dir):
        charts.append("search_by_size.png")
    if results.get("soak"):
        _soak_chart(plt, results["soak"], out_dir)
        charts.append("soak.png")
    return charts


def _search_by_size_chart(plt: Any, results: dict[str, Any], out_dir: Path) -> bool:
    """req/s and p95 of each search (16 clients) at each data size."""
    sizes = _sizes(results)
    rows = [r for r in search_by_size(results) if r["clients"] == max(scenarios.SEARCH_CLIENTS)]
    if not rows:
        return False
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    width = 0.8 / len(sizes)
    x = range(len(rows))
    for i, size in enumerate(sizes):
        at = [r["by_size"].get(str(size)) for r in rows]
        offsets = [j - 0.4 + width * (i + 0.5) for j in x]
        top.bar(offsets, [a["rate"] if a else 0 for a in at], width, label=f"{size:,} patients")
        bottom.bar(offsets, [a["p95_us"] / 1000 if a else 0 for a in at], width,
                   label=f"{size:,} patients")
    for limit, style in ((20, "--"), (50, ":")):
        bottom.axhline(limit, color="grey", linestyle=style, linewidth=1)
        bottom.text(len(rows) - 0.5, limit, f" {limit} ms", va="bottom", ha="right",
                    fontsize=7, color="grey")
    top.set_ylabel("req/s (16 clients)")
    top.set_title("Search by data size: throughput and p95 of the first page")
    top.legend(fontsize=8)
    bottom.set_ylabel("p95 latency, ms")
    bottom.set_yscale("log")
    bottom.set_xticks(list(x), [r["name"].split(":")[0] + ":\n" + r["name"].split(":", 1)[-1]
                                .strip()[:34] for r in rows], fontsize=6, rotation=30,
                      ha="right")
    fig.tight_layout()
    fig.savefig(out_dir / "search_by_size.png", dpi=110)
    plt.close(fig)
    return True


def _soak_chart(plt: Any, soak: dict[str, Any], out_dir: Path) -> None:
    samples = soak["samples"]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot([x["seconds"] for x in samples], [x["rss_kib"] / 1024 for x in samples],
            marker="o", color="tab:blue", label="server RSS, MiB")
    ax.set_xlabel("seconds of mixed traffic")
    ax.set_ylabel("RSS, MiB")
    ax.set_ylim(bottom=0)
    rate = ax.twinx()
    rate.plot([x["seconds"] for x in samples[1:]], [x["per_second"] for x in samples[1:]],
              color="tab:orange", label="req/s")
    rate.set_ylabel("req/s")
    rate.set_ylim(bottom=0)
    ax.set_title(f"Soak at {soak['patients']:,} patients: memory and throughput "
                 f"(growth {soak['growth_percent']} %)")
    fig.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "soak.png", dpi=110)
    plt.close(fig)


def write(results: dict[str, Any], out_dir: Path) -> None:
    for x in results["scenarios"]:  # reports of earlier runs lack it
        x.setdefault("completed", x["requests"] > 0)
    results["comparisons"] = comparisons(results)
    results["search_by_size"] = search_by_size(results)
    for size, plans in results.get("plans", {}).items():
        (out_dir / f"plans-{size}.txt").write_text("\n\n".join(
            f"== {name}\n{plan}" for name, plan in plans.items()) + "\n")
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
