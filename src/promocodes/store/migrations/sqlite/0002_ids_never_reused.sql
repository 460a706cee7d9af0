-- Ids that clients hold are never handed out again after a delete. A plain INTEGER PRIMARY KEY takes max(id) + 1,
-- so deleting the newest program and creating another reused its id: an old client's loyalty_id would then name a
-- different program. AUTOINCREMENT makes SQLite remember the largest id ever used (in sqlite_sequence).
--
-- PostgreSQL needs no counterpart: its ids are identity columns, whose sequence only moves forward and is not
-- rolled back by a delete (or by a failed insert).
--
-- Rebuilt: accounts, tokens, programs, databases, profiles. codes and code_bindings keep plain ids: theirs never
-- leave the server (export pages by id within one pass only), and those tables are the big ones.
--
-- SQLite cannot change a primary key in place, so each table is rebuilt by its documented procedure: create the
-- new table, copy every row with its id, drop the old one, rename, recreate the indexes. The runner turns foreign
-- keys off around every migration (with them on, dropping a parent would delete its children by cascade) and runs
-- PRAGMA foreign_key_check before it commits. The copied ids also seed sqlite_sequence, so the next id is above the
-- largest one present (an id deleted before this migration, above all those present, cannot be known any more).

CREATE TABLE accounts_new (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL
);
INSERT INTO accounts_new (id, name, created) SELECT id, name, created FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;

CREATE TABLE tokens_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name       TEXT NOT NULL DEFAULT '',
    role       TEXT NOT NULL CHECK (role IN ('admin', 'write', 'read')),
    token_hash TEXT NOT NULL UNIQUE,
    created    INTEGER NOT NULL,
    revoked    INTEGER
);
INSERT INTO tokens_new (id, account_id, name, role, token_hash, created, revoked)
    SELECT id, account_id, name, role, token_hash, created, revoked FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;
CREATE INDEX tokens_account ON tokens (account_id, id);

CREATE TABLE programs_new (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id           INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name                 TEXT NOT NULL,
    short_name           TEXT NOT NULL DEFAULT '',
    description          TEXT NOT NULL DEFAULT '',
    active               INTEGER NOT NULL DEFAULT 1,
    valid_from           INTEGER,
    valid_to             INTEGER,
    multiple_usage       INTEGER NOT NULL DEFAULT 0,
    case_sensitive       INTEGER NOT NULL DEFAULT 1,
    codes_limit          INTEGER,
    create_on_attach     INTEGER NOT NULL DEFAULT 1,
    template             TEXT,
    generate_on_attach   INTEGER NOT NULL DEFAULT 0,
    one_code_per_profile INTEGER NOT NULL DEFAULT 0,
    code_count           INTEGER NOT NULL DEFAULT 0,
    created              INTEGER NOT NULL
);
INSERT INTO programs_new (id, account_id, name, short_name, description, active, valid_from, valid_to,
                          multiple_usage, case_sensitive, codes_limit, create_on_attach, template,
                          generate_on_attach, one_code_per_profile, code_count, created)
    SELECT id, account_id, name, short_name, description, active, valid_from, valid_to,
           multiple_usage, case_sensitive, codes_limit, create_on_attach, template,
           generate_on_attach, one_code_per_profile, code_count, created
    FROM programs;
DROP TABLE programs;
ALTER TABLE programs_new RENAME TO programs;
CREATE INDEX programs_account ON programs (account_id, id);

CREATE TABLE databases_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created    INTEGER NOT NULL
);
INSERT INTO databases_new (id, account_id, name, created) SELECT id, account_id, name, created FROM databases;
DROP TABLE databases;
ALTER TABLE databases_new RENAME TO databases;
CREATE INDEX databases_account ON databases (account_id, id);

CREATE TABLE profiles_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    database_id INTEGER NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
    profile_id  TEXT NOT NULL UNIQUE,
    email       TEXT,
    email_key   TEXT,
    phones      TEXT NOT NULL DEFAULT '[]',
    fields      TEXT NOT NULL DEFAULT '{}',
    created     INTEGER NOT NULL,
    updated     INTEGER NOT NULL
);
INSERT INTO profiles_new (id, database_id, profile_id, email, email_key, phones, fields, created, updated)
    SELECT id, database_id, profile_id, email, email_key, phones, fields, created, updated FROM profiles;
DROP TABLE profiles;
ALTER TABLE profiles_new RENAME TO profiles;
CREATE INDEX profiles_email ON profiles (database_id, email_key);
