-- Ledger mode: per practice and endpoint, the server-clock cursor of the last published
-- extract, and the practice-local date of its last full refresh. (The raw ledger rows
-- themselves live in one DuckDB file per practice: pipeline/ledger/<practice>.duckdb.)
CREATE TABLE ledger_cursors (
    practice_id VARCHAR NOT NULL,
    endpoint    VARCHAR NOT NULL,
    cursor_at   TIMESTAMP NOT NULL,   -- server clock, as the server writes DateTStamp
    PRIMARY KEY (practice_id, endpoint)
);
CREATE TABLE ledger_refreshes (
    practice_id      VARCHAR PRIMARY KEY,
    last_full_as_of  DATE NOT NULL
);
