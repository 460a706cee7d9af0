-- Program statistics from counters (docs/api.md#program-statistics, docs/console.md#one-program): per program,
-- per UTC day (microseconds // 86,400,000,000) and per shard, how many codes were created, first bound to a profile
-- (attached: attached_count 0 -> 1), released (detached: 1 -> 0), first activated (activated: no activated binding
-- -> one) and last deactivated (deactivated: one -> none). Written in the transaction of the change
-- (store/events.py, bump); the statistics are sums of these rows, so a page reads a few rows per day instead of
-- every code.
--
-- shard spreads one day's counters over rows so that concurrent changes do not queue on one row: on SQLite, whose
-- writes are serial, it is always 0. The rows of a program go with it (cascade).
CREATE TABLE program_days (
    program_id  INTEGER NOT NULL REFERENCES programs (id) ON DELETE CASCADE,
    day         INTEGER NOT NULL,
    shard       INTEGER NOT NULL,
    created     INTEGER NOT NULL DEFAULT 0,
    attached    INTEGER NOT NULL DEFAULT 0,
    detached    INTEGER NOT NULL DEFAULT 0,
    activated   INTEGER NOT NULL DEFAULT 0,
    deactivated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, day, shard)
);

-- How many of the code's bindings are activated: the statement that activates or deactivates a binding also moves
-- this (under the code's row lock), and its new value says whether the code has just become activated (0 -> 1) or
-- stopped being so (-> 0), which a multiple-usage code cannot tell from its binding alone.
ALTER TABLE codes ADD COLUMN activated_count INTEGER NOT NULL DEFAULT 0 CHECK (activated_count >= 0);
UPDATE codes SET activated_count = (SELECT count(activated) FROM code_bindings WHERE code_id = codes.id)
WHERE id IN (SELECT code_id FROM code_bindings WHERE activated IS NOT NULL);

-- expired / free depend on the time: counted as an index-only range of this index (codes with an expiry only).
CREATE INDEX codes_expiry ON codes (program_id, expire_date, attached_count) WHERE expire_date IS NOT NULL;

-- The counters of the codes present now: created on their creation day, attached on the day of their oldest binding,
-- activated on the day of their first activation (shard 0).
INSERT INTO program_days (program_id, day, shard, created, attached, activated)
SELECT program_id, day, 0, sum(created), sum(attached), sum(activated) FROM (
    SELECT program_id, created / 86400000000 AS day, 1 AS created, 0 AS attached, 0 AS activated FROM codes
    UNION ALL
    SELECT c.program_id, min(b.attached) / 86400000000, 0, 1, 0
    FROM codes c JOIN code_bindings b ON b.code_id = c.id WHERE c.attached_count > 0 GROUP BY c.id, c.program_id
    UNION ALL
    SELECT c.program_id, min(b.activated) / 86400000000, 0, 0, 1
    FROM codes c JOIN code_bindings b ON b.code_id = c.id WHERE b.activated IS NOT NULL GROUP BY c.id, c.program_id
) AS changes
GROUP BY program_id, day;
