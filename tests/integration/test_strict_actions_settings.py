"""The tenant settings with `strict_actions` (ADR 0148), as a rolling upgrade
and this process's own cache see them: settings with it off keep the etag
the last release gave them, and a settings change does not put back in the
cache a catalogue a description changed meanwhile on the same process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC

import pytest

from sealtrail import InvalidArgumentError
from sealtrail.v1 import settings_pb2
from sealtrail_server.domain.etags import etag_of, instant
from sealtrail_server.store.changes import Changes
from tests.conftest import ServerThread, clients_of
from tests.held_database import HeldAfterReading


def _etag_of_7f202ce1(settings: settings_pb2.TenantSettings) -> str:
    """The settings' etag as release 7f202ce1 computed it (api/settings.py
    `_etag` there), frozen here: a process of that release and a newer one,
    sharing the database during a rolling upgrade, must give the same
    settings the same etag, or an etag read from one is refused by the
    other (ABORTED, ETAG_MISMATCH)."""
    names = {
        settings_pb2.REDACTION_MODE_REPLACE: "replace",
        settings_pb2.REDACTION_MODE_HMAC: "hmac",
    }
    mode = names[settings.redaction_mode]
    updated_at = settings.update_time.ToDatetime(UTC) if settings.HasField("update_time") else None
    return etag_of({"redaction_mode": mode, "update_time": instant(updated_at)})


def test_settings_with_strict_actions_off_keep_the_last_releases_etag(
    server: ServerThread, tenant: str
) -> None:
    with clients_of(server) as client_for:
        client = client_for(tenant)
        defaults = client.get_tenant_settings()  # no row: the defaults
        assert defaults.etag == _etag_of_7f202ce1(defaults)
        changed = client.set_redaction_mode("hmac", etag=defaults.etag).settings
        assert changed.HasField("update_time")  # the formula's second field, set
        assert changed.etag == _etag_of_7f202ce1(changed)
        strict = client.set_strict_actions(True, etag=changed.etag).settings
        assert strict.strict_actions and strict.etag != _etag_of_7f202ce1(strict)
        off = client.set_strict_actions(False, etag=strict.etag).settings
        assert not off.strict_actions and off.etag == _etag_of_7f202ce1(off)
        read = client.get_tenant_settings()
        assert read.etag == off.etag == _etag_of_7f202ce1(read)


def test_a_settings_change_does_not_put_back_a_catalogue_changed_meanwhile(
    migrated_database_url: str, tenant: str
) -> None:
    """UpdateTenantSettings read the catalogue in its transaction and put it
    in the cache after its commit: a SetActionDescription on the same
    process that committed and forgot the kept settings in between was
    undone there, the older catalogue kept for the cache's whole time."""
    with (
        ServerThread(migrated_database_url, settings_cache_seconds=3600) as server,
        clients_of(server) as client_for,
    ):
        one, other = client_for(tenant), client_for(tenant)
        one.set_action_description("api_key.create", "An API key was created", category="security")
        servicer = server.service._servicer
        assert servicer is not None
        changes = servicer._changes
        held = HeldAfterReading(servicer._db)
        server.call(lambda: setattr(servicer, "_changes", Changes(held)))
        with ThreadPoolExecutor(1) as pool:
            turning = pool.submit(one.set_strict_actions, True)
            # Committed, the catalogue read (SECURITY), not yet put in the cache.
            server.run(held.read.wait())
            server.call(lambda: setattr(servicer, "_changes", changes))
            other.set_action_description("api_key.create", "Created", category="billing")
            server.call(held.release.set)
            assert turning.result(timeout=60).settings.strict_actions
        other.record(action="api_key.create", actor_id="u", category="billing")
        with pytest.raises(InvalidArgumentError):
            other.record(action="api_key.create", actor_id="u", category="security")
