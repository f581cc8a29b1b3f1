-- Bastion schema v1 (SQLite). Written to port to Postgres: TEXT ids (hyphenated UUIDs),
-- BIGINT Unix seconds, JSON as TEXT, every unique key and foreign key includes tenant_id.
-- Booleans are BOOLEAN (INTEGER 0/1 in SQLite). Hashes and secrets are BLOB (BYTEA).

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    slug       TEXT NOT NULL UNIQUE,
    region     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    id            TEXT NOT NULL,
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL,
    is_demo       BOOLEAN NOT NULL DEFAULT FALSE,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    session_epoch BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, username),
    UNIQUE (id)
);

CREATE TABLE mfa_totp (
    tenant_id      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    secret         BLOB NOT NULL,
    confirmed      BOOLEAN NOT NULL,
    last_used_step BIGINT NOT NULL DEFAULT -1,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE mfa_recovery_codes (
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    code_hash  BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (tenant_id, user_id, code_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE mfa_challenges (
    tenant_id  TEXT NOT NULL,
    token_hash BLOB NOT NULL,
    user_id    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE refresh_families (
    tenant_id           TEXT NOT NULL,
    id                  TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    auth_time           BIGINT NOT NULL,
    amr                 TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    revoked_at          BIGINT,
    revoked_reason      TEXT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX refresh_families_by_user ON refresh_families (tenant_id, user_id);

CREATE TABLE refresh_tokens (
    tenant_id  TEXT NOT NULL,
    token_hash BLOB NOT NULL,
    family_id  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, family_id) REFERENCES refresh_families (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (tenant_id, family_id);

-- System table: no tenant. Keys are namespaced by the caller (e.g. `login:<tenant>:<user>`).
CREATE TABLE throttles (
    throttle_key TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    hits         BIGINT NOT NULL
);

CREATE TABLE records (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    id         TEXT NOT NULL,
    entity     TEXT NOT NULL,
    owner_id   TEXT NOT NULL,
    data       TEXT NOT NULL,
    version    BIGINT NOT NULL CHECK (version >= 1),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, entity, id),
    FOREIGN KEY (tenant_id, owner_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX records_by_entity ON records (tenant_id, entity, created_at, id);
CREATE INDEX records_by_owner ON records (tenant_id, entity, owner_id);

-- User-typed fields of a record, so list scopes like "seller = me" filter in SQL.
CREATE TABLE record_refs (
    tenant_id TEXT NOT NULL,
    record_id TEXT NOT NULL,
    field     TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, record_id, field),
    FOREIGN KEY (tenant_id, record_id) REFERENCES records (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX record_refs_by_user ON record_refs (tenant_id, field, user_id, record_id);

-- Ref-typed fields (parents). The composite foreign key makes the database itself refuse a
-- parent of another tenant or of another entity (case Z5).
CREATE TABLE record_parents (
    tenant_id     TEXT NOT NULL,
    record_id     TEXT NOT NULL,
    field         TEXT NOT NULL,
    parent_entity TEXT NOT NULL,
    parent_id     TEXT NOT NULL,
    PRIMARY KEY (tenant_id, record_id, field),
    FOREIGN KEY (tenant_id, record_id) REFERENCES records (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, parent_entity, parent_id) REFERENCES records (tenant_id, entity, id)
);
CREATE INDEX record_parents_by_parent ON record_parents (tenant_id, parent_entity, parent_id);

-- The audit chains. tenant_id is the nil UUID for the system chain, so no foreign key.
CREATE TABLE audit_log (
    tenant_id TEXT NOT NULL,
    seq       BIGINT NOT NULL CHECK (seq >= 1),
    at        BIGINT NOT NULL,
    body      TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE TABLE audit_heads (
    tenant_id TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      BLOB NOT NULL
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
BEGIN
    SELECT RAISE(ABORT, 'audit_heads rows are permanent');
END;

-- A head names an existing record, and moves forward one record at a time.
CREATE TRIGGER audit_heads_insert_checked BEFORE INSERT ON audit_heads
WHEN NEW.seq <> 1 OR NOT EXISTS (
    SELECT 1 FROM audit_log l WHERE l.tenant_id = NEW.tenant_id AND l.seq = NEW.seq AND l.hash = NEW.hash
)
BEGIN
    SELECT RAISE(ABORT, 'audit head must name the first record');
END;

CREATE TRIGGER audit_heads_update_checked BEFORE UPDATE ON audit_heads
WHEN NEW.tenant_id <> OLD.tenant_id OR NEW.seq <> OLD.seq + 1 OR NOT EXISTS (
    SELECT 1 FROM audit_log l WHERE l.tenant_id = NEW.tenant_id AND l.seq = NEW.seq AND l.hash = NEW.hash
)
BEGIN
    SELECT RAISE(ABORT, 'audit head only moves forward by one record');
END;
