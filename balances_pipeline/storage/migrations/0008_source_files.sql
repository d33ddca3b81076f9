-- File drops: the file each sync read (its name and SHA-256), so the same file is never
-- counted twice and a schedule tick with no new file records the practice unchanged.
ALTER TABLE sync_runs ADD COLUMN source_file VARCHAR;
ALTER TABLE sync_runs ADD COLUMN source_checksum VARCHAR;
