-- Personal-data rules per tenant (ADR 0154). `personal_data_fields`: field
-- names whose values the tenant's events must not keep, redacted as the
-- deployment's SEALTRAIL_REDACT_FIELDS are, under the rule `personal_data`
-- (at most 64 names, none empty; the server refuses longer ones).
-- `ip_recording`: how much of `context.ip` Record keeps: 'full' (as sent),
-- 'truncated' (an IPv4 address's /24, an IPv6 address's /48) or 'none'.
ALTER TABLE tenant_settings
    ADD COLUMN personal_data_fields text[] NOT NULL DEFAULT '{}'
        CHECK (cardinality(personal_data_fields) <= 64
            AND array_position(personal_data_fields, NULL) IS NULL
            AND '' <> ALL (personal_data_fields)),
    ADD COLUMN ip_recording text NOT NULL DEFAULT 'full'
        CHECK (ip_recording IN ('full', 'truncated', 'none'));
GRANT UPDATE (personal_data_fields, ip_recording) ON tenant_settings TO sealtrail_service;
