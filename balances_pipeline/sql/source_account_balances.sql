-- account_balances from a source that reports accounts with their buckets (FHIR EHRs,
-- aging files: docs/sources.md), one row per account of stg_source_balances.
-- Where the source left a value out: bucket_over_90 is bucket_91_120 + bucket_over_120,
-- balance_total the sum of the buckets, patient_portion balance_total minus both
-- estimates. A FHIR account without a patient/insurance split reports all of it as patient
-- portion (listed in balance_discrepancies as no_patient_insurance_split).
-- Parameters: $practice_id, $as_of_date, $synced_at, $sync_id, $source_mode, $nonzero_terms.
WITH filled AS (
    SELECT
        *,
        coalesce(bucket_over_90, bucket_91_120 + bucket_over_120)          AS over_90,
        coalesce(balance_total, bucket_0_30 + bucket_31_60 + bucket_61_90
                 + coalesce(bucket_over_90, bucket_91_120 + bucket_over_120)) AS total
    FROM stg_source_balances
    WHERE active
)
SELECT
    $practice_id                                        AS practice_id,
    account_id,
    account_name,
    CAST($as_of_date AS DATE)                           AS as_of_date,
    CAST($synced_at AS TIMESTAMPTZ)                     AS synced_at,
    $sync_id                                            AS sync_id,
    $source_mode                                        AS source_mode,
    total                                               AS balance_total,
    bucket_0_30,
    bucket_31_60,
    bucket_61_90,
    bucket_91_120,
    bucket_over_120,
    over_90                                             AS bucket_over_90,
    insurance_estimate,
    writeoff_estimate,
    coalesce(patient_portion, total - insurance_estimate - writeoff_estimate)
                                                        AS patient_portion,
    insurance_estimate                                  AS insurance_portion,
    CASE
        -- FHIR: the lower bound of the oldest non-zero term; aging files, as Open Dental's
        -- report: of the oldest positive bucket, none for a zero or credit balance.
        WHEN $nonzero_terms THEN CASE
            WHEN bucket_over_120 <> 0 THEN 121
            WHEN bucket_91_120 <> 0 OR (bucket_91_120 IS NULL AND over_90 <> 0) THEN 91
            WHEN bucket_61_90 <> 0 THEN 61
            WHEN bucket_31_60 <> 0 THEN 31
            WHEN bucket_0_30 <> 0 THEN 0
        END
        WHEN total <= 0 THEN NULL
        WHEN bucket_over_120 > 0 THEN 121
        WHEN bucket_91_120 > 0 OR (bucket_91_120 IS NULL AND over_90 > 0) THEN 91
        WHEN bucket_61_90 > 0 THEN 61
        WHEN bucket_31_60 > 0 THEN 31
        WHEN bucket_0_30 > 0 THEN 0
    END                                                 AS days_outstanding,
    account_id IN (
        SELECT account_id FROM stg_rejected_rows WHERE account_id IS NOT NULL
    )                                                   AS has_rejected_rows,
    CAST(NULL AS VARCHAR)                               AS guarantor_status
FROM filled
ORDER BY account_id
