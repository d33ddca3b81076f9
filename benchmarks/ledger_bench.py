"""Time the ledger-mode aging transform (`sql/ledger_account_balances.sql`) on a large ledger.

`run(rows)` generates a synthetic ledger of about `rows` entries directly in DuckDB
(range() and hash()-based pseudo-random values, so the same ledger every time), then times

    transform   ledger_account_balances.sql, as the pipeline runs it (create_table_from_sql)
    baseline    the same computation written as plainly as possible: five buckets, credits
                applied oldest bucket first, days_outstanding (no estimates, names, flags,
                rounding or output casts)

and prints both timings and their ratio (target: the transform within 1.5x of the baseline).
It also checks that the two agree on every account's buckets and days_outstanding.
Run: `python -m benchmarks.ledger_bench [rows]`.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, date, datetime
from typing import Any

import duckdb

from balances_pipeline.storage.sql_files import create_table_from_sql

AS_OF = date(2026, 11, 30)
REPEATS = 3

# Shares of the generated rows per input table.
SHARES = {"procedures": 0.45, "claimprocs": 0.20, "paysplits": 0.30, "adjustments": 0.05}
ROWS_PER_PATIENT = 40

GENERATE = """
CREATE OR REPLACE TABLE ledger_patients AS
SELECT i AS pat_num,
       CAST(((i - 1) // 3) * 3 + 1 AS BIGINT) AS guarantor_id,   -- families of three
       'Family' || (((i - 1) // 3) * 3 + 1) || ', Pat' || i AS display_name,
       CASE WHEN hash(i, 'st') % 50 = 0 THEN 'Deceased' ELSE 'Patient' END AS status
FROM range(1, $patients + 1) AS t(i);

CREATE OR REPLACE TABLE ledger_procedures AS
SELECT i AS proc_num,
       CAST(1 + hash(i, 'pat') % $patients AS BIGINT) AS pat_num,
       CAST($as_of AS DATE) - CAST(hash(i, 'day') % 730 AS INTEGER) + 10 AS proc_date,
       CAST(hash(i, 'fee') % 60000 AS DECIMAL(14,2)) / 100 AS proc_fee,
       CAST(1 AS INTEGER) AS unit_qty,
       CAST(hash(i, 'bu') % 4 = 0 AS INTEGER) AS base_units,
       CASE WHEN hash(i, 'ps') % 10 = 0 THEN 'TP' ELSE 'C' END AS proc_status
FROM range(1, $procedures + 1) AS t(i);

CREATE OR REPLACE TABLE ledger_claimprocs AS
SELECT i AS claim_proc_num,
       p.proc_num,
       i AS claim_num,
       p.pat_num,
       CASE hash(i, 'cs') % 10
           WHEN 0 THEN 'Estimate' WHEN 1 THEN 'NotReceived' WHEN 2 THEN 'NotReceived'
           WHEN 3 THEN 'Supplemental' ELSE 'Received' END AS status,
       CAST(p.proc_fee * 0.6 AS DECIMAL(14,2)) AS ins_pay_est,
       CAST(p.proc_fee * 0.5 AS DECIMAL(14,2)) AS ins_pay_amt,
       CAST(p.proc_fee * 0.1 AS DECIMAL(14,2)) AS write_off,
       CASE WHEN hash(i, 'woe') % 2 = 0 THEN -1.00
            ELSE CAST(p.proc_fee * 0.1 AS DECIMAL(14,2)) END AS write_off_est,
       CASE WHEN hash(i, 'dz') % 8 = 0 THEN DATE '0001-01-01'
            ELSE p.proc_date + CAST(hash(i, 'lag') % 45 AS INTEGER) END AS date_cp
FROM range(1, $claimprocs + 1) AS t(i)
JOIN ledger_procedures AS p ON p.proc_num = 1 + hash(i, 'proc') % $procedures;

CREATE OR REPLACE TABLE ledger_paysplits AS
SELECT i AS split_num,
       CAST(1 + hash(i, 'pat') % $patients AS BIGINT) AS pat_num,
       CAST(hash(i, 'amt') % 80000 AS DECIMAL(14,2)) / 100 AS split_amt,
       CASE WHEN hash(i, 'dz') % 50 = 0 THEN DATE '0001-01-01'
            ELSE CAST($as_of AS DATE) - CAST(hash(i, 'day') % 720 AS INTEGER) + 5 END AS date_pay
FROM range(1, $paysplits + 1) AS t(i);

CREATE OR REPLACE TABLE ledger_adjustments AS
SELECT i AS adj_num,
       CAST(1 + hash(i, 'pat') % $patients AS BIGINT) AS pat_num,
       CAST($as_of AS DATE) - CAST(hash(i, 'day') % 720 AS INTEGER) AS adj_date,
       (CAST(hash(i, 'amt') % 20000 AS DECIMAL(14,2)) - 10000) / 100 AS adj_amt
FROM range(1, $adjustments + 1) AS t(i);

CREATE OR REPLACE TABLE rejected_accounts AS
SELECT CAST(guarantor_id AS VARCHAR) AS account_id
FROM ledger_patients WHERE hash(pat_num, 'rej') % 500 = 0;
"""

# The typed input contract, applied after generation (the generator's expressions above are
# not all of the contract's types).
CONTRACT = {
    "ledger_procedures": "proc_fee DECIMAL(14,2)",
    "ledger_paysplits": "split_amt DECIMAL(14,2)",
    "ledger_adjustments": "adj_amt DECIMAL(14,2)",
    "ledger_claimprocs": "write_off_est DECIMAL(14,2)",
}

# Plain hand-written aging: entries, charges per bucket, credits oldest bucket first,
# oldest open charge. The same rules as the transform, as simply as DuckDB allows.
BASELINE = """
CREATE OR REPLACE TABLE baseline_balances AS
WITH e AS (
    SELECT COALESCE(p.guarantor_id, x.pat_num) AS acct, x.d, x.k, x.id, x.amt,
           CAST($as_of AS DATE) - x.d AS age
    FROM (
        SELECT pat_num, proc_date AS d, 1 AS k, proc_num AS id,
               proc_fee * (unit_qty + base_units) AS amt
        FROM ledger_procedures WHERE proc_status = 'C'
        UNION ALL SELECT pat_num, date_cp, 2, claim_proc_num, -ins_pay_amt FROM ledger_claimprocs
        WHERE status IN ('Received', 'Supplemental', 'CapClaim', 'CapComplete')
        UNION ALL SELECT pat_num, date_cp, 3, claim_proc_num, -write_off FROM ledger_claimprocs
        WHERE status IN ('Received', 'Supplemental', 'CapClaim', 'CapComplete')
        UNION ALL SELECT pat_num, date_pay, 4, split_num, -split_amt FROM ledger_paysplits
        UNION ALL SELECT pat_num, adj_date, 5, adj_num, adj_amt FROM ledger_adjustments
    ) AS x
    LEFT JOIN ledger_patients AS p USING (pat_num)
    WHERE x.d <= CAST($as_of AS DATE) AND x.amt <> 0
      AND NOT (x.amt > 0 AND x.d = DATE '0001-01-01')
),
t AS (
    SELECT acct,
           SUM(amt) AS total,
           COALESCE(-SUM(amt) FILTER (WHERE amt < 0), 0) AS c,
           COALESCE(SUM(amt) FILTER (WHERE amt > 0 AND age <= 30), 0) AS b1,
           COALESCE(SUM(amt) FILTER (WHERE amt > 0 AND age BETWEEN 31 AND 60), 0) AS b2,
           COALESCE(SUM(amt) FILTER (WHERE amt > 0 AND age BETWEEN 61 AND 90), 0) AS b3,
           COALESCE(SUM(amt) FILTER (WHERE amt > 0 AND age BETWEEN 91 AND 120), 0) AS b4,
           COALESCE(SUM(amt) FILTER (WHERE amt > 0 AND age > 120), 0) AS b5
    FROM e GROUP BY acct
),
o AS (
    SELECT acct, MAX(age) AS days_outstanding
    FROM (
        SELECT e.acct, e.age, t.c,
               SUM(e.amt) OVER (PARTITION BY e.acct ORDER BY e.d, e.k, e.id) AS run
        FROM e JOIN t USING (acct) WHERE e.amt > 0
    )
    WHERE run > c
    GROUP BY acct
)
SELECT acct, total,
       GREATEST(0, LEAST(b1, b5 + b4 + b3 + b2 + b1 - c)) AS b0_30,
       GREATEST(0, LEAST(b2, b5 + b4 + b3 + b2 - c)) AS b31_60,
       GREATEST(0, LEAST(b3, b5 + b4 + b3 - c)) AS b61_90,
       GREATEST(0, LEAST(b4, b5 + b4 - c)) AS b91_120,
       GREATEST(0, LEAST(b5, b5 - c)) AS b_over_120,
       o.days_outstanding
FROM t LEFT JOIN o USING (acct)
"""

AGREEMENT = """
SELECT count(*)
FROM ledger_balances AS l
FULL OUTER JOIN baseline_balances AS b ON CAST(b.acct AS VARCHAR) = l.account_id
WHERE (l.account_id IS NULL AND b.total <> 0)
   OR (l.account_id IS NOT NULL AND (
        (b.acct IS NULL AND l.balance_total <> 0)
        OR l.balance_total <> b.total
        OR l.bucket_0_30 <> b.b0_30 OR l.bucket_31_60 <> b.b31_60
        OR l.bucket_61_90 <> b.b61_90 OR l.bucket_91_120 <> b.b91_120
        OR l.bucket_over_120 <> b.b_over_120
        OR l.days_outstanding IS DISTINCT FROM b.days_outstanding))
"""


def generate(con: duckdb.DuckDBPyConnection, rows: int) -> dict[str, int]:
    counts = {table: max(1, int(rows * share)) for table, share in SHARES.items()}
    counts["patients"] = max(3, rows // ROWS_PER_PATIENT)
    sizes = {**counts, "as_of": AS_OF}
    for statement in GENERATE.split(";"):
        if statement.strip():
            used = {k: v for k, v in sizes.items() if f"${k}" in statement}
            con.execute(statement, used)
    for table, column in CONTRACT.items():
        name, type_ = column.split(" ", 1)
        con.execute(f"ALTER TABLE {table} ALTER {name} TYPE {type_}")
    return counts


def _time(action: Any) -> float:
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def run(rows: int = 1_000_000) -> dict:
    """Generate ~`rows` ledger rows, time transform and baseline; print and return figures."""
    con = duckdb.connect()
    try:
        started = time.perf_counter()
        counts = generate(con, rows)
        generated_s = time.perf_counter() - started
        ledger_rows = sum(v for k, v in counts.items() if k != "patients")
        params = {
            "practice_id": "bench_practice",
            "as_of_date": AS_OF,
            "synced_at": datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
            "sync_id": "bench",
        }
        transform_s = _time(
            lambda: create_table_from_sql(con, "ledger_balances", "ledger_account_balances", params)
        )
        baseline_s = _time(lambda: con.execute(BASELINE, {"as_of": AS_OF}))
        accounts = con.execute("SELECT count(*) FROM ledger_balances").fetchone()[0]
        disagreements = con.execute(AGREEMENT).fetchone()[0]
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    finally:
        con.close()
    result = {
        "rows": ledger_rows,
        "patients": counts["patients"],
        "accounts": accounts,
        "generate_s": round(generated_s, 3),
        "transform_s": round(transform_s, 3),
        "baseline_s": round(baseline_s, 3),
        "ratio": round(transform_s / baseline_s, 2),
        "disagreements": disagreements,
        "duckdb": duckdb.__version__,
        "threads": threads,
    }
    print(
        f"ledger rows {ledger_rows:,} ({counts['patients']:,} patients, {accounts:,} accounts)"
        f" | transform {transform_s:.3f} s | baseline {baseline_s:.3f} s"
        f" | ratio {transform_s / baseline_s:.2f}x (target <= 1.5x)"
        f" | accounts disagreeing with the baseline: {disagreements}"
        f" | DuckDB {duckdb.__version__}, {threads} threads"
    )
    return result


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
