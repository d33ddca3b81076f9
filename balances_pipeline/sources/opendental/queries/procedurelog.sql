-- Ledger mode through ShortQuery: the procedurelog rows the pipeline needs, and only their
-- needed columns. {since}: a timestamp formatted by the connector; {clinic}: a validated
-- integer, -1 for the whole database (a clinic's ledger: the families whose guarantor is
-- assigned to that clinic, whatever clinic each row was entered at).
SELECT ProcNum, PatNum, ProcDate, ProcFee, UnitQty, BaseUnits, ProcStatus, DateTStamp
FROM procedurelog
WHERE DateTStamp >= '{since}'
  AND ({clinic} < 0 OR PatNum IN (
      SELECT p.PatNum FROM patient p JOIN patient g ON g.PatNum = p.Guarantor
      WHERE g.ClinicNum = {clinic}))
ORDER BY ProcNum
