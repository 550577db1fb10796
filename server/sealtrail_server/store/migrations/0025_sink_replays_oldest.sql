-- A sink's oldest pending replay, which each delivery step reads, found by
-- the index whatever the number waiting (an alert a sink's filter does not
-- take adds one; a destination down for hours gathers many).
CREATE INDEX sink_replays_oldest ON sink_replays (tenant_id, sink_id, created_at, id);
