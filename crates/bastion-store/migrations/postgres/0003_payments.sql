-- Bastion schema v3 (PostgreSQL): payments storage. The same tables as
-- migrations/sqlite/0003_payments.sql, with row-level security on every table holding tenant
-- rows (the pattern and app_tenant_id() of 0001_init.sql). Run by the owner role; the
-- application role's row privileges are in rls.rs.

-- Idempotency keys (draft-ietf-httpapi-idempotency-key-header): one row per
-- (tenant, principal, key). The first durable write claims the key; a retry with another
-- request fingerprint is refused; a retry while the first is in flight waits for its lease;
-- a crashed worker's lease expires and the next retry resumes from the recovery point.
CREATE TABLE idempotency_keys (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    principal_id    TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    fingerprint     BYTEA NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('in_flight', 'completed')),
    recovery_point  TEXT NOT NULL,
    recovery_data   TEXT NOT NULL,
    response_status BIGINT,
    response_body   TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    locked_until    BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, principal_id, idem_key),
    CHECK ((state = 'completed') = (response_status IS NOT NULL AND response_body IS NOT NULL))
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (tenant_id, expires_at);

-- System table: webhooks arrive before any tenant is known. Deduplicated by the provider's
-- event id; ordering_key is the PSP object's own order (e.g. Stripe's event `created`).
CREATE TABLE webhook_inbox (
    provider     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    object_id    TEXT,
    ordering_key BIGINT NOT NULL,
    body         TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    processed_at BIGINT,
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX webhook_inbox_by_received ON webhook_inbox (received_at);

-- System table: the job queue shared by every instance, with its dead-letter state.
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'dead')),
    attempts     BIGINT NOT NULL CHECK (attempts >= 0),
    max_attempts BIGINT NOT NULL CHECK (max_attempts >= 1),
    run_at       BIGINT NOT NULL,
    locked_until BIGINT,
    locked_by    TEXT,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    CHECK ((state = 'running') = (locked_until IS NOT NULL))
);
CREATE INDEX jobs_due ON jobs (state, run_at);

-- Payments: one row per PSP payment object, attached to a record (the quote) and a user.
CREATE TABLE payments (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    id               TEXT NOT NULL,
    record_id        TEXT NOT NULL,
    psp              TEXT NOT NULL,
    psp_payment_id   TEXT NOT NULL,
    amount_minor     BIGINT NOT NULL CHECK (amount_minor > 0),
    currency         TEXT NOT NULL CHECK (length(currency) = 3),
    status           TEXT NOT NULL,
    status_version   BIGINT NOT NULL,
    captured_minor   BIGINT NOT NULL DEFAULT 0
                     CHECK (captured_minor >= 0 AND captured_minor <= amount_minor),
    refunded_minor   BIGINT NOT NULL DEFAULT 0,
    customer_id      TEXT NOT NULL,
    card_fingerprint TEXT,
    next_action      TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, psp, psp_payment_id),
    CHECK (refunded_minor <= captured_minor AND refunded_minor >= 0),
    FOREIGN KEY (tenant_id, record_id) REFERENCES records (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX payments_by_record ON payments (tenant_id, record_id, created_at);

-- Which tenant a PSP payment object belongs to, so a verified webhook (which names only the
-- PSP's id) finds its tenant. Written with the payment, in the tenant's transaction.
CREATE TABLE payment_routes (
    psp            TEXT NOT NULL,
    psp_payment_id TEXT NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (psp, psp_payment_id)
);

-- Velocity: one row per payment attempt per subject (a card fingerprint, a customer), summed
-- over a sliding window.
CREATE TABLE velocity_events (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    subject      TEXT NOT NULL,
    id           TEXT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency     TEXT NOT NULL CHECK (length(currency) = 3),
    at           BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX velocity_events_by_subject ON velocity_events (tenant_id, subject, at);
CREATE INDEX velocity_events_by_age ON velocity_events (tenant_id, at);

-- Row-level security on the new tenant tables.
DO $rls$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['idempotency_keys', 'payments', 'payment_routes', 'velocity_events']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I
                            USING (tenant_id = (SELECT app_tenant_id()))
                            WITH CHECK (tenant_id = (SELECT app_tenant_id()))', t);
    END LOOP;
END
$rls$;

-- payment_routes is read before any tenant is known: the system transaction (whose tenant
-- setting is the nil UUID of the system chain) may look a route up, and only look. A tenant
-- transaction still sees and writes only its own routes (tenant_isolation above). Permissive
-- policies are OR-ed; this one grants SELECT alone.
CREATE POLICY system_lookup ON payment_routes FOR SELECT
    USING ((SELECT app_tenant_id()) = '00000000-0000-0000-0000-000000000000');
