"""What the benchmark's parent and its workers share: the practice, the keys, the markers."""

from __future__ import annotations

from datetime import date

AS_OF = date(2025, 6, 30)
SEED = 7
PRACTICE_ID = "bench_practice"
DEVELOPER_KEY_ENV = "BENCH_OD_DEVELOPER_KEY"
CUSTOMER_KEY_ENV = "BENCH_PRACTICE_OD_CUSTOMER_KEY"
AGING_ENDPOINT = "reports/Aging"
PAGE_ROWS = 100
LEDGER_ENDPOINTS = ("patients/Simple", "procedurelogs", "claimprocs", "paysplits", "adjustments")
# How the ledger baseline reads each endpoint as the real API allows (no Queries
# permission): everything in full, and /adjustments once per patient ("*": each PatNum).
LEDGER_BASELINE_QUERIES: dict[str, dict[str, str]] = {"adjustments": {"PatNum": "*"}}
LEDGER_BENCH_MODULE = "benchmarks.ledger_bench"
RESULT_MARK = "BENCH_RESULT "
PHASE_ORDER = ("extract", "publish")  # publish: transform + snapshot + atomic switch


class BenchError(Exception):
    """The benchmark could not run; the message is one line."""
