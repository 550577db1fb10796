-- The action catalogue (docs/api.md, SetActionDescription): what each action
-- of a tenant's log means, as its admins describe it (`doc.share_external`:
-- "A document was shared with someone outside the organisation"), shown
-- beside the actions the log holds (ListActionCatalog). A row per described
-- action; clearing a description deletes its row. The description is stored
-- as redaction leaves it (ADR 0141): readers see it, and a secret pasted into
-- one must reach them no more than one recorded in an event. `updated_by` is
-- the admin token that wrote it. Each change is also an event of the log
-- (`action_catalog.updated`), which keeps the history; this keeps the latest.
CREATE TABLE action_catalog (
    tenant_id   text        NOT NULL,
    action      text        NOT NULL CHECK (length(action) BETWEEN 1 AND 128),
    description text        NOT NULL CHECK (length(description) BETWEEN 1 AND 500),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text        NOT NULL,
    PRIMARY KEY (tenant_id, action)
);
SELECT sealtrail_isolate_by_tenant('action_catalog');
GRANT SELECT, INSERT, DELETE, UPDATE (description, updated_at, updated_by)
    ON action_catalog TO sealtrail_service;
