-- Auto collection rules: staff blocks (append-only, the latest row per account wins) and
-- the history of targets (one row per practice, account, rule and as_of_date: the day's
-- last decision; re-evaluating a day replaces that day's rows, other days are kept).
CREATE TABLE account_blocks (
    practice_id VARCHAR NOT NULL,
    account_id  VARCHAR NOT NULL,
    blocked     BOOLEAN NOT NULL,
    reason      VARCHAR NOT NULL,
    actor       VARCHAR NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    sequence    BIGINT NOT NULL
);
CREATE SEQUENCE account_block_sequence START 1;

CREATE TABLE collection_target_history (
    practice_id      VARCHAR NOT NULL,
    account_id       VARCHAR NOT NULL,
    as_of_date       DATE NOT NULL,
    evaluated_at     TIMESTAMPTZ NOT NULL,
    rule_id          VARCHAR NOT NULL,
    action           VARCHAR NOT NULL,
    amount           DECIMAL(14,2) NOT NULL,
    days_outstanding INTEGER,
    reason           VARCHAR NOT NULL,
    sync_id          VARCHAR,
    PRIMARY KEY (practice_id, account_id, rule_id, as_of_date)
);
