-- Where each tenant's log stood when a deployment sink was created `--from
-- now` (its size, read in the definition's own transaction), for the
-- instances `sink create` does not make (the tenant refused it, or the
-- command was interrupted): the servers' pass starts them there. It started
-- them at the first event received at or after the definition's creation,
-- comparing the events' receipt (by the clock of the server that recorded
-- each) with the creation (by the database's): a server 2 minutes behind lost
-- the sink a tenant's events of those minutes, one 2 minutes ahead sent it
-- history. A tenant with no row had no log then, and starts at its first
-- event. A row goes as its instance is made. Definitions made before this
-- have none (`starts_kept` false) and start their tenants as they did.
ALTER TABLE deployment_sinks ADD COLUMN starts_kept boolean NOT NULL DEFAULT false;

CREATE TABLE deployment_sink_starts (
    tenant_id          text   NOT NULL,
    deployment_sink_id uuid   NOT NULL REFERENCES deployment_sinks (id) ON DELETE CASCADE,
    tree_size          bigint NOT NULL CHECK (tree_size >= 0),
    PRIMARY KEY (tenant_id, deployment_sink_id)
);
CREATE INDEX deployment_sink_starts_definition ON deployment_sink_starts (deployment_sink_id);
GRANT SELECT, DELETE ON deployment_sink_starts TO sealtrail_service;
SELECT sealtrail_isolate_by_tenant('deployment_sink_starts');
