-- Tokens may have the exporter role: a reader that may also export.
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check
    CHECK (role IN ('recorder', 'reader', 'exporter', 'admin'));
