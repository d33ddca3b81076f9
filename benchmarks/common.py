"""What the benchmark's parent and its workers share: the practice, the keys, the markers."""

from __future__ import annotations

from datetime import date

AS_OF = date(2025, 6, 30)
SEED = 7
PRACTICE_ID = "bench_practice"
# A practice of no accounts on the same server: its sync is the fixed cost that "sync
# work" (a sync's time minus the empty practice's) leaves out.
EMPTY_PRACTICE_ID = "bench_empty"
# Another practice of no accounts, synced before sync work is measured so that the
# warehouse exists, as it does in production (creating it is a first sync's cost).
WARM_PRACTICE_ID = "bench_warm"
DEVELOPER_KEY_ENV = "BENCH_OD_DEVELOPER_KEY"
CUSTOMER_KEY_ENV = "BENCH_PRACTICE_OD_CUSTOMER_KEY"
EMPTY_CUSTOMER_KEY_ENV = "BENCH_EMPTY_OD_CUSTOMER_KEY"
WARM_CUSTOMER_KEY_ENV = "BENCH_WARM_OD_CUSTOMER_KEY"
# The bare loop loads each endpoint's pages into DuckDB with these columns (read_json).
MONEY_SQL = "DECIMAL(14,2)"
AGING_BARE_COLUMNS = {"PatNum": "BIGINT", "patName": "VARCHAR", **{
    name: MONEY_SQL for name in ("Bal_0_30", "Bal_31_60", "Bal_61_90", "BalOver90", "BalTotal",
                                 "InsWoEst", "InsPayEst", "PatientPortion")}}
LEDGER_BARE_COLUMNS: dict[str, dict[str, str]] = {
    "/patients": {"PatNum": "BIGINT", "Guarantor": "BIGINT", "LName": "VARCHAR",
                  "FName": "VARCHAR", "PatStatus": "VARCHAR", "DateTStamp": "TIMESTAMP"},
    "/procedurelogs": {"ProcNum": "BIGINT", "PatNum": "BIGINT", "ProcDate": "TIMESTAMP",
                       "ProcFee": MONEY_SQL, "UnitQty": "BIGINT", "BaseUnits": "BIGINT",
                       "ProcStatus": "VARCHAR", "DateTStamp": "TIMESTAMP"},
    "/claimprocs": {"ClaimProcNum": "BIGINT", "ProcNum": "BIGINT", "ClaimNum": "BIGINT",
                    "PatNum": "BIGINT", "Status": "VARCHAR", "InsPayEst": MONEY_SQL,
                    "InsPayAmt": MONEY_SQL, "WriteOff": MONEY_SQL, "WriteOffEst": MONEY_SQL,
                    "DateCP": "TIMESTAMP", "SecDateTEdit": "TIMESTAMP"},
    "/paysplits": {"SplitNum": "BIGINT", "PatNum": "BIGINT", "SplitAmt": MONEY_SQL,
                   "DatePay": "TIMESTAMP", "SecDateTEdit": "TIMESTAMP"},
    "/adjustments": {"AdjNum": "BIGINT", "PatNum": "BIGINT", "AdjDate": "TIMESTAMP",
                     "AdjAmt": MONEY_SQL, "SecDateTEdit": "TIMESTAMP"},
}
BARE_BATCH_PAGES = 50  # pages per read_json, as the sync batches them
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
