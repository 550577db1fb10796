-- Enforceable action catalogue (ADR 0148). An action of the catalogue may
-- declare the category every event of it must have (`api_key.create`:
-- 'security'), named as events store theirs; NULL declares none. An entry may
-- now hold a category without a description (description NULL), never
-- neither: an action with neither is not in the catalogue (its row deleted).
-- `strict_actions`: while true, Record and RecordBatch refuse an event whose
-- action the catalogue does not hold, or whose category differs from the
-- declared one.
ALTER TABLE action_catalog
    ADD COLUMN category text CHECK (category IN ('authentication', 'data_access',
        'configuration', 'member', 'billing', 'security', 'system', 'api_usage')),
    ALTER COLUMN description DROP NOT NULL,
    ADD CONSTRAINT action_catalog_describes
        CHECK (description IS NOT NULL OR category IS NOT NULL);
GRANT UPDATE (category) ON action_catalog TO sealtrail_service;

ALTER TABLE tenant_settings ADD COLUMN strict_actions boolean NOT NULL DEFAULT false;
GRANT UPDATE (strict_actions) ON tenant_settings TO sealtrail_service;
