-- A sync runs in two steps (extract, then transform + publish), possibly in two Dagster
-- steps: `phase` says where a running sync is, `staging_file` where its extract waits.
-- `error_class` names the kind of failure for alerts (the message is in `error`).
ALTER TABLE sync_runs ADD COLUMN phase VARCHAR;
ALTER TABLE sync_runs ADD COLUMN staging_file VARCHAR;
ALTER TABLE sync_runs ADD COLUMN error_class VARCHAR;
ALTER TABLE sync_runs ADD COLUMN pages BIGINT;
