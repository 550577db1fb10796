"""The signer's move of a forged checkpoint row (migration 0067) runs as the
tables' owner: a caller's temporary table of the same name must never stand
in for `checkpoints` inside it (helper-589 ran its own trigger as the owner)."""

from __future__ import annotations

from typing import Any

import psycopg


def test_a_temporary_checkpoints_table_does_not_capture_the_move(
    sql: psycopg.Connection[Any], tenant: str
) -> None:
    try:
        with sql.transaction():
            sql.execute("SET LOCAL ROLE sealtrail_system")
            sql.execute(
                "CREATE TEMPORARY TABLE checkpoints (LIKE public.checkpoints) ON COMMIT DROP"
            )
            sql.execute(
                "CREATE FUNCTION pg_temp.capture() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'captured: ran as %', current_user;"
                " END $$"
            )
            sql.execute(
                "CREATE TRIGGER capture BEFORE DELETE ON pg_temp.checkpoints"
                " FOR EACH ROW EXECUTE FUNCTION pg_temp.capture()"
            )
            sql.execute(
                "INSERT INTO pg_temp.checkpoints (tenant_id, tree_size, root_hash, note,"
                " key_name, key_id, issued_at)"
                " VALUES (%s, 1, 'r', 'n', 'k', 'k', now())",
                [tenant],
            )
            (moved,) = sql.execute(
                "SELECT sealtrail_refuse_checkpoint(%s, 1, 'r', 'n', 'test')", [tenant]
            ).fetchone() or (None,)
        assert moved is False  # no row of the real table matched; no trigger of the caller's ran
    finally:
        sql.rollback()
