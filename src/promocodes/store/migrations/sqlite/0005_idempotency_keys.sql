-- Idempotent retries (docs/api.md#idempotent-retries): the first answer to a request with an Idempotency-Key, per
-- account, written in the transaction of the change it describes. `fingerprint` is the SHA-256 (hex) of the method
-- and its parameters; `answer` the envelope's members but `error` and `error_text` (`data`, and import's counters)
-- as JSON. A row whose `created` is older than the keep time counts as absent and is purged in the background.
CREATE TABLE idempotency_keys (
    account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    error       INTEGER NOT NULL,
    error_text  TEXT NOT NULL,
    answer      TEXT NOT NULL,
    created     INTEGER NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created);
