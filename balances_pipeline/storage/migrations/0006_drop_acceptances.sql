-- A person's confirmation that a practice's next sync may publish far fewer accounts than
-- the previous successful one (pipeline/collapse_guard.py): written by
-- `balances sync accept-drop`, used once by the next sync of the practice, which records
-- itself and the counts it let through. Rows are never deleted.
CREATE TABLE drop_acceptances (
    acceptance_id     VARCHAR NOT NULL,
    practice_id       VARCHAR NOT NULL,
    reason            VARCHAR NOT NULL,   -- why the drop is genuine (never a patient's name)
    actor             VARCHAR NOT NULL,   -- who accepted it
    accepted_at       TIMESTAMPTZ NOT NULL,
    used_by_sync_id   VARCHAR,            -- the sync that used it (NULL: still waiting)
    used_at           TIMESTAMPTZ,
    accounts          BIGINT,             -- accounts of the sync that used it
    previous_accounts BIGINT,             -- accounts of the previous successful sync then
    PRIMARY KEY (acceptance_id)
);
