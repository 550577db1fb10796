-- The redaction key's fingerprint (0043), for the operator's commands that
-- redact what they record with the key (`token create --name`, `tenant
-- release-hold`, the `sink` changes): they work as the service's login, whose
-- roles hold nothing on deployment_markers, and so recorded HMACs under
-- whatever key they were given, unlike the servers' (helper-215). Now they
-- refuse another key, as `serve` does. What they read is that one marker's
-- fingerprint, nothing else: a view (which reads with its owner's rights) of
-- that row and column, read by the system role, the one the check runs as.
-- security_barrier: no function in a query of the view sees another row.
CREATE VIEW redaction_key_fingerprint WITH (security_barrier) AS
    SELECT fingerprint FROM deployment_markers WHERE name = 'redaction_key';
GRANT SELECT ON redaction_key_fingerprint TO sealtrail_system;
