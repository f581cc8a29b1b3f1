-- Bastion schema v5 (SQLite): human approvals (issue 4 item 4). The same table as
-- migrations/postgres/0005_approvals.sql (which adds row-level security).
--
-- One row per approval request: the exact arguments of the held tool call (canonical JSON)
-- and their SHA-256, who asked and why, until when it may be decided, who decided, and the
-- outcome. Status moves only forward:
--   pending -> approved -> executed | failed
--   pending -> rejected | expired
-- The pending -> approved step is one conditional UPDATE (status = 'pending' and not
-- expired), so an approval is used at most once even when two approvers race.
CREATE TABLE approvals (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    id              TEXT NOT NULL,
    tool            TEXT NOT NULL,
    args            TEXT NOT NULL,
    args_hash       TEXT NOT NULL CHECK (length(args_hash) = 64),
    requested_by    TEXT NOT NULL,
    reason          TEXT NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('pending', 'approved', 'rejected', 'executed', 'expired', 'failed')),
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL CHECK (expires_at > created_at),
    decided_by      TEXT,
    decided_at      BIGINT,
    idempotency_key TEXT,
    result          TEXT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, requested_by) REFERENCES users (tenant_id, id),
    FOREIGN KEY (tenant_id, decided_by) REFERENCES users (tenant_id, id),
    -- A decided approval names who decided and when; a pending one names nobody.
    CHECK ((status IN ('pending', 'expired')) = (decided_at IS NULL)),
    CHECK ((decided_by IS NULL) = (decided_at IS NULL)),
    -- Four eyes, in the database too: nobody decides their own request.
    CHECK (decided_by IS NULL OR decided_by <> requested_by)
);
CREATE INDEX approvals_by_status ON approvals (tenant_id, status, created_at);
CREATE INDEX approvals_by_requester ON approvals (tenant_id, requested_by, created_at);
