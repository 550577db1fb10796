-- Defence in depth (ADR 0013, docs/database.md). The service never works as the
-- tables' owner; its connections assume one of two roles that hold only what
-- the service needs, and neither may UPDATE, DELETE or TRUNCATE the log:
--
--   sealtrail_service  tenant-scoped work (every read an RPC makes, token and
--                      settings changes); row-level security shows it only the
--                      rows of the tenant named by `sealtrail.tenant`, a
--                      setting each connection is given at checkout.
--   sealtrail_system   the cross-tenant machinery (the appender's COPY, the
--                      stream hub's fan-out, the checkpointer, token lookup by
--                      secret): BYPASSRLS, which COPY FROM requires.
--
-- The owner (whoever runs migrations; later also retention and erasure) keeps
-- every other privilege. Creating a BYPASSRLS role takes a superuser: without
-- one, a DBA creates both roles first (docs/database.md).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sealtrail_service') THEN
        CREATE ROLE sealtrail_service NOLOGIN NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sealtrail_system') THEN
        CREATE ROLE sealtrail_system NOLOGIN BYPASSRLS;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE EXCEPTION 'sealtrail: roles sealtrail_service and sealtrail_system are missing and % may not create them', current_user
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Have a superuser create them first, as docs/database.md shows.';
END
$$;

DO $$
BEGIN
    IF (SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = 'sealtrail_service') THEN
        RAISE EXCEPTION 'sealtrail: role sealtrail_service must not bypass row-level security'
            USING HINT = 'ALTER ROLE sealtrail_service NOSUPERUSER NOBYPASSRLS';
    END IF;
    IF NOT (SELECT rolbypassrls FROM pg_roles WHERE rolname = 'sealtrail_system') THEN
        RAISE EXCEPTION 'sealtrail: role sealtrail_system must bypass row-level security'
            USING HINT = 'As a superuser: ALTER ROLE sealtrail_system BYPASSRLS';
    END IF;
END
$$;

-- What each role may do. Nothing here lets either change or remove a row of
-- events, tree_nodes or checkpoints.
GRANT SELECT ON events, chain_heads, tree_nodes, checkpoints, signing_keys, api_tokens,
    tenant_settings TO sealtrail_service, sealtrail_system;
GRANT INSERT ON api_tokens, tenant_settings TO sealtrail_service;
GRANT UPDATE (revoked_at) ON api_tokens TO sealtrail_service, sealtrail_system;
GRANT UPDATE (redaction_mode, updated_at) ON tenant_settings TO sealtrail_service;
GRANT INSERT ON events, tree_nodes, checkpoints, signing_keys, chain_heads TO sealtrail_system;
GRANT UPDATE (tree_size, root_hash, frontier, updated_at) ON chain_heads TO sealtrail_system;

-- Row-level security by tenant on every tenant's table (signing_keys holds
-- public keys only). A connection whose `sealtrail.tenant` is unset sees nothing.
-- USING is written so that it can only ever be a filter, never an index
-- condition: as `tenant_id = current_setting(...)` the planner added it to the
-- key probes' index conditions (events.KEY_PROBE), and an equality beside their
-- row comparison made each probe walk the tenant's rows from the first (proofs
-- at a fifth of their speed). The sub-select reads the setting once per query.
CREATE FUNCTION sealtrail_isolate_by_tenant(target regclass) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s TO sealtrail_service'
        ' USING ((tenant_id = (SELECT current_setting(''sealtrail.tenant'', true))) IS TRUE)'
        ' WITH CHECK (tenant_id = current_setting(''sealtrail.tenant'', true))',
        target);
END
$$;
REVOKE EXECUTE ON FUNCTION sealtrail_isolate_by_tenant(regclass) FROM PUBLIC;
COMMENT ON FUNCTION sealtrail_isolate_by_tenant(regclass) IS
    'Row-level security by tenant, as every table keyed by tenant has it; migrations call it for each such table they add.';

SELECT sealtrail_isolate_by_tenant(name::regclass)
FROM unnest(ARRAY['events', 'chain_heads', 'tree_nodes', 'checkpoints', 'api_tokens',
    'tenant_settings']) AS name;
