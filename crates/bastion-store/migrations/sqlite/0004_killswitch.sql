-- Bastion schema v4 (SQLite): the kill switch. The same table as
-- migrations/postgres/0004_killswitch.sql (which adds row-level security).
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
