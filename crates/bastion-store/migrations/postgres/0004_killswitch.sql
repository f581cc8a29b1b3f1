-- Bastion schema v4 (PostgreSQL): the kill switch. The same table as
-- migrations/sqlite/0004_killswitch.sql, with row-level security.
--
-- One row per switch, kept after release (engaged = FALSE) so the last change and its author
-- stay visible. `tenant_id` and `tool` hold '' when the scope does not name one, so the
-- primary key has no NULLs and the scope column always agrees with them (CHECK below):
--   global      ('',     '')      every tool of every tenant
--   tool        ('',     tool)    one tool in every tenant
--   tenant      (tenant, '')      every tool of one tenant
--   tenant_tool (tenant, tool)    one tool of one tenant
CREATE TABLE kill_switches (
    scope      TEXT NOT NULL CHECK (scope IN ('global', 'tenant', 'tool', 'tenant_tool')),
    tenant_id  TEXT NOT NULL DEFAULT '',
    tool       TEXT NOT NULL DEFAULT '',
    engaged    BOOLEAN NOT NULL,
    reason     TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    PRIMARY KEY (scope, tenant_id, tool),
    CHECK ((tenant_id <> '') = (scope IN ('tenant', 'tenant_tool'))),
    CHECK ((tool <> '') = (scope IN ('tool', 'tenant_tool')))
);

-- Row-level security. Permissive policies are OR-ed:
-- * tenant_isolation: a tenant transaction reads and writes its own tenant's switches only
--   (a tenant admin cannot write another tenant's row, nor a global or tool-wide one: those
--   have tenant_id '' and fail the WITH CHECK);
-- * shared_read: every transaction reads the rows that name no tenant (global, tool-wide),
--   which is what lets the tool pipeline check every scope inside the tenant transaction of
--   the call itself;
-- * system_shared: the system transaction (tenant setting = the nil UUID of the system chain)
--   writes the rows that name no tenant, and only those;
-- * system_read: the system transaction reads every switch (operator listing). Switch rows
--   hold an operator's reason, never tenant business data.
ALTER TABLE kill_switches ENABLE ROW LEVEL SECURITY;
ALTER TABLE kill_switches FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON kill_switches
    USING (tenant_id = (SELECT app_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app_tenant_id()));
CREATE POLICY shared_read ON kill_switches FOR SELECT
    USING (tenant_id = '');
CREATE POLICY system_shared ON kill_switches
    USING ((SELECT app_tenant_id()) = '00000000-0000-0000-0000-000000000000' AND tenant_id = '')
    WITH CHECK ((SELECT app_tenant_id()) = '00000000-0000-0000-0000-000000000000' AND tenant_id = '');
CREATE POLICY system_read ON kill_switches FOR SELECT
    USING ((SELECT app_tenant_id()) = '00000000-0000-0000-0000-000000000000');
