-- What a sync does to each active override of the practice (product.md, "Manual overrides"):
--   the synced patient and insurance portions equal its base values -> stays active (no row);
--   either changed                                                  -> superseded;
--   the account is gone from the source                             -> expired.
-- No override ends because of a row the sync could not read (docs/decisions.md):
--   a rejected row of the account (its account known)    -> stays active, whatever the rest;
--   a rejected row whose account could not be identified -> nothing expires (the row may be
--     the missing account's), and, where an account is made of many rows (ledger mode),
--     nothing is superseded either (the row may be part of any listed account).
-- Inputs: overrides_in (the practice's active overrides), account_balances (this sync),
-- rejected_accounts (the account of each of this sync's rejected rows; NULL: unknown).
-- Parameter: $one_row_per_account (aging_report mode: one source row per account).
WITH unidentified AS (
    SELECT count(*) > 0 AS found FROM rejected_accounts WHERE account_id IS NULL
)
SELECT
    o.override_id,
    o.practice_id,
    o.account_id,
    CASE WHEN b.account_id IS NULL THEN 'expired' ELSE 'superseded' END AS event,
    o.patient_portion,
    o.insurance_portion,
    o.base_patient_portion,
    o.base_insurance_portion,
    b.patient_portion   AS synced_patient_portion,
    b.insurance_portion AS synced_insurance_portion
FROM overrides_in AS o
LEFT JOIN account_balances AS b ON b.account_id = o.account_id
CROSS JOIN unidentified AS u
WHERE o.account_id NOT IN (
        SELECT account_id FROM rejected_accounts WHERE account_id IS NOT NULL
    )
  AND (
        (b.account_id IS NULL AND NOT u.found)
     OR (
            b.account_id IS NOT NULL
            AND (b.patient_portion IS DISTINCT FROM o.base_patient_portion
                 OR b.insurance_portion IS DISTINCT FROM o.base_insurance_portion)
            AND (CAST($one_row_per_account AS BOOLEAN) OR NOT u.found)
        )
    )
ORDER BY o.account_id
