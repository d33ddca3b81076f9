-- outstanding_balances: account_balances with manual overrides applied (product.md,
-- "Manual overrides"). Every downstream view and every collection rule reads this.
-- Overrides arrive with the override feature; until then the effective values are the
-- synced ones and the override columns say so.
SELECT
    b.*,
    b.patient_portion    AS synced_patient_portion,
    b.insurance_portion  AS synced_insurance_portion,
    b.balance_total      AS synced_balance_total,
    CAST(NULL AS VARCHAR) AS override_id,
    false                AS is_overridden
FROM account_balances AS b
ORDER BY b.account_id
