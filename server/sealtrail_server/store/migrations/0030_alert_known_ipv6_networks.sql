-- A new-IP rule knows an actor's IPv6 origins by their /64 (domain/alerts.py
-- network_of): a device's privacy address changes within its /64 every day,
-- so each day's address fired the rule again for every IPv6 user, and an
-- attacker holding a /64 could add a row per address without end. The
-- addresses learned before become their networks, written as network_of
-- writes them, each keeping its earliest first sighting and its latest last
-- one; an IPv4-mapped address becomes its IPv4 address, as network_of has it.
-- An address PostgreSQL cannot read (none should be) stays as it was.
CREATE OR REPLACE FUNCTION pg_temp.network_of(ip text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    address inet;
BEGIN
    address := split_part(ip, '%', 1)::inet;  -- no zone: network_of drops it
    IF address << '::ffff:0.0.0.0/96'::inet THEN
        RETURN host('0.0.0.0'::inet + (address - '::ffff:0.0.0.0'::inet));
    END IF;
    RETURN network(set_masklen(address, 64))::text;
EXCEPTION WHEN others THEN
    RETURN ip;
END
$$;

CREATE TEMPORARY TABLE known_networks ON COMMIT DROP AS
SELECT tenant_id, rule_id, actor_id, pg_temp.network_of(ip) AS ip,
    min(first_seen_at) AS first_seen_at, max(last_seen_at) AS last_seen_at,
    min(first_seq) AS first_seq
FROM alert_known_ips WHERE position(':' IN ip) > 0
GROUP BY 1, 2, 3, 4;

DELETE FROM alert_known_ips WHERE position(':' IN ip) > 0;

-- An IPv4-mapped address meets the IPv4 row of the same address, if any.
INSERT INTO alert_known_ips
    (tenant_id, rule_id, actor_id, ip, first_seen_at, last_seen_at, first_seq)
SELECT tenant_id, rule_id, actor_id, ip, first_seen_at, last_seen_at, first_seq
FROM known_networks
ON CONFLICT (tenant_id, rule_id, actor_id, ip) DO UPDATE SET
    first_seen_at = least(alert_known_ips.first_seen_at, excluded.first_seen_at),
    last_seen_at = greatest(alert_known_ips.last_seen_at, excluded.last_seen_at),
    first_seq = least(alert_known_ips.first_seq, excluded.first_seq);

DROP FUNCTION pg_temp.network_of(text);
