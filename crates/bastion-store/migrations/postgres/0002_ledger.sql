-- Bastion schema v2 (PostgreSQL): the double-entry ledger. The same tables as
-- migrations/sqlite/0002_ledger.sql, with row-level security like every tenant table:
-- * an entry's postings are inserted first, then its journal_entries row; the BEFORE INSERT
--   trigger on journal_entries refuses the entry unless it has at least two postings and they
--   sum to exactly zero per currency (Pacioli's equality of debits and credits);
-- * the BEFORE INSERT trigger on postings refuses a posting for an entry that already exists,
--   so nothing is added after the check; both triggers take a transaction advisory lock on
--   the entry, so a concurrent transaction cannot slip a posting in between (READ COMMITTED);
--   the deferred foreign key refuses, at commit, a posting whose entry never came;
-- * postings and journal entries are append-only (UPDATE, DELETE and TRUNCATE refused; the
--   application role is granted SELECT and INSERT only), and an entry is reversed at most once;
-- * a posting's currency is its account's (composite foreign key), and every key and
--   foreign key includes tenant_id;
-- * an account that may not go negative cannot (CHECK), whatever writes the balance.

CREATE TABLE ledger_accounts (
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    id             TEXT NOT NULL,
    code           TEXT NOT NULL,
    currency       TEXT NOT NULL CHECK (length(currency) = 3),
    allow_negative BOOLEAN NOT NULL,
    balance_minor  BIGINT NOT NULL DEFAULT 0,
    version        BIGINT NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, code, currency),
    UNIQUE (tenant_id, id, currency),
    CHECK (allow_negative OR balance_minor >= 0)
);

CREATE TABLE journal_entries (
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    id                TEXT NOT NULL,
    kind              TEXT NOT NULL,
    reference         TEXT NOT NULL,
    reverses_entry_id TEXT,
    created_at        BIGINT NOT NULL,
    detail            TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, reverses_entry_id),
    FOREIGN KEY (tenant_id, reverses_entry_id) REFERENCES journal_entries (tenant_id, id)
);
CREATE INDEX journal_entries_by_reference ON journal_entries (tenant_id, reference, created_at);

CREATE TABLE postings (
    tenant_id    TEXT NOT NULL,
    entry_id     TEXT NOT NULL,
    seq          BIGINT NOT NULL CHECK (seq >= 0),
    account_id   TEXT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor <> 0),
    currency     TEXT NOT NULL,
    PRIMARY KEY (tenant_id, entry_id, seq),
    FOREIGN KEY (tenant_id, entry_id) REFERENCES journal_entries (tenant_id, id)
        DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (tenant_id, account_id, currency)
        REFERENCES ledger_accounts (tenant_id, id, currency)
);
CREATE INDEX postings_by_account ON postings (tenant_id, account_id);

CREATE FUNCTION ledger_lock_entry(tenant text, entry text) RETURNS void
LANGUAGE sql VOLATILE
AS $fn$ SELECT pg_advisory_xact_lock(hashtextextended('bastion.ledger_entry:' || tenant || ':' || entry, 0)) $fn$;

CREATE FUNCTION ledger_posting_checked() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM ledger_lock_entry(NEW.tenant_id, NEW.entry_id);
    IF EXISTS (SELECT 1 FROM journal_entries e
               WHERE e.tenant_id = NEW.tenant_id AND e.id = NEW.entry_id) THEN
        RAISE EXCEPTION 'postings are inserted before their journal entry, never after'
            USING ERRCODE = 'BA003';
    END IF;
    RETURN NEW;
END
$fn$;

CREATE FUNCTION ledger_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint;
BEGIN
    PERFORM ledger_lock_entry(NEW.tenant_id, NEW.id);
    SELECT count(*) INTO n FROM postings p
    WHERE p.tenant_id = NEW.tenant_id AND p.entry_id = NEW.id;
    IF n < 2 THEN
        RAISE EXCEPTION 'journal entry is unbalanced: it needs two or more postings'
            USING ERRCODE = 'BA003';
    END IF;
    IF EXISTS (SELECT 1 FROM postings p
               WHERE p.tenant_id = NEW.tenant_id AND p.entry_id = NEW.id
               GROUP BY p.currency HAVING sum(p.amount_minor) <> 0) THEN
        RAISE EXCEPTION 'journal entry is unbalanced: postings do not sum to zero per currency'
            USING ERRCODE = 'BA003';
    END IF;
    RETURN NEW;
END
$fn$;

CREATE FUNCTION ledger_refuse() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'BA003';
END
$fn$;

-- An account keeps its identity: only its balance and version change.
CREATE FUNCTION ledger_account_checked() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.tenant_id <> OLD.tenant_id OR NEW.id <> OLD.id OR NEW.code <> OLD.code
       OR NEW.currency <> OLD.currency OR NEW.allow_negative <> OLD.allow_negative
       OR NEW.created_at <> OLD.created_at OR NEW.version <= OLD.version THEN
        RAISE EXCEPTION 'a ledger account changes only its balance, with a higher version'
            USING ERRCODE = 'BA003';
    END IF;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER postings_before_their_entry BEFORE INSERT ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_checked();
CREATE TRIGGER journal_entries_balanced BEFORE INSERT ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_balanced();
CREATE TRIGGER journal_entries_no_change BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse();
CREATE TRIGGER postings_no_change BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse();
CREATE TRIGGER ledger_accounts_identity_fixed BEFORE UPDATE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_account_checked();
CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse();
CREATE TRIGGER ledger_accounts_no_truncate BEFORE TRUNCATE ON ledger_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse();

-- Row-level security, as on every table that holds tenant rows (0001_init.sql).
DO $rls$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ledger_accounts', 'journal_entries', 'postings']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I
                            USING (tenant_id = (SELECT app_tenant_id()))
                            WITH CHECK (tenant_id = (SELECT app_tenant_id()))', t);
    END LOOP;
END
$rls$;
