-- Two processes may create the same month at once: a process's start creates
-- the months ahead under the migrations' lock, another's retention pass under
-- the purge job's. Both saw no table, and the second CREATE then failed once
-- the first committed (duplicate_table, or unique_violation on the catalog),
-- failing that start or that pass. The month exists either way: it is counted
-- as not created by this call, and the call goes on with the next month.
CREATE OR REPLACE FUNCTION sealtrail_create_event_partitions(from_time timestamptz, to_time timestamptz)
    RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month timestamp := date_trunc('month', from_time AT TIME ZONE 'UTC');
    name text;
    created integer := 0;
BEGIN
    WHILE month <= to_time AT TIME ZONE 'UTC' LOOP
        name := 'events_' || to_char(month, 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                    name, month AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC');
                -- Statement triggers are not inherited: a partition refuses TRUNCATE itself.
                EXECUTE format(
                    'CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON %I'
                    ' FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change()', name);
                created := created + 1;
            EXCEPTION
                WHEN check_violation THEN
                    RAISE WARNING 'sealtrail: partition % not created: its rows are in events_default', name;
                WHEN duplicate_table OR unique_violation THEN
                    NULL;  -- created by another session since the check above
            END;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    RETURN created;
END
$$;
