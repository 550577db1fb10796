-- The GIN index over search_doc served no statement: full-text `@@` is not
-- leakproof, so under row-level security the service's role never uses it as
-- an index condition (ADR 0013, docs/database.md), and the owner runs no text
-- search. Every append still paid to keep it: an entry per word of each
-- description and details (helper-61). search_doc itself stays, for the
-- filter that checks it row by row.
-- Dropping it locks events: rather than queue every statement of the running
-- processes behind a long reader (an export, a VerifyLog), give up after 30 s;
-- the start fails saying so, and the next start tries again.
SET LOCAL lock_timeout = '30s';
DROP INDEX IF EXISTS events_search;
