"""FHIR R4/R5 EHRs (Epic, Oracle Health, athenaOne, ...): `Account` balances."""
