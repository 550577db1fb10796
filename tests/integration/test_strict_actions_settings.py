"""The tenant settings with `strict_actions` (ADR 0148), as a rolling upgrade
sees them: settings with it off keep the etag the last release gave them."""

from __future__ import annotations

from datetime import UTC

from sealtrail.v1 import settings_pb2
from sealtrail_server.domain.etags import etag_of, instant
from tests.conftest import ServerThread, clients_of


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
