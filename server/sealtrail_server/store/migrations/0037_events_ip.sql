-- The client's address of each event (context.ip), as an inet column derived
-- from the record at append like the other filtered columns, for the `ip`
-- filter (an address or a CIDR network) and CountEvents by address: "who did
-- it, from which IP, in one query". An IPv4 address mapped into IPv6 is kept as
-- IPv4 and an IPv6 zone id dropped (domain/event.py `network_address`). NULL
-- where the event has no address and on events appended before this migration.
--
-- The filter compares the column with its network's first and last address:
-- inet's comparison operators are leakproof, its `<<=` is not, and under
-- row-level security only leakproof operators are index conditions (ADR 0013).
-- Adding the column rewrites nothing; the partial index is built over every
-- partition while appends wait (ADR 0050).
ALTER TABLE events ADD COLUMN ip inet;
CREATE INDEX events_ip ON events (tenant_id, ip, seq) WHERE ip IS NOT NULL;
