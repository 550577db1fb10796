-- Per-tenant settings, changed by admins through UpdateTenantSettings. A tenant
-- without a row has the defaults.
CREATE TABLE tenant_settings (
    tenant_id      text        PRIMARY KEY,
    redaction_mode text        NOT NULL DEFAULT 'replace'
                               CHECK (redaction_mode IN ('replace', 'hmac')),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
