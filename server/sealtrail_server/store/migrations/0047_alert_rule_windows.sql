-- A threshold alert rule's window as the evaluator holds it in memory, kept
-- beside the evaluation cursor (ADR 0086): written in the transaction that
-- moves the cursor past the events that changed it, read when a process
-- takes the rule up (a restart, a lease moved, a failed step). The window was
-- rebuilt from the log instead, from the rule's matching events and its
-- `security.alert` events: retention could purge either while the window
-- still needed them, and the rebuilt window then fired a second time for a
-- spike (its alert purged), or lost the quiet period and the counts (its
-- events purged).
--
-- Times are microseconds since the epoch (the window's own unit). A window is
-- valid for the rule's condition and start as they were when it was built
-- (`condition`, `start_seq`: a changed rule is taken up afresh, and its rows
-- go with the change), at the tenant's cursor it stands at (`cursor_seq`,
-- moved with the cursor by the statement that moves it): one left behind by
-- a cursor moved otherwise (a process of the release before, in a rolling
-- deploy) lacks what was evaluated meanwhile, and is not taken up.
CREATE TABLE alert_rule_windows (
    tenant_id text   NOT NULL,
    rule_id   uuid   NOT NULL,
    condition jsonb  NOT NULL,
    start_seq bigint NOT NULL,
    cursor_seq bigint NOT NULL,
    newest    bigint,           -- the newest occurred_at the rule has taken (NULL: none)
    observed  bigint NOT NULL,  -- how many events it has taken (when it sweeps)
    PRIMARY KEY (tenant_id, rule_id),
    FOREIGN KEY (tenant_id, rule_id) REFERENCES alert_rules (tenant_id, id) ON DELETE CASCADE
);

-- Its groups (the actor or the address an event counts under; '' when it
-- counts all alike): the newest `count` times still within reach (`times`,
-- big-endian int64s, NULL for a group kept only for its quiet period), when
-- the group was last seen (`seen`, the `observed` of then: the order in
-- which groups are evicted past the rule's bound), and until when it is
-- quiet after it fired (`quiet_until`). A group goes as the window drops it:
-- no event still to be counted can reach it.
CREATE TABLE alert_rule_window_groups (
    tenant_id   text   NOT NULL,
    rule_id     uuid   NOT NULL,
    group_key   text   NOT NULL,
    times       bytea,
    seen        bigint,
    quiet_until bigint,
    PRIMARY KEY (tenant_id, rule_id, group_key),
    FOREIGN KEY (tenant_id, rule_id) REFERENCES alert_rule_windows (tenant_id, rule_id)
        ON DELETE CASCADE,
    CHECK ((times IS NULL) = (seen IS NULL)),
    CHECK (times IS NOT NULL OR quiet_until IS NOT NULL)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON alert_rule_windows, alert_rule_window_groups
    TO sealtrail_system;
-- A rule's change, disabling or deletion removes its window.
GRANT SELECT, DELETE ON alert_rule_windows, alert_rule_window_groups TO sealtrail_service;
SELECT sealtrail_isolate_by_tenant('alert_rule_windows');
SELECT sealtrail_isolate_by_tenant('alert_rule_window_groups');
