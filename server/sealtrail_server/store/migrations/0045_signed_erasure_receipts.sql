-- An erasure's receipt signed by the deployment's signing key (ADR 0073):
-- a signed note of its own kind (`sealtrail erasure receipt v1`) stating the
-- log's origin, the tenant, the final size and root, who erased it, when,
-- and the rows removed. Before it only the final checkpoint was signed, and
-- a row written by hand reusing the tenant's latest genuine checkpoint was
-- a receipt like any other. Receipts kept before have none (NULL): nothing
-- proves them, which every place that reads them says.
ALTER TABLE tenant_erasures ADD COLUMN signed_receipt text;
