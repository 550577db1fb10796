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
-- says, and this migration then finds it made. The drop of the old index
-- reads no row; its ACCESS EXCLUSIVE lock on events is held to the commit.
-- Then the new index takes the old one's name, and each partition's the name
-- PostgreSQL gives it on a partition made afterwards
-- (`events_2025_01_tenant_id_action_seq_occurred_at_idx`): one built
-- beforehand as docs/database.md says ends `_action_covering`.
CREATE INDEX IF NOT EXISTS events_action_covering
    ON events (tenant_id, action text_pattern_ops, seq) INCLUDE (occurred_at);
DROP INDEX IF EXISTS events_action;
ALTER INDEX events_action_covering RENAME TO events_action;
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
