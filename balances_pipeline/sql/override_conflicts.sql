-- override_conflicts: overrides a sync superseded (the PMS changed the account's portions
-- since the override was entered) that no one has replaced or cleared yet: the review queue.
-- new_patient_portion / new_insurance_portion are the synced values that superseded it.
SELECT
    s.*,
    x.synced_patient_portion   AS new_patient_portion,
    x.synced_insurance_portion AS new_insurance_portion,
    x.created_at               AS superseded_at,
    x.sync_id                  AS superseded_by_sync_id
FROM override_events AS s
JOIN override_events AS x ON x.override_id = s.override_id AND x.event = 'superseded'
WHERE s.event = 'set'
  AND NOT EXISTS (
      SELECT 1 FROM override_events AS done
      WHERE done.override_id = s.override_id AND done.event IN ('replaced', 'cleared')
  )
ORDER BY s.practice_id, s.account_id
