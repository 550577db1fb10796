-- A count by credential read from the index alone (ADR 0144), as a count by
-- actor reads events_actor_id alone: it groups every row appended since
-- migration 0056 (`credential_kind IS NOT NULL`, '' for an event without a
-- credential) by kind and id, with the greatest hint of each group, and
-- 0056's events_credential_id held neither the kind nor the hint, nor the
-- rows without a credential (partial on `credential_id IS NOT NULL`), so the
-- count read each row: 4.91 times a count by actor of the same 220,041
-- events, where one read from this index took 1.05 (ADR 0144).
--
-- It replaces 0056's events_credential_id rather than joins it: the same
-- key, so the `credential_id` filter still finds a credential's rows in seq
-- order with no sort (its index condition, and its kind a condition beside
-- it, `credential_kind IS NOT NULL` implied by either form the filter takes),
-- and one index, so an append writes one entry where it wrote one or none
-- (none for an event without a credential). The kind and hint are INCLUDE
-- columns, not keys: in the key after the id they would break the seq order
-- of a credential id two kinds share. The rows appended before 0056
-- (credential_kind NULL) stay out of it, found on events_credential_unread
-- until the backfill writes them (ADR 0143), then here.
--
-- Built over every partition while appends wait (ADR 0050: the migration
-- waits for its lock a moment at a time), as 0054 and 0056 built theirs:
-- 0.6 to 4.2 s for 220,041 events on a shared 2-core machine. IF NOT EXISTS: an operator who cannot let
-- appends wait that long builds it beforehand, a partition at a time and
-- concurrently, as docs/database.md says, and this migration then finds it
-- made. One found invalid (indisvalid false: a build beforehand that failed,
-- or whose partitions are not all attached) is refused, before anything is
-- built: taken as made, it would stand in for 0056's, and the counts and
-- filters that read it would read the table instead. Partitions made
-- afterwards (sealtrail_create_event_partitions, `CREATE TABLE ... PARTITION
-- OF events`) get it from the parent.
--
-- It only builds: migration 0062 drops 0056's index and gives this one its
-- name. The drop takes an ACCESS EXCLUSIVE lock on events, which waits behind
-- every reader (an export, a count): in this transaction, one that waited
-- past the lock timeout rolled the build back, and the next attempt built it
-- again while appends waited once more (ADR 0144).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_index AS x
                WHERE x.indexrelid = to_regclass('events_credential_covering') AND NOT x.indisvalid
               UNION ALL
               SELECT FROM pg_inherits AS i JOIN pg_index AS x ON x.indexrelid = i.inhrelid
                WHERE i.inhparent = to_regclass('events_credential_covering') AND NOT x.indisvalid) THEN
        RAISE EXCEPTION 'sealtrail: index events_credential_covering is invalid (a build beforehand failed or was not finished): drop it or finish it as docs/database.md says';
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS events_credential_covering
    ON events (tenant_id, credential_id, seq) INCLUDE (credential_kind, credential_hint)
    WHERE credential_kind IS NOT NULL;
