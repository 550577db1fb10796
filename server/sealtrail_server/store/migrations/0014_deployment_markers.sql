-- One-time steps of a deployment, noted once done (owner only: the service's
-- roles hold nothing on it). `sink_secrets_sealed`: the first start that seals
-- sinks' secrets at rest (ADR 0020) sealed what older versions stored in the
-- clear; after it, a secret found in the clear was put there behind the
-- service's back, and is refused rather than sealed.
CREATE TABLE deployment_markers (
    name   text        PRIMARY KEY,
    set_at timestamptz NOT NULL DEFAULT now()
);
