-- collection decisions: for each account, the first rule (in order) whose thresholds it
-- meets decides it; the account is then either targeted by that rule or excluded by it
-- with a cause, and later rules are not tried (product.md, "Auto collection rules").
-- Rules are data (rules_in), never SQL: every threshold is compared as a value.
--
-- Inputs: outstanding_balances (effective values), rules_in (the practice's rules with
-- rule_order), blocks_in (each account's latest block row), history_in (earlier days'
-- targets). Parameters: $as_of_date, $evaluated_at.
WITH eligible AS (
    -- a patient portion <= 0 is never targeted; days_outstanding NULL meets no rule
    SELECT * FROM outstanding_balances
    WHERE patient_portion > 0 AND days_outstanding IS NOT NULL
),
matches AS (
    SELECT b.*, r.*
    FROM eligible AS b
    JOIN rules_in AS r
      ON b.patient_portion >= r.min_patient_balance
     AND b.days_outstanding >= r.min_days_outstanding
     AND (r.max_days_outstanding IS NULL OR b.days_outstanding <= r.max_days_outstanding)
),
first_match AS (
    SELECT * FROM matches
    QUALIFY row_number() OVER (PARTITION BY account_id ORDER BY rule_order) = 1
),
cooldowns AS (
    SELECT f.account_id, max(h.as_of_date) AS last_targeted
    FROM first_match AS f
    JOIN history_in AS h
      ON h.account_id = f.account_id AND h.rule_id = f.rule_id
     AND h.as_of_date < CAST($as_of_date AS DATE)
     AND h.as_of_date > CAST($as_of_date AS DATE) - f.cooldown_days
    GROUP BY f.account_id
),
decided AS (
    SELECT
        f.*,
        c.last_targeted,
        CASE
            WHEN coalesce(k.blocked, false)                                THEN 'blocked'
            WHEN f.guarantor_status = 'Deceased'                           THEN 'deceased'
            WHEN f.has_rejected_rows                                       THEN 'data_quality'
            WHEN f.exclude_insurance_pending AND f.insurance_estimate > 0  THEN 'insurance_pending'
            WHEN c.last_targeted IS NOT NULL                               THEN 'cooldown'
        END AS exclusion,
        CASE
            WHEN coalesce(k.blocked, false) THEN 'blocked by staff'
            WHEN f.guarantor_status = 'Deceased' THEN 'guarantor status is Deceased'
            WHEN f.has_rejected_rows THEN 'a row of this account was rejected in the latest sync'
            WHEN f.exclude_insurance_pending AND f.insurance_estimate > 0
                THEN printf('insurance estimate %s > 0.00 (rule excludes pending insurance)',
                            CAST(f.insurance_estimate AS VARCHAR))
            WHEN c.last_targeted IS NOT NULL
                THEN printf('targeted by rule %s on %s, within its %d-day cooldown',
                            f.rule_id, CAST(c.last_targeted AS VARCHAR), f.cooldown_days)
        END AS detail
    FROM first_match AS f
    LEFT JOIN blocks_in AS k ON k.account_id = f.account_id
    LEFT JOIN cooldowns AS c ON c.account_id = f.account_id
)
SELECT
    practice_id,
    account_id,
    CAST($as_of_date AS DATE)          AS as_of_date,
    CAST($evaluated_at AS TIMESTAMPTZ) AS evaluated_at,
    rule_id,
    action,
    patient_portion                    AS amount,
    days_outstanding,
    -- decimals are formatted as text: exact, never through a float
    printf('patient portion %s ≥ %s and %d days ≥ %d days', CAST(patient_portion AS VARCHAR),
           CAST(min_patient_balance AS VARCHAR), days_outstanding, min_days_outstanding)
        || CASE WHEN max_days_outstanding IS NULL THEN ''
                ELSE printf(' and ≤ %d days', max_days_outstanding) END
                                       AS reason,
    exclusion,
    detail
FROM decided
ORDER BY account_id
