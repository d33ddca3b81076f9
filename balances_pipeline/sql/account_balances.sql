-- account_balances: one row per account, as synced.
-- Mode aging_report (docs/aging.md): Open Dental's own aging report, mapped field by field.
-- Open Dental does not split over-90, so bucket_91_120 and bucket_over_120 stay NULL.
-- Parameters: $practice_id, $as_of_date, $synced_at, $sync_id.
-- Accounts touched by a rejected row (of /patients) are flagged has_rejected_rows.
SELECT
    $practice_id                                        AS practice_id,
    CAST(r.guarantor_id AS VARCHAR)                     AS account_id,
    r.display_name                                      AS account_name,
    CAST($as_of_date AS DATE)                           AS as_of_date,
    CAST($synced_at AS TIMESTAMPTZ)                     AS synced_at,
    $sync_id                                            AS sync_id,
    'aging_report'                                      AS source_mode,
    r.bal_total                                         AS balance_total,
    r.bal_0_30                                          AS bucket_0_30,
    r.bal_31_60                                         AS bucket_31_60,
    r.bal_61_90                                         AS bucket_61_90,
    CAST(NULL AS DECIMAL(14,2))                         AS bucket_91_120,
    CAST(NULL AS DECIMAL(14,2))                         AS bucket_over_120,
    r.bal_over_90                                       AS bucket_over_90,
    r.ins_pay_est                                       AS insurance_estimate,
    r.ins_wo_est                                        AS writeoff_estimate,
    r.bal_total - r.ins_pay_est - r.ins_wo_est          AS patient_portion,
    r.ins_pay_est                                       AS insurance_portion,
    CASE
        WHEN r.bal_total <= 0  THEN NULL
        WHEN r.bal_over_90 > 0 THEN 91
        WHEN r.bal_61_90 > 0   THEN 61
        WHEN r.bal_31_60 > 0   THEN 31
        WHEN r.bal_0_30 > 0    THEN 0
    END                                                 AS days_outstanding,
    CAST(r.guarantor_id AS VARCHAR) IN (
        SELECT account_id FROM stg_rejected_rows WHERE account_id IS NOT NULL
    )                                                   AS has_rejected_rows,
    -- read from /patients only when the practice has collection rules (NULL otherwise)
    g.status                                            AS guarantor_status
FROM stg_aging_report AS r
LEFT JOIN stg_patients AS g ON g.pat_num = r.guarantor_id
ORDER BY r.guarantor_id
