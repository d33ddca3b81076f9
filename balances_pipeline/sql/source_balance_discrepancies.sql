-- balance_discrepancies of a source that reports account balances (docs/sources.md):
--   no_patient_insurance_split: the account gave only totals (FHIR `total` entries): all
--                               of it counts as patient portion, for review;
--   buckets_do_not_sum:         the source's own total against the sum of its buckets;
--   patient_portion_mismatch:   the source's patient portion against total minus the
--                               estimates (FHIR: patient + insurance entries), both given.
-- Parameters: $practice_id, $sync_id.
WITH accounts AS (
    SELECT
        *,
        bucket_0_30 + bucket_31_60 + bucket_61_90
            + coalesce(bucket_over_90, bucket_91_120 + bucket_over_120) AS bucket_sum
    FROM stg_source_balances
    WHERE active
)
SELECT
    $sync_id                                 AS sync_id,
    $practice_id                             AS practice_id,
    account_id,
    'no_patient_insurance_split'             AS "check",
    CAST(NULL AS DECIMAL(14,2))              AS expected,
    coalesce(balance_total, bucket_sum)      AS actual,
    'the source gave totals only: counted as patient portion' AS detail
FROM accounts
WHERE NOT has_split
UNION ALL
SELECT $sync_id, $practice_id, account_id, 'buckets_do_not_sum', balance_total, bucket_sum,
       'the source''s total vs the sum of its buckets'
FROM accounts
WHERE balance_total IS NOT NULL AND abs(balance_total - bucket_sum) > 0.01
UNION ALL
SELECT $sync_id, $practice_id, account_id, 'patient_portion_mismatch', patient_portion,
       coalesce(balance_total, bucket_sum) - insurance_estimate - writeoff_estimate,
       'the source''s patient portion vs total - insurance - write-off estimates'
FROM accounts
WHERE has_split AND patient_portion IS NOT NULL
  AND abs(patient_portion - (coalesce(balance_total, bucket_sum) - insurance_estimate
                             - writeoff_estimate)) > 0.01
ORDER BY 3, 4
