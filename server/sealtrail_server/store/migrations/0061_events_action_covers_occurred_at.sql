-- The action catalogue's pages (ListActionCatalog, ADR 0145): each page counts
-- its actions' events and takes the latest's occurred_at, grouped on the
-- (tenant_id, action text_pattern_ops, seq) index of 0009. The index held no
-- occurred_at, so `max(occurred_at)` read every one of those events' rows from
-- its table: a page of actions with many events read a heap page for nearly
-- each of them. occurred_at INCLUDEd in that index answers the whole page from
-- it (an index-only scan, as far as the visibility map says pages are all
-- visible: an append-only log's are, once vacuumed).
--
-- It replaces events_action rather than joining it: with the same key columns
-- it serves every statement that read events_action as before (the `action`
-- filter in seq order, prefixes as byte ranges, counts by action), and an append
-- writes no more index entries than it did, each 8 bytes longer.
--
-- Built over every partition while appends wait (ADR 0050), as 0054's were;
-- IF NOT EXISTS: an operator who cannot let appends wait that long builds it
-- beforehand, a partition at a time and concurrently, as docs/database.md
-- says, and this migration then finds it made; one found invalid (a build
-- beforehand that failed, or whose partitions are not all attached) is
-- refused before anything is built, as 0060's. It only builds: migration
-- 0062 drops the old index (its ACCESS EXCLUSIVE lock on events waits behind
-- every reader) and gives this one its name, so a drop that waited past the
-- lock timeout and is tried again never builds this again (ADR 0145).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_index AS x
                WHERE x.indexrelid = to_regclass('events_action_covering') AND NOT x.indisvalid
               UNION ALL
               SELECT FROM pg_inherits AS i JOIN pg_index AS x ON x.indexrelid = i.inhrelid
                WHERE i.inhparent = to_regclass('events_action_covering') AND NOT x.indisvalid) THEN
        RAISE EXCEPTION 'sealtrail: index events_action_covering is invalid (a build beforehand failed or was not finished): drop it or finish it as docs/database.md says';
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS events_action_covering
    ON events (tenant_id, action text_pattern_ops, seq) INCLUDE (occurred_at);
