-- Bastion schema v1 (PostgreSQL). The same tables as migrations/sqlite/0001_init.sql, with
-- tenant isolation enforced by the database:
-- * every table holding tenant rows has ENABLE and FORCE ROW LEVEL SECURITY and one policy
--   comparing tenant_id with app_tenant_id();
-- * app_tenant_id() reads `app.tenant_id`, which Bastion sets with
--   set_config('app.tenant_id', ..., true) inside each transaction, and RAISES when it is
--   missing or empty: a query that forgot the tenant errors, it never returns nothing quietly;
-- * policies call it as `(SELECT app_tenant_id())`, an initplan evaluated once per statement,
--   and every key starts with tenant_id so the planner filters through the index;
-- * unique keys and foreign keys include tenant_id (a row cannot point into another tenant).
-- Run by the owner role; the application role receives row privileges only (see rls.rs).

CREATE FUNCTION app_tenant_id() RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $fn$
DECLARE
    t text := current_setting('app.tenant_id', true);
BEGIN
    IF t IS NULL OR t = '' THEN
        RAISE EXCEPTION 'app.tenant_id is not set in this transaction'
            USING ERRCODE = 'BA001',
                  HINT = 'tenant rows are read and written only inside a tenant transaction';
    END IF;
    RETURN t;
END
$fn$;

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
    secret         BYTEA NOT NULL,
    confirmed      BOOLEAN NOT NULL,
    last_used_step BIGINT NOT NULL DEFAULT -1,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE mfa_recovery_codes (
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    code_hash  BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (tenant_id, user_id, code_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE mfa_challenges (
    tenant_id  TEXT NOT NULL,
    token_hash BYTEA NOT NULL,
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
    token_hash BYTEA NOT NULL,
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
    prev_hash BYTEA NOT NULL,
    hash      BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE TABLE audit_heads (
    tenant_id TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      BYTEA NOT NULL
);

CREATE FUNCTION audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'BA002';
END
$fn$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_refuse();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse();
CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION audit_refuse();
CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse();

-- A head names an existing record, and moves forward one record at a time.
CREATE FUNCTION audit_head_checked() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.seq <> 1 THEN
        RAISE EXCEPTION 'audit head must name the first record' USING ERRCODE = 'BA002';
    END IF;
    IF TG_OP = 'UPDATE' AND (NEW.tenant_id <> OLD.tenant_id OR NEW.seq <> OLD.seq + 1) THEN
        RAISE EXCEPTION 'audit head only moves forward by one record' USING ERRCODE = 'BA002';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM audit_log l
                   WHERE l.tenant_id = NEW.tenant_id AND l.seq = NEW.seq AND l.hash = NEW.hash) THEN
        RAISE EXCEPTION 'audit head must name an existing record' USING ERRCODE = 'BA002';
    END IF;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER audit_heads_checked BEFORE INSERT OR UPDATE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION audit_head_checked();

-- Row-level security on every table that holds tenant rows.
DO $rls$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'mfa_totp', 'mfa_recovery_codes', 'mfa_challenges',
                             'refresh_families', 'refresh_tokens', 'records', 'record_refs',
                             'record_parents', 'audit_log', 'audit_heads']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I
                            USING (tenant_id = (SELECT app_tenant_id()))
                            WITH CHECK (tenant_id = (SELECT app_tenant_id()))', t);
    END LOOP;
END
$rls$;
