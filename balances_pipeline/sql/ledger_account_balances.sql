-- account_balances, mode `ledger` (docs/aging.md): the pipeline ages the raw ledger itself.
--
-- Inputs (one practice's rows, as the ledger connector stages them):
--   ledger_patients, ledger_procedures, ledger_claimprocs, ledger_paysplits,
--   ledger_adjustments, rejected_accounts (accounts touched by a rejected row).
-- Parameters: $practice_id, $as_of_date, $synced_at, $sync_id.
--
-- Money stays DECIMAL from input to output (never DOUBLE): amounts are summed exactly and
-- each account's figures are rounded to cents once, in the final SELECT (DuckDB's round()
-- on a DECIMAL rounds half away from zero, as docs/aging.md asks).
-- Open Dental's empty date is DATE '0001-01-01': it sorts before every as-of date, so a
-- credit with it counts as dated before as_of; a charge with it is a rejected row
-- (the connector rejects it; it is excluded again here).
-- Memory: at 100,000 accounts (3.8M entries) DuckDB 1.5.5 runs this statement within the
-- pipeline's 64 MB budget on one thread only (LedgerStore.apply_and_age sets it); inlining
-- the CTEs (NOT MATERIALIZED) did not help and made the statement ~40% slower.
WITH

-- Family roll-up: a patient belongs to its guarantor's account. A patient whose guarantor
-- is unknown (NULL, or the patient is missing from ledger_patients) is its own guarantor.
patient_account AS (
    SELECT pat_num, COALESCE(guarantor_id, pat_num) AS account_num
    FROM ledger_patients
),

-- docs/aging.md, table "Ledger entries": every entry with a date and a signed amount.
-- entry_kind + entry_id order same-day entries (rule 6: "same-day charges in id order").
ledger_entries AS (
    -- completed procedure: +ProcFee * (UnitQty + BaseUnits) on ProcDate
    SELECT pat_num, proc_date AS entry_date, 1 AS entry_kind, proc_num AS entry_id,
           CAST(proc_fee * (unit_qty + base_units) AS DECIMAL(18,2)) AS amount
    FROM ledger_procedures
    WHERE proc_status = 'C'
    UNION ALL
    -- insurance payment on a received claim procedure: -InsPayAmt on DateCP
    SELECT pat_num, date_cp, 2, claim_proc_num, CAST(-ins_pay_amt AS DECIMAL(18,2))
    FROM ledger_claimprocs
    WHERE status IN ('Received', 'Supplemental', 'CapClaim', 'CapComplete')
    UNION ALL
    -- write-off on such a claim procedure: -WriteOff on DateCP (an entry of its own)
    SELECT pat_num, date_cp, 3, claim_proc_num, CAST(-write_off AS DECIMAL(18,2))
    FROM ledger_claimprocs
    WHERE status IN ('Received', 'Supplemental', 'CapClaim', 'CapComplete')
    UNION ALL
    -- patient payment split: -SplitAmt on DatePay
    SELECT pat_num, date_pay, 4, split_num, CAST(-split_amt AS DECIMAL(18,2))
    FROM ledger_paysplits
    UNION ALL
    -- adjustment: AdjAmt (either sign) on AdjDate
    SELECT pat_num, adj_date, 5, adj_num, CAST(adj_amt AS DECIMAL(18,2))
    FROM ledger_adjustments
),

-- Only entries dated on or before as_of count (later ones are ignored; see
-- ledger_future_entries.sql for their count). Each entry goes to its patient's account.
-- Zero amounts are neither charges nor credits and change nothing: dropped.
dated_entries AS (
    SELECT
        COALESCE(pa.account_num, e.pat_num)             AS account_num,
        e.entry_date,
        e.entry_kind,
        e.entry_id,
        e.amount,
        CAST($as_of_date AS DATE) - e.entry_date        AS age_days
    FROM ledger_entries AS e
    LEFT JOIN patient_account AS pa ON pa.pat_num = e.pat_num
    WHERE e.entry_date <= CAST($as_of_date AS DATE)
      AND e.amount <> 0
      -- a charge on the empty date is a rejected row; a credit on it counts
      AND NOT (e.amount > 0 AND e.entry_date = DATE '0001-01-01')
),

-- Rule 1: charges (positive amounts), each in the bucket of its age.
-- Rule 2 needs the credits' total C (a positive number); rule 3 the sum of all amounts.
account_totals AS (
    SELECT
        account_num,
        COALESCE(SUM(amount) FILTER (WHERE amount > 0 AND age_days <= 30), 0)      AS b_0_30,
        COALESCE(SUM(amount) FILTER (WHERE amount > 0 AND age_days BETWEEN 31 AND 60), 0)
                                                                                    AS b_31_60,
        COALESCE(SUM(amount) FILTER (WHERE amount > 0 AND age_days BETWEEN 61 AND 90), 0)
                                                                                    AS b_61_90,
        COALESCE(SUM(amount) FILTER (WHERE amount > 0 AND age_days BETWEEN 91 AND 120), 0)
                                                                                    AS b_91_120,
        COALESCE(SUM(amount) FILTER (WHERE amount > 0 AND age_days >= 121), 0)     AS b_over_120,
        COALESCE(-SUM(amount) FILTER (WHERE amount < 0), 0)                         AS credits,
        SUM(amount)                                                                 AS balance
    FROM dated_entries
    GROUP BY account_num
),

-- Rule 2: credits applied oldest bucket first. With the buckets' running total from the
-- oldest (over_120) down to bucket k, what bucket k keeps is
--   greatest(0, least(bucket_k, running_total_k - C)):
-- all of it while C is used up by older buckets, nothing once C covers it too.
-- Rule 3 follows: on a credit balance (C >= all charges) every bucket is 0.
aged_buckets AS (
    SELECT
        account_num,
        balance,
        GREATEST(0, LEAST(b_over_120, b_over_120 - credits))                     AS a_over_120,
        GREATEST(0, LEAST(b_91_120, b_over_120 + b_91_120 - credits))            AS a_91_120,
        GREATEST(0, LEAST(b_61_90, b_over_120 + b_91_120 + b_61_90 - credits))   AS a_61_90,
        GREATEST(0, LEAST(b_31_60,
            b_over_120 + b_91_120 + b_61_90 + b_31_60 - credits))                AS a_31_60,
        GREATEST(0, LEAST(b_0_30,
            b_over_120 + b_91_120 + b_61_90 + b_31_60 + b_0_30 - credits))       AS a_0_30
    FROM account_totals
),

-- Rule 6: credits applied to the charges in date order (oldest first, same-day charges in
-- id order). A charge is still open when the running sum of charges up to and including it
-- exceeds C. days_outstanding is the age of the oldest open charge (NULL if none is open).
charges_running AS (
    SELECT
        d.account_num,
        d.age_days,
        SUM(d.amount) OVER (
            PARTITION BY d.account_num
            ORDER BY d.entry_date, d.entry_kind, d.entry_id
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        )                                                   AS charged_through,
        t.credits
    FROM dated_entries AS d
    JOIN account_totals AS t USING (account_num)
    WHERE d.amount > 0
),
oldest_open_charge AS (
    SELECT account_num, MAX(age_days) AS days_outstanding
    FROM charges_running
    WHERE charged_through > credits
    GROUP BY account_num
),

-- Pending insurance: NotReceived claim procedures of completed procedures, whatever their
-- dates. WriteOffEst -1 means "none" (only values >= 0 count). Other statuses carry no money.
pending_insurance AS (
    SELECT
        COALESCE(pa.account_num, c.pat_num)                               AS account_num,
        SUM(c.ins_pay_est)                                                AS insurance_estimate,
        COALESCE(SUM(c.write_off_est) FILTER (WHERE c.write_off_est >= 0), 0)
                                                                          AS writeoff_estimate
    FROM ledger_claimprocs AS c
    LEFT JOIN patient_account AS pa ON pa.pat_num = c.pat_num
    WHERE c.status = 'NotReceived'
      AND c.proc_num IN (SELECT proc_num FROM ledger_procedures WHERE proc_status = 'C')
    GROUP BY 1
),

-- Every account with a dated entry or pending insurance, its figures exact (unrounded).
accounts AS (
    SELECT
        COALESCE(b.account_num, p.account_num)                  AS account_num,
        COALESCE(b.balance, 0)                                  AS balance,
        COALESCE(b.a_0_30, 0)                                   AS a_0_30,
        COALESCE(b.a_31_60, 0)                                  AS a_31_60,
        COALESCE(b.a_61_90, 0)                                  AS a_61_90,
        COALESCE(b.a_91_120, 0)                                 AS a_91_120,
        COALESCE(b.a_over_120, 0)                               AS a_over_120,
        COALESCE(p.insurance_estimate, 0)                       AS insurance_estimate,
        COALESCE(p.writeoff_estimate, 0)                        AS writeoff_estimate
    FROM aged_buckets AS b
    FULL OUTER JOIN pending_insurance AS p USING (account_num)
)

-- Rules 4 and 5, output shape of account_balances (relations.py), rounded to cents once.
-- bucket_over_90 and patient_portion are derived from the rounded figures, so that
-- over_90 = 91_120 + over_120 and patient_portion = total - estimates hold to the cent.
-- (Ledger amounts are whole cents, so the exact and the rounded figures are the same.)
-- Rule 7: accounts whose balance, insurance and write-off estimates are all zero are omitted.
SELECT
    CAST($practice_id AS VARCHAR)                                           AS practice_id,
    CAST(a.account_num AS VARCHAR)                                          AS account_id,
    g.display_name                                                          AS account_name,
    CAST($as_of_date AS DATE)                                               AS as_of_date,
    CAST($synced_at AS TIMESTAMPTZ)                                         AS synced_at,
    CAST($sync_id AS VARCHAR)                                               AS sync_id,
    'ledger'                                                                AS source_mode,
    CAST(ROUND(a.balance, 2) AS DECIMAL(14,2))                              AS balance_total,
    CAST(ROUND(a.a_0_30, 2) AS DECIMAL(14,2))                               AS bucket_0_30,
    CAST(ROUND(a.a_31_60, 2) AS DECIMAL(14,2))                              AS bucket_31_60,
    CAST(ROUND(a.a_61_90, 2) AS DECIMAL(14,2))                              AS bucket_61_90,
    CAST(ROUND(a.a_91_120, 2) AS DECIMAL(14,2))                             AS bucket_91_120,
    CAST(ROUND(a.a_over_120, 2) AS DECIMAL(14,2))                           AS bucket_over_120,
    CAST(ROUND(a.a_91_120, 2) + ROUND(a.a_over_120, 2) AS DECIMAL(14,2))     AS bucket_over_90,
    CAST(ROUND(a.insurance_estimate, 2) AS DECIMAL(14,2))                   AS insurance_estimate,
    CAST(ROUND(a.writeoff_estimate, 2) AS DECIMAL(14,2))                    AS writeoff_estimate,
    CAST(ROUND(a.balance, 2) - ROUND(a.insurance_estimate, 2) - ROUND(a.writeoff_estimate, 2)
         AS DECIMAL(14,2))                                                  AS patient_portion,
    CAST(ROUND(a.insurance_estimate, 2) AS DECIMAL(14,2))                   AS insurance_portion,
    CAST(o.days_outstanding AS INTEGER)                                     AS days_outstanding,
    CAST(a.account_num AS VARCHAR) IN (
        SELECT account_id FROM rejected_accounts WHERE account_id IS NOT NULL
    )                                                                       AS has_rejected_rows,
    g.status                                                                AS guarantor_status
FROM accounts AS a
LEFT JOIN oldest_open_charge AS o USING (account_num)
LEFT JOIN ledger_patients AS g ON g.pat_num = a.account_num
WHERE NOT (a.balance = 0 AND a.insurance_estimate = 0 AND a.writeoff_estimate = 0)
ORDER BY a.account_num
