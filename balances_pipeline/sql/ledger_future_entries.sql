-- Ledger entries dated after the as-of date (docs/aging.md, mode `ledger`): ignored by
-- ledger_account_balances.sql and counted here for the sync's metadata. One row.
-- Same inputs as ledger_account_balances.sql. Parameter: $as_of_date.
-- Counted per source row that is a ledger entry (docs/aging.md's table): completed procedures,
-- received claim procedures (one row, though it carries a payment and a write-off),
-- payment splits and adjustments, whatever their amount.
WITH future AS (
    SELECT 'procedures' AS entry_source
    FROM ledger_procedures
    WHERE proc_status = 'C' AND proc_date > CAST($as_of_date AS DATE)
    UNION ALL
    SELECT 'claimprocs'
    FROM ledger_claimprocs
    WHERE status IN ('Received', 'Supplemental', 'CapClaim', 'CapComplete')
      AND date_cp > CAST($as_of_date AS DATE)
    UNION ALL
    SELECT 'paysplits'
    FROM ledger_paysplits
    WHERE date_pay > CAST($as_of_date AS DATE)
    UNION ALL
    SELECT 'adjustments'
    FROM ledger_adjustments
    WHERE adj_date > CAST($as_of_date AS DATE)
)
SELECT
    COUNT(*)                                                AS future_entries,
    COUNT(*) FILTER (WHERE entry_source = 'procedures')     AS future_procedures,
    COUNT(*) FILTER (WHERE entry_source = 'claimprocs')     AS future_claimprocs,
    COUNT(*) FILTER (WHERE entry_source = 'paysplits')      AS future_paysplits,
    COUNT(*) FILTER (WHERE entry_source = 'adjustments')    AS future_adjustments
FROM future
