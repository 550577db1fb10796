-- The forms of an actor id a threshold's group counted, as recorded (ADR
-- 0110): a rule grouped by actor counts `Admin`, `ADMIN` and `ａｄｍｉｎ` as one
-- group, `admin`, and its alert names the forms seen. A JSON array of at most
-- 8 strings, NULL for a group that keeps none (grouped by IP, not grouped, or
-- by exact actor ids); kept with the group's times, so that an alert after a
-- restart or a takeover names the forms counted before it too. A window kept
-- before (exact ids, no forms) is re-keyed as it is taken up: no rewrite here.
ALTER TABLE alert_rule_window_groups ADD COLUMN forms jsonb;
