-- When each job a deployment runs on a schedule (one process at a time, under
-- its advisory lock) last ended, by the database's clock. The retention purge
-- ran every interval in each process: N processes made N passes an interval,
-- each recording a `retention.purged` event per tenant it removed events of
-- (ADR 0048). A process now passes only once the deployment's last pass
-- ended an interval ago. Owner only: the service's roles hold nothing on it.
CREATE TABLE deployment_jobs (
    name          text        PRIMARY KEY,
    last_ended_at timestamptz NOT NULL
);
