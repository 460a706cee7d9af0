-- The history of every code (docs/api.md#history): one row per state change, written in the transaction that makes
-- the change. A code's history is the rows naming it (code_id) plus the batch event it was created by
-- (codes.created_event), in id order.
--
-- AUTOINCREMENT: an event id is a paging cursor (`after`), so it is never handed out twice, even after a delete.
-- token_id is no foreign key, and profile_id / database_id are copied values: the history outlives a revoked token
-- and a deleted profile. A batch event (an import's `created`) names no code: code_id is NULL, and each code it
-- created points at it from codes.created_event instead, so that an import of a million codes writes one event,
-- not a million.
CREATE TABLE code_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    program_id  INTEGER NOT NULL REFERENCES programs (id) ON DELETE CASCADE,
    code_id     INTEGER REFERENCES codes (id) ON DELETE CASCADE,
    time        INTEGER NOT NULL,
    event       TEXT NOT NULL,
    token_id    INTEGER,
    token_name  TEXT NOT NULL,
    profile_id  TEXT,
    database_id INTEGER,
    details     TEXT
);
CREATE INDEX code_events_code ON code_events (code_id, id);

-- No foreign key: both the code and its batch event go only with their program (by cascade), and a key here would
-- need an index on codes.created_event for deletes of events to stay fast, paid on every import for nothing.
ALTER TABLE codes ADD COLUMN created_event INTEGER;
