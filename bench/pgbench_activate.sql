-- The database's own ceiling for one `activate` request: the statements the server runs for it (the program
-- lookup; then, in one transaction, the program's shared lock, the conditional UPDATE and its history event; the
-- token is served from the worker's cache), on random codes of the range. The UPDATE and the event's INSERT are one
-- statement here (the server sends two): pgbench cannot hand a RETURNING row to the next statement when a random
-- code drawn twice returns none.
\set n random(1, :codes)
SELECT id, account_id, name FROM programs WHERE id = :loyalty_id AND account_id = 1;
BEGIN;
SELECT id FROM programs WHERE id = :loyalty_id FOR KEY SHARE;
WITH activated AS (
    UPDATE code_bindings SET activated = 1
    WHERE id = (
        SELECT b.id FROM code_bindings b JOIN codes c ON c.id = b.code_id
        WHERE c.program_id = :loyalty_id AND c.code_key = 'B' || lpad(:n::text, 7, '0') AND b.activated IS NULL
          AND (c.expire_date IS NULL OR c.expire_date > 1)
        ORDER BY b.id LIMIT 1)
    AND activated IS NULL
    RETURNING code_id, profile_pk
)
INSERT INTO code_events (program_id, code_id, time, event, token_id, token_name, details, profile_id, database_id)
SELECT :loyalty_id, a.code_id, 1, 'activated', 1, 'bench', NULL, p.profile_id, p.database_id
FROM activated a JOIN profiles p ON p.id = a.profile_pk;
COMMIT;
