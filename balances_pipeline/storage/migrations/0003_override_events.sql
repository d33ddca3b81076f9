-- Manual overrides: an append-only history of events. Nothing ever updates or deletes a
-- row of this table (no sync, refresh, rebuild or migration): state is derived from it.
CREATE TABLE override_events (
    event_id                 VARCHAR PRIMARY KEY,
    override_id              VARCHAR NOT NULL,
    practice_id              VARCHAR NOT NULL,
    account_id               VARCHAR NOT NULL,
    event                    VARCHAR NOT NULL,   -- set | replaced | cleared | superseded | expired
    patient_portion          DECIMAL(14,2),      -- the override's values (NULL: field not set)
    insurance_portion        DECIMAL(14,2),
    base_patient_portion     DECIMAL(14,2),      -- synced values when it was set
    base_insurance_portion   DECIMAL(14,2),
    reason                   VARCHAR,
    actor                    VARCHAR,
    created_at               TIMESTAMPTZ NOT NULL,
    sync_id                  VARCHAR,            -- the sync that caused the event, if any
    synced_patient_portion   DECIMAL(14,2),      -- superseded: the new synced values
    synced_insurance_portion DECIMAL(14,2),
    sequence                 BIGINT NOT NULL     -- order of events (created_at may tie)
);
CREATE SEQUENCE override_event_sequence START 1;
