-- active_overrides: the current active override per account (columns of its `set` event).
-- An override is active from its `set` event until a `replaced`, `cleared`, `superseded`
-- or `expired` event of the same override_id. Reads the relation `override_events`.
SELECT s.*
FROM override_events AS s
WHERE s.event = 'set'
  AND NOT EXISTS (
      SELECT 1 FROM override_events AS later
      WHERE later.override_id = s.override_id AND later.event <> 'set'
  )
ORDER BY s.practice_id, s.account_id
