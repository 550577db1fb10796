-- The digest of each migration's statements as it was applied (ADR 0112):
-- SHA-256, in hex, of its text without comments, its layout made one space
-- (store/migrations.py `migration_digest`). A start refuses a database where
-- a migration of its number was applied with other statements (a fork's, a
-- hotfix branch's, a file changed by hand): versions alone took it for this
-- release's. NULL for those applied before this migration: the first start
-- of a release that has it records them as they are in that release.
ALTER TABLE schema_migrations
    ADD COLUMN digest text CHECK (digest ~ '^[0-9a-f]{64}$');
