-- Two rows the log's integrity leans on, which the roles may update, may only
-- move one way (helper-61's review):
--
-- A tenant's head only grows. A head moved back (a bug, a head restored from a
-- backup, a stolen system role) would let the next append commit a second row at
-- a seq already used: the primary key is (tenant_id, seq, received_at), so
-- nothing else refuses it, and reads by seq would return either row.
CREATE FUNCTION chain_heads_only_grow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id <> OLD.tenant_id OR NEW.tree_size < OLD.tree_size
        OR (NEW.tree_size = OLD.tree_size AND NEW.root_hash <> OLD.root_hash) THEN
        RAISE EXCEPTION 'sealtrail: the head of % may only grow (% -> %)',
            OLD.tenant_id, OLD.tree_size, NEW.tree_size
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER chain_heads_only_grow BEFORE UPDATE ON chain_heads
    FOR EACH ROW EXECUTE FUNCTION chain_heads_only_grow();

-- A revocation is final: setting revoked_at back to NULL revived a token. And
-- only tenant-scoped work revokes (every caller names the tenant), so the
-- cross-tenant role no longer may.
CREATE FUNCTION api_tokens_revocation_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        RAISE EXCEPTION 'sealtrail: token % was revoked; a revocation is final', OLD.token_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER api_tokens_revocation_final BEFORE UPDATE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION api_tokens_revocation_final();
REVOKE UPDATE (revoked_at) ON api_tokens FROM sealtrail_system;
