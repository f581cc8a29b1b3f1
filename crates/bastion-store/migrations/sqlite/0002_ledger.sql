-- Bastion schema v2 (SQLite): the double-entry ledger. The same tables as
-- migrations/postgres/0002_ledger.sql; the invariants are enforced by the database itself:
-- * an entry's postings are inserted first, then its journal_entries row; the BEFORE INSERT
--   trigger on journal_entries refuses the entry unless it has at least two postings and they
--   sum to exactly zero per currency (Pacioli's equality of debits and credits);
-- * the BEFORE INSERT trigger on postings refuses a posting for an entry that already exists,
--   so nothing is added after the check; the deferred foreign key refuses, at commit, a posting
--   whose entry never came;
-- * postings and journal entries are append-only (corrections are reversing entries), and an
--   entry is reversed at most once;
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

CREATE TRIGGER postings_before_their_entry BEFORE INSERT ON postings
WHEN EXISTS (SELECT 1 FROM journal_entries e
             WHERE e.tenant_id = NEW.tenant_id AND e.id = NEW.entry_id)
BEGIN
    SELECT RAISE(ABORT, 'postings are inserted before their journal entry, never after');
END;

CREATE TRIGGER journal_entries_balanced BEFORE INSERT ON journal_entries
WHEN (SELECT COUNT(*) FROM postings p
      WHERE p.tenant_id = NEW.tenant_id AND p.entry_id = NEW.id) < 2
  OR EXISTS (SELECT 1 FROM postings p
             WHERE p.tenant_id = NEW.tenant_id AND p.entry_id = NEW.id
             GROUP BY p.currency HAVING SUM(p.amount_minor) <> 0)
BEGIN
    SELECT RAISE(ABORT, 'journal entry is unbalanced: it needs two or more postings summing to zero per currency');
END;

CREATE TRIGGER journal_entries_no_update BEFORE UPDATE ON journal_entries
BEGIN
    SELECT RAISE(ABORT, 'journal_entries is append-only');
END;

CREATE TRIGGER journal_entries_no_delete BEFORE DELETE ON journal_entries
BEGIN
    SELECT RAISE(ABORT, 'journal_entries is append-only');
END;

CREATE TRIGGER postings_no_update BEFORE UPDATE ON postings
BEGIN
    SELECT RAISE(ABORT, 'postings is append-only');
END;

CREATE TRIGGER postings_no_delete BEFORE DELETE ON postings
BEGIN
    SELECT RAISE(ABORT, 'postings is append-only');
END;

-- An account keeps its identity: only its balance and version change.
CREATE TRIGGER ledger_accounts_identity_fixed BEFORE UPDATE ON ledger_accounts
WHEN NEW.tenant_id <> OLD.tenant_id OR NEW.id <> OLD.id OR NEW.code <> OLD.code
  OR NEW.currency <> OLD.currency OR NEW.allow_negative <> OLD.allow_negative
  OR NEW.created_at <> OLD.created_at OR NEW.version <= OLD.version
BEGIN
    SELECT RAISE(ABORT, 'a ledger account changes only its balance, with a higher version');
END;

CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts
BEGIN
    SELECT RAISE(ABORT, 'ledger accounts are permanent');
END;
