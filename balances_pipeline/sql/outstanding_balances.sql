-- outstanding_balances: account_balances with the active manual overrides applied
-- (product.md, "Manual overrides"). Every downstream view and every collection rule reads it.
--
-- Effective values: an overridden field replaces the synced one (an insurance-portion
-- override is also the insurance estimate); balance_total = patient + insurance + write-off
-- estimate. The difference d = max(effective total, 0) - max(synced total, 0) moves the
-- buckets like a ledger entry dated today: a decrease is taken from the oldest bucket first
-- (over_120, 91_120 -- or over_90 when the source does not split it -- 61_90, 31_60, 0_30),
-- no bucket going below zero; an increase is added to 0_30.
-- Inputs: account_balances, overrides_in (override_id, account_id, patient_portion,
-- insurance_portion: NULL where the override does not set that field).
WITH effective AS (
    SELECT
        b.*,
        o.override_id,
        coalesce(o.patient_portion, b.patient_portion)      AS eff_patient,
        coalesce(o.insurance_portion, b.insurance_portion)  AS eff_insurance,
        coalesce(o.insurance_portion, b.insurance_estimate) AS eff_insurance_estimate,
        b.bucket_91_120 IS NOT NULL                         AS split_over_90
    FROM account_balances AS b
    LEFT JOIN overrides_in AS o ON o.account_id = b.account_id
),
delta AS (
    SELECT
        *,
        eff_patient + eff_insurance + writeoff_estimate AS eff_total,
        greatest(eff_patient + eff_insurance + writeoff_estimate, 0)
            - greatest(balance_total, 0)                AS d
    FROM effective
),
credit_over_120 AS (
    SELECT *,
        CASE WHEN split_over_90
             THEN least(greatest(bucket_over_120, 0), greatest(-d, 0)) ELSE 0 END AS take_120
    FROM delta
),
credit_over_90 AS (
    SELECT *,
        least(greatest(coalesce(bucket_91_120, bucket_over_90), 0),
              greatest(-d, 0) - take_120) AS take_91
    FROM credit_over_120
),
credit_61_90 AS (
    SELECT *,
        least(greatest(bucket_61_90, 0), greatest(-d, 0) - take_120 - take_91) AS take_61
    FROM credit_over_90
),
credit_31_60 AS (
    SELECT *,
        least(greatest(bucket_31_60, 0), greatest(-d, 0) - take_120 - take_91 - take_61)
            AS take_31
    FROM credit_61_90
),
credited AS (
    SELECT *,
        least(greatest(bucket_0_30, 0),
              greatest(-d, 0) - take_120 - take_91 - take_61 - take_31) AS take_0
    FROM credit_31_60
),
buckets AS (
    SELECT *,
        bucket_0_30 - take_0 + greatest(d, 0)                      AS eff_0_30,
        bucket_31_60 - take_31                                     AS eff_31_60,
        bucket_61_90 - take_61                                     AS eff_61_90,
        CASE WHEN split_over_90 THEN bucket_91_120 - take_91 END   AS eff_91_120,
        CASE WHEN split_over_90 THEN bucket_over_120 - take_120 END AS eff_over_120,
        CASE WHEN split_over_90
             THEN (bucket_91_120 - take_91) + (bucket_over_120 - take_120)
             ELSE bucket_over_90 - take_91 END                     AS eff_over_90
    FROM credited
),
aged AS (
    SELECT *,
        -- the effective bucket the synced days_outstanding falls in
        CASE
            WHEN days_outstanding IS NULL THEN NULL
            WHEN days_outstanding <= 30 THEN eff_0_30
            WHEN days_outstanding <= 60 THEN eff_31_60
            WHEN days_outstanding <= 90 THEN eff_61_90
            WHEN NOT split_over_90 THEN eff_over_90
            WHEN days_outstanding <= 120 THEN eff_91_120
            ELSE eff_over_120
        END AS eff_bucket_of_days,
        CASE
            WHEN split_over_90 AND eff_over_120 > 0 THEN 121
            WHEN eff_over_90 > 0 THEN 91
            WHEN eff_61_90 > 0 THEN 61
            WHEN eff_31_60 > 0 THEN 31
            WHEN eff_0_30 > 0 THEN 0
        END AS oldest_positive_lower_bound
    FROM buckets
)
SELECT
    practice_id,
    account_id,
    account_name,
    as_of_date,
    synced_at,
    sync_id,
    source_mode,
    eff_total                       AS balance_total,
    eff_0_30                        AS bucket_0_30,
    eff_31_60                       AS bucket_31_60,
    eff_61_90                       AS bucket_61_90,
    eff_91_120                      AS bucket_91_120,
    eff_over_120                    AS bucket_over_120,
    eff_over_90                     AS bucket_over_90,
    eff_insurance_estimate          AS insurance_estimate,
    writeoff_estimate,
    eff_patient                     AS patient_portion,
    eff_insurance                   AS insurance_portion,
    CASE
        WHEN override_id IS NULL THEN days_outstanding
        WHEN eff_total <= 0 THEN NULL
        WHEN eff_bucket_of_days > 0 THEN days_outstanding
        ELSE oldest_positive_lower_bound
    END                             AS days_outstanding,
    has_rejected_rows,
    guarantor_status,
    patient_portion                 AS synced_patient_portion,
    insurance_portion               AS synced_insurance_portion,
    balance_total                   AS synced_balance_total,
    override_id,
    override_id IS NOT NULL         AS is_overridden
FROM aged
ORDER BY account_id
