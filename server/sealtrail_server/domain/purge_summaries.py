"""What a purge has removed and not yet recorded, authenticated by the service.

A pass keeps the summary of a tenant's purge in `retention_pending_purges`
until its `retention.purged` event is in the log (a crash in between leaves
it for the next pass to record). VerifyLog counts such a summary as removals
accounted for, and the next pass records it as retention's own event. Unsigned,
the row let a database superuser hide an event as removed (delete it, keep its
leaf as a tombstone, add a summary): VerifyLog passed, and the next pass wrote
a genuine-looking record of a purge that never ran (helper-84). Each summary
now carries an HMAC-SHA256 under a key every process of the deployment derives
from its redaction secret, which the database does not hold; a summary without
a valid one counts for nothing and is never recorded (ADR 0014, addendum).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final

from .canonical import canonical_json

_LABEL: Final = b"sealtrail pending purges v1\x00"


class SummarySeal:
    """Seals and checks the pending purge summaries of one deployment."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, _LABEL, hashlib.sha256).digest()

    def seal(self, tenant_id: str, purge_id: str, summary: dict[str, Any]) -> bytes:
        """The MAC of `summary`, bound to its tenant and purge."""
        message = b"\x00".join(
            [tenant_id.encode(), purge_id.encode(), canonical_json(summary, plain=False)]
        )
        return hmac.digest(self._key, message, "sha256")

    def opens(
        self, tenant_id: str, purge_id: str, summary: dict[str, Any], mac: bytes | None
    ) -> bool:
        """Whether `mac` is this deployment's seal of the summary."""
        if mac is None:
            return False
        try:
            expected = self.seal(tenant_id, purge_id, summary)
        except ValueError:  # a summary rfc8785 cannot write (not one a pass wrote)
            return False
        return hmac.compare_digest(expected, mac)
