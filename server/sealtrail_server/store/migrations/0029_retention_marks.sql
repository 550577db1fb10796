-- How far each purge selection of a tenant has been carried out: every event of
-- it received before `removed_before` is gone. The next pass of the same
-- selection reads only from there, so the months before (and the events other
-- rules keep in them) are not walked again at every pass while the policy
-- row is locked (helper-58). A selection is named by all that decides what it
-- removes (its rule, days and the other rules it leaves out): a changed policy
-- names new ones, which start from the beginning.
CREATE TABLE retention_marks (
    tenant_id      text        NOT NULL,
    selection      text        NOT NULL,
    removed_before timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, selection)
);
SELECT sealtrail_isolate_by_tenant('retention_marks');
