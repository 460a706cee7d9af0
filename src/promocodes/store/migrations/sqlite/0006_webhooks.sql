-- Webhooks (docs/api.md#webhooks): the account's subscriptions, the event types each one takes, and the outbox of
-- deliveries, written in the transaction of the change that records the event (store/events.py).
--
-- AUTOINCREMENT: a webhook id is never handed out twice, even after a delete. A delivery goes with its webhook
-- and with its event (which goes with its program, by cascade). code_id repeats the event's code (NULL for a program event) so that
-- the worker can keep the events of one code in order without a join.
CREATE TABLE webhooks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    active      INTEGER NOT NULL DEFAULT 1,
    secret      TEXT NOT NULL,
    created     INTEGER NOT NULL
);
CREATE INDEX webhooks_account ON webhooks (account_id, id);

CREATE TABLE webhook_events (
    webhook_id INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_type TEXT NOT NULL,
    PRIMARY KEY (webhook_id, event_type)
);

CREATE TABLE webhook_deliveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id   INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id     INTEGER NOT NULL REFERENCES code_events (id) ON DELETE CASCADE,
    code_id      INTEGER,
    state        TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_status  INTEGER,
    last_error   TEXT NOT NULL DEFAULT '',
    created      INTEGER NOT NULL,
    finished     INTEGER
);
-- The worker's pick: the pending deliveries in id order (a partial index stays as small as the backlog).
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (id) WHERE state = 'pending';
-- webhooks/deliveries: a webhook's recent deliveries; also the cascade from a deleted webhook.
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);
-- The cascade from a deleted event (a deleted program's history).
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

-- At most one row: which worker delivers, until when (docs/api.md#webhooks). A worker takes or renews the lease
-- with one conditional upsert (store/webhooks.py); the others find it held and wait.
CREATE TABLE webhook_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    owner       TEXT NOT NULL DEFAULT '',
    lease_until INTEGER NOT NULL DEFAULT 0
);
