-- A batch parked from a delivery that bypassed the sink's filter (an alert sent
-- to its rule's sinks) is replayed the same way: through the filter, its event
-- would match nothing, and the replay would end, and delete the dead letter,
-- without sending it.
ALTER TABLE sink_dead_letters ADD COLUMN bypass_filter boolean NOT NULL DEFAULT false;
