-- The GIN index over search_doc served no statement: full-text `@@` is not
-- leakproof, so under row-level security the service's role never uses it as
-- an index condition (ADR 0013, docs/database.md), and the owner runs no text
-- search. Every append still paid to keep it: an entry per word of each
-- description and details (helper-61). search_doc itself stays, for the
-- filter that checks it row by row.
-- Dropping it locks events: like every migration, it waits for that lock a
-- moment at a time, and tries again (ADR 0050).
DROP INDEX IF EXISTS events_search;
