-- StreamEvents may start at a time: find the first event received at or after it.
CREATE INDEX events_received_at ON events (tenant_id, received_at);
