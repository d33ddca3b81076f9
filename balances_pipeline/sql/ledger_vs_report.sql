-- balance_discrepancies, ledger mode: our aging of the raw ledger against the source's own
-- /reports/Aging (Open Dental's four buckets), per account and figure, when they differ by
-- more than one cent. `expected` is the source's figure, `actual` ours. Open Dental shows
-- a credit balance as a negative Bal_0_30: ours is compared the same way. An account on
-- one side only is a difference of its whole balance. Empty when the source served no
-- report (incremental syncs do not read it).
-- Inputs: account_balances (ledger mode), stg_aging_report. Parameters: $practice_id, $sync_id.
WITH ours AS (
    SELECT
        account_id,
        CASE WHEN balance_total < 0 THEN balance_total ELSE bucket_0_30 END AS bal_0_30,
        bucket_31_60 AS bal_31_60, bucket_61_90 AS bal_61_90, bucket_over_90 AS bal_over_90,
        balance_total AS bal_total, insurance_estimate AS ins_pay_est,
        writeoff_estimate AS ins_wo_est
    FROM account_balances
),
theirs AS (
    SELECT CAST(guarantor_id AS VARCHAR) AS account_id, bal_0_30, bal_31_60, bal_61_90,
           bal_over_90, bal_total, ins_pay_est, ins_wo_est
    FROM stg_aging_report
),
paired AS (
    SELECT coalesce(o.account_id, t.account_id) AS account_id,
           t.bal_0_30 AS t_0_30, o.bal_0_30 AS o_0_30,
           t.bal_31_60 AS t_31_60, o.bal_31_60 AS o_31_60,
           t.bal_61_90 AS t_61_90, o.bal_61_90 AS o_61_90,
           t.bal_over_90 AS t_over_90, o.bal_over_90 AS o_over_90,
           t.bal_total AS t_total, o.bal_total AS o_total,
           t.ins_pay_est AS t_ins, o.ins_pay_est AS o_ins,
           t.ins_wo_est AS t_wo, o.ins_wo_est AS o_wo
    FROM ours AS o
    FULL JOIN theirs AS t ON t.account_id = o.account_id
    WHERE (SELECT count(*) FROM stg_aging_report) > 0
),
figures AS (
    SELECT account_id, 'Bal_0_30' AS figure, t_0_30 AS expected, o_0_30 AS actual FROM paired
    UNION ALL SELECT account_id, 'Bal_31_60', t_31_60, o_31_60 FROM paired
    UNION ALL SELECT account_id, 'Bal_61_90', t_61_90, o_61_90 FROM paired
    UNION ALL SELECT account_id, 'BalOver90', t_over_90, o_over_90 FROM paired
    UNION ALL SELECT account_id, 'BalTotal', t_total, o_total FROM paired
    UNION ALL SELECT account_id, 'InsPayEst', t_ins, o_ins FROM paired
    UNION ALL SELECT account_id, 'InsWoEst', t_wo, o_wo FROM paired
)
SELECT
    $sync_id            AS sync_id,
    $practice_id        AS practice_id,
    account_id,
    'ledger_vs_report'  AS "check",
    expected,
    actual,
    figure || ': source report vs our ledger aging'
        || CASE WHEN expected IS NULL THEN ' (account missing from the report)'
                WHEN actual IS NULL THEN ' (account missing from the ledger)' ELSE '' END
                        AS detail
FROM figures
WHERE abs(coalesce(expected, 0) - coalesce(actual, 0)) > 0.01
ORDER BY account_id, figure
