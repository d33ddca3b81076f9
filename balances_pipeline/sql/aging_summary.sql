-- aging_summary: one row per practice, from outstanding_balances (effective values).
-- Bucket sums ignore NULLs; a source that does not split over-90 keeps
-- bucket_91_120 and bucket_over_120 NULL.
-- Parameters: $practice_id, $as_of_date, $synced_at.
SELECT
    $practice_id                                   AS practice_id,
    CAST($as_of_date AS DATE)                      AS as_of_date,
    CAST($synced_at AS TIMESTAMPTZ)                AS synced_at,
    count(*)                                       AS account_count,
    coalesce(sum(balance_total), 0)                AS balance_total,
    coalesce(sum(bucket_0_30), 0)                  AS bucket_0_30,
    coalesce(sum(bucket_31_60), 0)                 AS bucket_31_60,
    coalesce(sum(bucket_61_90), 0)                 AS bucket_61_90,
    sum(bucket_91_120)                             AS bucket_91_120,
    sum(bucket_over_120)                           AS bucket_over_120,
    coalesce(sum(bucket_over_90), 0)               AS bucket_over_90,
    coalesce(sum(patient_portion), 0)              AS patient_portion,
    coalesce(sum(insurance_portion), 0)            AS insurance_portion,
    count(*) FILTER (WHERE is_overridden)          AS overridden_account_count,
    CASE
        WHEN coalesce(sum(bucket_0_30), 0) + coalesce(sum(bucket_31_60), 0)
             + coalesce(sum(bucket_61_90), 0) + coalesce(sum(bucket_over_90), 0) = 0
        THEN NULL
        ELSE round(
            100 * coalesce(sum(bucket_over_90), 0)
            / (coalesce(sum(bucket_0_30), 0) + coalesce(sum(bucket_31_60), 0)
               + coalesce(sum(bucket_61_90), 0) + coalesce(sum(bucket_over_90), 0)),
            2)
    END                                            AS pct_over_90
FROM outstanding_balances
