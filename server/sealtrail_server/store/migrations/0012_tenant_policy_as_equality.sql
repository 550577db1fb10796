-- Row-level security by a plain equality (ADR 0013, addendum). Written as
-- `(tenant_id = (SELECT current_setting(...))) IS TRUE`, the policy was a
-- per-row filter the planner could not relate to the statement's own
-- `tenant_id = $1`: it counted the tenant twice, and estimated every read of
-- the service's role at about one tenant in N of its true size (N tenants).
-- At 10M events over 100 tenants that chose to sort every match over reading
-- a page in order: an action-prefix Query took 41 ms as the service and
-- 0.25 ms as the owner. As an equality, the policy joins the statement's
-- tenant condition (an equivalence class): estimated once, checked once per
-- statement (a one-time filter), and no per-row cost.
--
-- Statements of the service therefore name their tenant with an equality;
-- key probes do it beside a range on their key's next column, never a row
-- comparison, which the B-tree would start at the tenant's first row.
CREATE OR REPLACE FUNCTION sealtrail_isolate_by_tenant(target regclass) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s TO sealtrail_service'
        ' USING (tenant_id = current_setting(''sealtrail.tenant'', true))'
        ' WITH CHECK (tenant_id = current_setting(''sealtrail.tenant'', true))',
        target);
END
$$;

DO $$
DECLARE
    target regclass;
BEGIN
    FOR target IN
        SELECT format('%I.%I', schemaname, tablename)::regclass FROM pg_policies
        WHERE policyname = 'tenant_isolation' AND schemaname = current_schema()
    LOOP
        EXECUTE format(
            'ALTER POLICY tenant_isolation ON %s'
            ' USING (tenant_id = current_setting(''sealtrail.tenant'', true))',
            target);
    END LOOP;
END
$$;
