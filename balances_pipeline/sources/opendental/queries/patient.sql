-- Ledger mode through ShortQuery: the patients of the ledger (minimum necessary: no SSN,
-- Birthdate, address, phone or e-mail; names only for guarantors, the account holders).
-- {since}: a timestamp formatted by the connector; {clinic}: a validated integer, -1 for
-- the whole database. A clinic's ledger is its guarantors' families, every row of them
-- (Open Dental's Aging of A/R report attributes a family to its guarantor's clinic).
SELECT PatNum, Guarantor,
       CASE WHEN PatNum = Guarantor THEN LName ELSE '' END AS LName,
       CASE WHEN PatNum = Guarantor THEN FName ELSE '' END AS FName,
       PatStatus, DateTStamp
FROM patient
WHERE DateTStamp >= '{since}'
  AND ({clinic} < 0 OR Guarantor IN (SELECT g.PatNum FROM patient g WHERE g.ClinicNum = {clinic}))
ORDER BY PatNum
