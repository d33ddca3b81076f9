"""The benchmark's figures: medians, ratios and the lines `balances bench` prints."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from benchmarks.common import AS_OF, LEDGER_ENDPOINTS, PAGE_ROWS, PHASE_ORDER, SEED

RSS_TARGET_MB = 300
RSS_TARGET_SIZE = "100,000 accounts / ~1M ledger rows"
AGING_RATIO_TARGET = 1.5
WORK_RATIO_TARGET = 1.5
BARE_LOOP = ("requests + json.loads for each page's length, pages loaded into DuckDB "
             "by read_json with typed columns in batches of 50; no validation")


def _s(seconds: float) -> str:
    """Seconds with a precision that suits their size."""
    if seconds >= 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds:.3f} s"


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def _range(runs: list[dict[str, Any]]) -> str:
    values = [run["wall_seconds"] for run in runs]
    return f", {_s(min(values))} to {_s(max(values))}" if len(values) > 1 else ""


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    first, _, third = statistics.quantiles(values, n=4, method="inclusive")
    return first, third


def _summarize(accounts: int, repeat: int, measured: dict[str, Any]) -> dict[str, Any]:
    """The aging_report figures. Sync work is the median over rounds of each round's sync
    minus the same round's empty sync (pairs, so that drift between rounds cancels)."""
    setup, baselines, syncs = measured["setup"], measured["baselines"], measured["syncs"]
    empties = measured["empty_syncs"]
    in_process_setup = setup["ledger_seconds"] + setup["aging_seconds"]
    baseline_wall = _median(baselines, "wall_seconds")
    sync_wall = _median(syncs, "wall_seconds")
    seen = {name for run in syncs for name in run["phases"]}
    phase_names = [name for name in PHASE_ORDER if name in seen]
    phases = {
        name: statistics.median(run["phases"].get(name, 0.0) for run in syncs)
        for name in phase_names
    }
    empty_wall = _median(empties, "wall_seconds")
    work = [sync["wall_seconds"] - empty["wall_seconds"]
            for sync, empty in zip(syncs, empties, strict=True)]
    sync_work = statistics.median(work)
    baseline_rss = measured["baseline_own_process"]["peak_rss_mb"]
    first = measured["first_sync"]
    sync_rss = first["peak_rss_mb"]
    return {
        "accounts": accounts,
        "repeat": repeat,
        "rounds": len(work),
        "as_of": AS_OF.isoformat(),
        "seed": SEED,
        "ledger_rows": sum(setup["ledger_rows"].values()),
        "aging_rows": setup["aging_rows"],
        "setup_seconds": in_process_setup,
        "warmup_seconds": measured["warmup_seconds"],
        "warmup_ratio_to_setup": measured["warmup_seconds"] / in_process_setup,
        "baseline_wall_seconds": baseline_wall,
        "baseline_peak_rss_mb": baseline_rss,
        "first_sync_wall_seconds": first["wall_seconds"],
        "sync_wall_seconds": sync_wall,
        "sync_peak_rss_mb": sync_rss,
        "rounds_peak_rss_mb": measured["rounds_peak_rss_mb"],
        "sync_ratio_to_baseline": sync_wall / baseline_wall,
        "empty_sync_wall_seconds": empty_wall,
        "sync_work_seconds": sync_work,
        "sync_work_quartiles_seconds": list(_quartiles(work)),
        "sync_work_ratio_to_baseline": sync_work / baseline_wall,
        "sync_rss_ratio_to_baseline": sync_rss / baseline_rss,
        "sync_phases_seconds": phases,
        "extract_ratio_to_baseline": phases["extract"] / baseline_wall
        if "extract" in phases else None,
        "publish_share_of_sync": phases["publish"] / sync_wall if "publish" in phases else None,
    }


def _header_lines(
    machine: dict[str, Any], accounts: int, mode: str, repeat: int, ledger_as_of: date | None
) -> list[str]:
    dates = []
    if mode in ("aging_report", "both"):
        dates.append(f"{AS_OF.isoformat()} (aging_report)")
    if ledger_as_of is not None:
        dates.append(f"{ledger_as_of.isoformat()} (ledger)")
    return [
        f"balances bench: {accounts:,} accounts, mode {mode}, as of {' and '.join(dates)}, "
        f"repeat {repeat}",
        f"machine: {machine['cpu_model']}; {machine['cores_logical']} cores "
        f"({machine['cores_physical']} physical); {machine['ram_gb']:.1f} GiB RAM; "
        f"{machine['os']}; python {machine['python']}; duckdb {machine['duckdb']}; "
        f"dagster {machine['dagster']}",
    ]


def _lines(measured: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    setup, baselines, syncs = measured["setup"], measured["baselines"], measured["syncs"]
    accounts, rounds = summary["accounts"], summary["rounds"]
    tables = ", ".join(f"{name} {count:,}" for name, count in setup["ledger_rows"].items())
    sync, baseline, first = syncs[-1], baselines[-1], measured["first_sync"]
    base_wall, sync_wall = summary["baseline_wall_seconds"], summary["sync_wall_seconds"]
    low, high = summary["sync_work_quartiles_seconds"]
    in_rounds = f"median of {rounds} rounds in one warm process"
    return [
        f"data: 1 practice, {accounts:,} accounts (seed {SEED}); ledger "
        f"{summary['ledger_rows']:,} rows ({tables}); aging report {setup['aging_rows']:,} "
        f"guarantor rows, {sync['pages']:,} pages of {PAGE_ROWS}",
        f"simulator setup {accounts:,} accounts (not part of the sync): ledger "
        f"{_s(setup['ledger_seconds'])}, aging report {_s(setup['aging_seconds'])} "
        f"(separate process, peak RSS {setup['peak_rss_mb']:.0f} MB); server warm-up request "
        f"{_s(summary['warmup_seconds'])} → ratio {summary['warmup_ratio_to_setup']:.2f} "
        f"to in-process setup",
        f"baseline bare loop {baseline['rows']:,} rows ({BARE_LOOP}): {_s(base_wall)} wall "
        f"({in_rounds}{_range(baselines)}), "
        f"{baseline['rows'] / base_wall:,.0f} rows/s, {baseline['requests']:,} requests, "
        f"{baseline['bytes'] / 1024**2:.2f} MB received, peak RSS "
        f"{summary['baseline_peak_rss_mb']:.0f} MB (a process of its own)",
        f"first sync {accounts:,} accounts (aging_report, a new process and BALANCES_HOME): "
        f"{_s(first['wall_seconds'])} wall, imports {_s(first['import_seconds'])}, peak RSS "
        f"{summary['sync_peak_rss_mb']:.0f} MB → ratio "
        f"{first['wall_seconds'] / base_wall:.2f} to the bare loop",
        f"sync {accounts:,} accounts (aging_report): {_s(sync_wall)} wall "
        f"({in_rounds}{_range(syncs)}), {accounts / sync_wall:,.0f} accounts/s, "
        f"{sync['rows_extracted'] / sync_wall:,.0f} rows/s ({sync['rows_extracted']:,} rows, "
        f"{sync['rows_rejected']:,} rejected, {sync['accounts']:,} balances), "
        f"{sync['requests']:,} requests, {sync['retries']:,} retries; baseline bare loop "
        f"{_s(base_wall)} → ratio {summary['sync_ratio_to_baseline']:.2f}",
        f"sync work {accounts:,} accounts (aging_report): {_s(summary['sync_work_seconds'])} "
        f"(median over {rounds} rounds of the sync minus the same round's empty-practice "
        f"sync, quartiles {_s(low)} to {_s(high)}; the empty practice's sync "
        f"{_s(summary['empty_sync_wall_seconds'])}); baseline bare loop {_s(base_wall)} → "
        f"ratio {summary['sync_work_ratio_to_baseline']:.2f} (target ≤ {WORK_RATIO_TARGET})",
        f"sync memory: peak RSS {summary['sync_peak_rss_mb']:.0f} MB (the first sync, a "
        f"process of its own; target < {RSS_TARGET_MB} MB), after imports "
        f"{first['rss_after_imports_mb']:.0f} MB; {summary['rounds_peak_rss_mb']:.0f} MB "
        f"after {3 * rounds + 4} syncs and bare loops in one process; baseline peak RSS "
        f"{summary['baseline_peak_rss_mb']:.0f} MB → ratio "
        f"{summary['sync_rss_ratio_to_baseline']:.2f}",
    ] + _phase_lines(summary, sync)


def _phase_lines(summary: dict[str, Any], sync: dict[str, Any]) -> list[str]:
    lines = []
    sync_wall = summary["sync_wall_seconds"]
    phases = summary["sync_phases_seconds"]
    if phases:
        other = sync_wall - sum(phases.values())
        parts = ", ".join(f"{name} {_s(seconds)}" for name, seconds in phases.items())
        extract = summary["extract_ratio_to_baseline"]
        vs_baseline = f"; extract → ratio {extract:.2f} to the bare loop" if extract else ""
        lines.append(f"sync phases: {parts}, other {_s(other)}{vs_baseline}")
    if summary["publish_share_of_sync"] is not None:
        snapshot = sync["snapshot_bytes"]
        size = f", snapshot {snapshot / 1024**2:.2f} MB" if snapshot is not None else ""
        lines.append(
            f"publish: {_s(phases['publish'])} → ratio "
            f"{summary['publish_share_of_sync']:.3f} of the sync wall{size}"
        )
    return lines


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{name}_"))
        else:
            flat[name] = item
    return flat


def _aging_figures(result: dict[str, Any]) -> dict[str, float | None]:
    """Time, baseline, ratio and rows out of `ledger_bench.run()`'s dict (`transform_s`,
    `baseline_s`, `ratio`, `rows`), tolerating other spellings of those keys."""
    numbers = {
        key.lower(): float(value) for key, value in _flatten(result).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }

    def timing(key: str) -> bool:
        return "second" in key or key.endswith(("_s", "_time", "time"))

    def first(names: Sequence[str], fallback: Callable[[str], bool]) -> float | None:
        for name in names:
            if name in numbers:
                return numbers[name]
        return next((value for key, value in numbers.items() if fallback(key)), None)

    baseline = first(("baseline_seconds", "baseline"),
                     lambda key: "baseline" in key and timing(key))
    seconds = first(
        ("transform_s", "transform_seconds", "seconds", "sql_seconds", "sql_s", "aging_seconds",
         "aging_s", "pipeline_seconds", "pipeline_s", "project_seconds", "ours_seconds"),
        lambda key: timing(key) and not any(
            word in key for word in ("baseline", "ratio", "generat", "setup", "load")
        ),
    )
    ratio = first(("ratio", "ratio_to_baseline"), lambda key: "ratio" in key)
    if ratio is None and seconds is not None and baseline:
        ratio = seconds / baseline
    rows = first(("rows", "ledger_rows"), lambda key: key.endswith("rows"))
    return {"seconds": seconds, "baseline": baseline, "ratio": ratio, "rows": rows}


def _ledger_lines(accounts: int, ledger: dict[str, Any]) -> list[str]:
    full, incremental, baseline = ledger["full"], ledger["incremental"], ledger["baseline"]
    changes = ledger["changes"]
    count = sum(changes["tables"].values())
    rows = full["rows_extracted"]
    before = sum(full["ledger_tables"].values())
    after = sum(incremental["ledger_tables"].values())
    tables = ", ".join(f"{name} {size:,}" for name, size in full["ledger_tables"].items())
    size = f"{accounts:,} accounts, {before:,} ledger rows"
    full_wall, base_wall = full["wall_seconds"], baseline["wall_seconds"]
    inc_wall = incremental["wall_seconds"]
    empty_wall = ledger["empty"]["wall_seconds"]
    full_rss, base_rss = full["peak_rss_mb"], baseline["peak_rss_mb"]
    full_requests, inc_requests = full["requests"], incremental["requests"]

    def phases(run: dict[str, Any]) -> str:
        return ", ".join(f"{name} {_s(run['phases'][name])}" for name in PHASE_ORDER
                         if name in run["phases"])

    lines = [
        f"ledger data: 1 practice, {accounts:,} accounts (seed {SEED}), as of "
        f"{ledger['as_of']} (BALANCES_AS_OF fixed, sync.frequency hourly); ledger "
        f"{before:,} rows ({tables}); simulator warm-up request "
        f"{_s(ledger['warmup_seconds'])} (not part of the sync)",
        f"ledger baseline bare loop {baseline['rows']:,} rows of {len(LEDGER_ENDPOINTS)} "
        f"tables through ShortQuery, the connector's SQL ({BARE_LOOP}; {size}): "
        f"{_s(base_wall)} wall, "
        f"{baseline['rows'] / base_wall:,.0f} rows/s, {baseline['requests']:,} requests, "
        f"{baseline['bytes'] / 1024**2:.2f} MB received, peak RSS {base_rss:.0f} MB",
        f"ledger full sync {accounts:,} accounts: {_s(full_wall)} wall ({phases(full)}), "
        f"{accounts / full_wall:,.0f} accounts/s, {rows / full_wall:,.0f} rows/s ({rows:,} "
        f"ledger rows extracted, {full['rows_rejected']:,} rejected, {full['accounts']:,} "
        f"balances), {full_requests:,} requests, {full['retries']:,} retries, peak RSS "
        f"{full_rss:.0f} MB; baseline bare loop {_s(base_wall)} → ratio "
        f"{full_wall / base_wall:.2f}",
        f"ledger full sync work {accounts:,} accounts: {_s(full_wall - empty_wall)} (the sync "
        f"{_s(full_wall)} minus an empty practice's {_s(empty_wall)}); baseline bare loop "
        f"{_s(base_wall)} → ratio {(full_wall - empty_wall) / base_wall:.2f} (target ≤ "
        f"{WORK_RATIO_TARGET})",
        f"ledger full sync memory ({size}): peak RSS {full_rss:.0f} MB (target < "
        f"{RSS_TARGET_MB} MB at {RSS_TARGET_SIZE}) → ratio {full_rss / RSS_TARGET_MB:.2f} of "
        f"the target; after imports {full['rss_after_imports_mb']:.0f} MB; bare loop "
        f"peak RSS {base_rss:.0f} MB → ratio {full_rss / base_rss:.2f}",
        f"ledger changes ({size}): {count} rows added through POST /_sim/rows "
        f"({changes['tables']['paysplits']} paysplits, {changes['tables']['adjustments']} "
        f"adjustments on {changes['patients']} existing patients); ledger {before:,} → "
        f"{after:,} rows → ratio {after / before:.6f}",
        f"ledger incremental sync {accounts:,} accounts ({count} rows changed): "
        f"{_s(inc_wall)} wall ({phases(incremental)}), {incremental['rows_extracted']:,} rows "
        f"extracted, {inc_requests:,} requests, {incremental['retries']:,} retries, peak RSS "
        f"{incremental['peak_rss_mb']:.0f} MB; full sync {_s(full_wall)} → ratio "
        f"{inc_wall / full_wall:.3f}",
        f"incremental requests: {inc_requests:,} vs full: {full_requests:,} (ratio "
        f"{inc_requests / full_requests:.4f}); {size}, {count} rows changed",
    ]
    aging, requested = ledger["aging"], ledger["aging_rows_requested"]
    if "skipped" in aging:
        lines.append(
            f"ledger aging transform {requested:,} ledger rows: skipped ({aging['skipped']}); "
            f"target < {AGING_RATIO_TARGET}x the hand-written DuckDB baseline"
        )
        return lines
    figures = _aging_figures(aging["result"])
    aged = int(figures["rows"]) if figures["rows"] is not None else requested
    if figures["seconds"] is None or figures["baseline"] is None or figures["ratio"] is None:
        raw = ", ".join(f"{key} {value}" for key, value in _flatten(aging["result"]).items())
        lines.append(
            f"ledger aging transform {aged:,} ledger rows (ledger_bench.run, as returned): "
            f"{raw}; target < {AGING_RATIO_TARGET}x the hand-written DuckDB baseline"
        )
        return lines
    lines.append(
        f"ledger aging transform {aged:,} ledger rows: {_s(figures['seconds'])}; hand-written "
        f"DuckDB baseline {_s(figures['baseline'])} → ratio {figures['ratio']:.2f} (target < "
        f"{AGING_RATIO_TARGET}x); worker peak RSS {aging['peak_rss_mb']:.0f} MB"
    )
    return lines


def growth_lines(documents: list[dict[str, Any]]) -> list[str]:
    """How each figure grows with size: one line per figure, its value at every size."""
    def at_sizes(label: str, value: Callable[[dict[str, Any]], str | None]) -> str | None:
        cells = [(document["accounts"], value(document)) for document in documents]
        if all(cell is None for _, cell in cells):
            return None
        return f"growth: {label}: " + "; ".join(
            f"{accounts:,} accounts → {cell if cell is not None else 'n/a'}"
            for accounts, cell in cells)

    def summary(key: str, form: str) -> Callable[[dict[str, Any]], str | None]:
        return lambda doc: form.format(doc["summary"][key]) if doc.get("summary") else None

    def ledger(value: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str | None]:
        return lambda doc: value(doc["ledger"]) if doc.get("ledger") else None

    def fleet(doc: dict[str, Any]) -> str | None:
        found = doc.get("fleet")
        if not found:
            return None
        return (f"{found['practices']} practices: {found['seconds_per_additional_practice']:.3f}"
                f" s each (ratio {found['ratio_to_target']:.2f} to 0.5 s)")

    def aging(found: dict[str, Any]) -> str:
        figures = _aging_figures(found["aging"].get("result", {}))
        if figures["ratio"] is None:
            return "skipped"
        rows = int(figures["rows"]) if figures["rows"] is not None else 0
        return f"{rows:,} rows: ratio {figures['ratio']:.2f}"

    lines = [
        at_sizes("aging_report sync work / bare loop", summary(
            "sync_work_ratio_to_baseline", "ratio {:.2f}")),
        at_sizes("aging_report sync peak RSS", summary("sync_peak_rss_mb", "{:.0f} MB")),
        at_sizes("ledger full sync work / bare loop", ledger(
            lambda found: "ratio {:.2f}".format(
                (found["full"]["wall_seconds"] - found["empty"]["wall_seconds"])
                / found["baseline"]["wall_seconds"]))),
        at_sizes("ledger full sync peak RSS", ledger(
            lambda found: f"{found['full']['peak_rss_mb']:.0f} MB")),
        at_sizes("incremental requests / full", ledger(
            lambda found: f"{found['incremental']['requests']} vs {found['full']['requests']}")),
        at_sizes("ledger aging transform / hand-written query", ledger(aging)),
        at_sizes("fleet", fleet),
    ]
    return [line for line in lines if line]
