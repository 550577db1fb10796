-- Two tables the service's roles only read: the deployment sinks, and which
-- migrations were applied.
--
-- The deployment sinks are the operator's (ADR 0070): `sealtrail-server sink`
-- writes them as the tables' owner. With INSERT and UPDATE, a stolen service
-- login paused, re-filtered or re-pointed the SOC's sink of every tenant, and
-- each tenant's log recorded the change under an operator name it made up
-- (helper-203). The servers only read a definition, and remove one the
-- operator marked as being deleted once its instances are gone (a deletion
-- interrupted midway): DELETE stays for that, of such a row only.
REVOKE INSERT, UPDATE ON deployment_sinks FROM sealtrail_system;

-- The system role bypasses row-level security, so a policy could not narrow
-- its DELETE: a trigger does, for every role (the owner deletes no other).
CREATE FUNCTION deployment_sinks_deleted_only_once_marked() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.deleted_at IS NULL THEN
        RAISE EXCEPTION 'sealtrail: deployment sink % is not being deleted; only its operator deletes it (sealtrail-server sink delete)', OLD.name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER deployment_sinks_deleted_only_once_marked BEFORE DELETE ON deployment_sinks
    FOR EACH ROW EXECUTE FUNCTION deployment_sinks_deleted_only_once_marked();

-- Which migrations were applied: an operator's command on a database this
-- release migrated reads it as the service's login, and needs no owner's URL
-- (helper-203). Versions and names only.
GRANT SELECT ON schema_migrations TO sealtrail_service, sealtrail_system;
