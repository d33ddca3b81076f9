-- Practices whose committed staff changes (override events, blocks) are not republished
-- yet: written in the same transaction as the changes, deleted by each practice's
-- republish. A row left behind (the command was killed) is completed by the next publish
-- of that practice (staff/overrides.py, pipeline/recompute.py).
CREATE TABLE pending_republishes (
    practice_id VARCHAR NOT NULL,
    marked_at   TIMESTAMPTZ NOT NULL,   -- when the staff change was committed
    PRIMARY KEY (practice_id)
);
