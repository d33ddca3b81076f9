-- The pipeline's own state: one row per sync attempt, what each sync rejected or
-- found inconsistent, and which snapshot of each practice is the published one.

CREATE TABLE sync_runs (
    sync_id        VARCHAR PRIMARY KEY,
    practice_id    VARCHAR NOT NULL,
    dagster_run_id VARCHAR,
    as_of_date     DATE NOT NULL,
    mode           VARCHAR NOT NULL,      -- full | incremental
    source_mode    VARCHAR NOT NULL,      -- aging_report | ledger
    started_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ,
    status         VARCHAR NOT NULL,      -- running | success | failed
    accounts       BIGINT,
    rows_extracted BIGINT,
    rows_rejected  BIGINT,
    requests       BIGINT,
    retries        BIGINT,
    error          VARCHAR,
    fresh_until    TIMESTAMPTZ,
    snapshot_id    VARCHAR
);

CREATE TABLE rejected_rows (
    sync_id     VARCHAR NOT NULL,
    practice_id VARCHAR NOT NULL,
    endpoint    VARCHAR NOT NULL,
    row_key     VARCHAR,
    reason      VARCHAR NOT NULL,
    raw         VARCHAR NOT NULL,
    account_id  VARCHAR
);

CREATE TABLE balance_discrepancies (
    sync_id     VARCHAR NOT NULL,
    practice_id VARCHAR NOT NULL,
    account_id  VARCHAR,
    "check"     VARCHAR NOT NULL,
    expected    DECIMAL(14,2),
    actual      DECIMAL(14,2),
    detail      VARCHAR
);

CREATE TABLE published_snapshots (
    practice_id  VARCHAR PRIMARY KEY,
    snapshot_id  VARCHAR NOT NULL,
    sync_id      VARCHAR,
    published_at TIMESTAMPTZ NOT NULL
);
