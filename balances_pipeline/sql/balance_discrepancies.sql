-- balance_discrepancies found while mapping Open Dental's aging report (docs/aging.md):
--   patient_portion_mismatch: our BalTotal - InsPayEst - InsWoEst against the source's
--                             PatientPortion, when they differ by more than one cent;
--   buckets_do_not_sum:       the four buckets against BalTotal (Open Dental reports a
--                             credit balance as a negative Bal_0_30, so they always sum).
-- Parameters: $practice_id, $sync_id.
SELECT
    $sync_id                                 AS sync_id,
    $practice_id                             AS practice_id,
    CAST(guarantor_id AS VARCHAR)            AS account_id,
    'patient_portion_mismatch'               AS "check",
    patient_portion                          AS expected,
    bal_total - ins_pay_est - ins_wo_est     AS actual,
    'source PatientPortion vs BalTotal - InsPayEst - InsWoEst' AS detail
FROM stg_aging_report
WHERE abs(patient_portion - (bal_total - ins_pay_est - ins_wo_est)) > 0.01
UNION ALL
SELECT
    $sync_id,
    $practice_id,
    CAST(guarantor_id AS VARCHAR),
    'buckets_do_not_sum',
    bal_total,
    bal_0_30 + bal_31_60 + bal_61_90 + bal_over_90,
    'BalTotal vs Bal_0_30 + Bal_31_60 + Bal_61_90 + BalOver90'
FROM stg_aging_report
WHERE abs(bal_total - (bal_0_30 + bal_31_60 + bal_61_90 + bal_over_90)) > 0.01
ORDER BY 3, 4
