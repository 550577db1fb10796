-- The covering indexes migrations 0060 and 0061 built (or found built
-- beforehand, as docs/database.md prints) replace the indexes they widen,
-- under their names: events_credential_covering becomes events_credential_id
-- (ADR 0144), events_action_covering events_action (ADR 0145), so that docs,
-- plans and operators name one index as before.
--
-- Apart from the builds: a drop takes an ACCESS EXCLUSIVE lock on events,
-- which waits behind every reader (an export, a count, VerifyLog), and the
-- migration gives up after its lock timeout and tries again (ADR 0050). In
-- the builds' transactions, each attempt given up threw its build away and
-- the next built it again while appends waited; here an attempt given up
-- throws away a catalog change, and the builds stand, committed.
--
-- Each index is checked before the drop that would put it in the old one's
-- place: an invalid one (indisvalid false, of its own or of a partition's: a
-- build beforehand that failed, or whose partitions are not all attached),
-- or one missing (dropped since), is refused, naming it, and nothing here is
-- applied: the counts and filters would silently have lost their index.
DO $$
DECLARE
    built text;
BEGIN
    FOREACH built IN ARRAY ARRAY['events_credential_covering', 'events_action_covering'] LOOP
        IF to_regclass(built) IS NULL THEN
            RAISE EXCEPTION 'sealtrail: index % is missing: build it as docs/database.md says', built;
        END IF;
        IF EXISTS (SELECT FROM pg_index AS x
                    WHERE x.indexrelid = to_regclass(built) AND NOT x.indisvalid
                   UNION ALL
                   SELECT FROM pg_inherits AS i JOIN pg_index AS x ON x.indexrelid = i.inhrelid
                    WHERE i.inhparent = to_regclass(built) AND NOT x.indisvalid) THEN
            RAISE EXCEPTION 'sealtrail: index % is invalid (a build beforehand failed or was not finished): drop it or finish it as docs/database.md says', built;
        END IF;
    END LOOP;
END
$$;
-- Each drop changes the catalog and unlinks files at commit, reading no row;
-- its lock on events is held to the commit (reads wait too), as 0054's.
DROP INDEX IF EXISTS events_credential_id;
ALTER INDEX events_credential_covering RENAME TO events_credential_id;
DROP INDEX IF EXISTS events_action;
ALTER INDEX events_action_covering RENAME TO events_action;
-- Each partition's action index takes the name PostgreSQL gives it on a
-- partition made afterwards (`events_2025_01_tenant_id_action_seq_occurred_at_idx`):
-- one built beforehand as docs/database.md says ends `_action_covering`.
-- The credential index's partitions keep theirs (docs/database.md).
DO $$
DECLARE
    child record;
    plain text;
BEGIN
    FOR child IN
        SELECT i.inhrelid::regclass AS index, c.relname AS name, t.relname AS partition
          FROM pg_inherits AS i
          JOIN pg_class AS c ON c.oid = i.inhrelid
          JOIN pg_index AS x ON x.indexrelid = i.inhrelid
          JOIN pg_class AS t ON t.oid = x.indrelid
         WHERE i.inhparent = 'events_action'::regclass
    LOOP
        plain := child.partition || '_tenant_id_action_seq_occurred_at_idx';
        IF child.name <> plain THEN
            EXECUTE format('ALTER INDEX %s RENAME TO %I', child.index, plain);
        END IF;
    END LOOP;
END
$$;
