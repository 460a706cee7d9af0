-- Times are INTEGER microseconds since the Unix epoch (UTC) on both adapters, so that every shared statement
-- compares them the same way; booleans are 0/1.
CREATE TABLE accounts (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL
);

CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name       TEXT NOT NULL DEFAULT '',
    role       TEXT NOT NULL CHECK (role IN ('admin', 'write', 'read')),
    token_hash TEXT NOT NULL UNIQUE,
    created    INTEGER NOT NULL,
    revoked    INTEGER
);
CREATE INDEX tokens_account ON tokens (account_id, id);

CREATE TABLE programs (
    id                   INTEGER PRIMARY KEY,
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
CREATE INDEX programs_account ON programs (account_id, id);

CREATE TABLE codes (
    id             INTEGER PRIMARY KEY,
    program_id     INTEGER NOT NULL REFERENCES programs (id) ON DELETE CASCADE,
    code           TEXT NOT NULL,
    code_key       TEXT NOT NULL,
    created        INTEGER NOT NULL,
    expire_date    INTEGER,
    attached_count INTEGER NOT NULL DEFAULT 0 CHECK (attached_count >= 0),
    UNIQUE (program_id, code_key)
);
CREATE INDEX codes_by_program ON codes (program_id, id);
-- "Next free code" stays an index seek at millions of codes: only free codes are in this index.
CREATE INDEX codes_free ON codes (program_id, id) WHERE attached_count = 0;

CREATE TABLE databases (
    id         INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created    INTEGER NOT NULL
);
CREATE INDEX databases_account ON databases (account_id, id);

CREATE TABLE profiles (
    id          INTEGER PRIMARY KEY,
    database_id INTEGER NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
    profile_id  TEXT NOT NULL UNIQUE,
    email       TEXT,
    email_key   TEXT,
    phones      TEXT NOT NULL DEFAULT '[]',
    fields      TEXT NOT NULL DEFAULT '{}',
    created     INTEGER NOT NULL,
    updated     INTEGER NOT NULL
);
CREATE INDEX profiles_email ON profiles (database_id, email_key);

CREATE TABLE profile_phones (
    profile_pk  INTEGER NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    database_id INTEGER NOT NULL,
    digits      TEXT NOT NULL
);
CREATE INDEX profile_phones_lookup ON profile_phones (database_id, digits);
CREATE INDEX profile_phones_profile ON profile_phones (profile_pk);

CREATE TABLE profile_fields (
    profile_pk  INTEGER NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    database_id INTEGER NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL
);
CREATE INDEX profile_fields_lookup ON profile_fields (database_id, name, value);
CREATE INDEX profile_fields_profile ON profile_fields (profile_pk);

-- One row per (code, profile). A personal code has at most one, guarded by codes.attached_count going 0 -> 1
-- in one conditional UPDATE; a multiple-usage code has one per profile, guarded by the UNIQUE constraint.
CREATE TABLE code_bindings (
    id         INTEGER PRIMARY KEY,
    code_id    INTEGER NOT NULL REFERENCES codes (id) ON DELETE CASCADE,
    profile_pk INTEGER NOT NULL REFERENCES profiles (id),
    attached   INTEGER NOT NULL,
    activated  INTEGER,
    UNIQUE (code_id, profile_pk)
);
CREATE INDEX code_bindings_profile ON code_bindings (profile_pk);
