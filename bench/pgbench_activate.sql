-- The database's own ceiling for one `activate` request: the statements the server runs for it (the program
-- lookup and the conditional UPDATE; the token is served from the worker's cache), on random codes of the range.
\set n random(1, :codes)
SELECT id, account_id, name FROM programs WHERE id = :loyalty_id AND account_id = 1;
UPDATE code_bindings SET activated = 1
WHERE id = (
    SELECT b.id FROM code_bindings b JOIN codes c ON c.id = b.code_id
    WHERE c.program_id = :loyalty_id AND c.code_key = 'B' || lpad(:n::text, 7, '0') AND b.activated IS NULL
      AND (c.expire_date IS NULL OR c.expire_date > 1)
    ORDER BY b.id LIMIT 1)
AND activated IS NULL
RETURNING id;
