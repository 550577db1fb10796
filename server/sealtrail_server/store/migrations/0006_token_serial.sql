-- ListTokens pages by creation order: a serial gives it a keyset.
ALTER TABLE api_tokens ADD COLUMN serial bigint GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX api_tokens_serial ON api_tokens (tenant_id, serial);
