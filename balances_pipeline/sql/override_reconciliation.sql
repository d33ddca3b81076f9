-- What a sync does to each active override of the practice (product.md, "Manual overrides"):
--   the synced patient and insurance portions equal its base values -> stays active (no row);
--   either changed                                                  -> superseded;
--   the account is gone from the source (and no row of it was rejected) -> expired.
-- Inputs: overrides_in (the practice's active overrides), account_balances (this sync),
-- stg_rejected_rows (this sync's rejects).
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
WHERE (
        b.account_id IS NULL
        AND o.account_id NOT IN (
            SELECT account_id FROM stg_rejected_rows WHERE account_id IS NOT NULL
        )
    )
   OR (
        b.account_id IS NOT NULL
        AND (b.patient_portion IS DISTINCT FROM o.base_patient_portion
             OR b.insurance_portion IS DISTINCT FROM o.base_insurance_portion)
    )
ORDER BY o.account_id
