-- A sink's dead letters in the order ListDeadLetters pages them (when parked,
-- then seq, then id): a page after its token reads the rows it answers, found
-- by the index, not every letter of the sink after the token sorted again (a
-- destination refusing part of a busy tenant's events parks thousands a day).
CREATE INDEX sink_dead_letters_listed
    ON sink_dead_letters (tenant_id, sink_id, created_at, first_seq, id);
