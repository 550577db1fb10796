"""Who erased a tenant, as an erasure receipt's `erased_by` (the API's
`erased_by_token_id`) holds it, said alike by `sealtrail verify-erasure` and
by `sealtrail-server tenant erase` and `tenant erasures`; importable by both
command lines without protobuf."""

from __future__ import annotations

import re
from typing import Final

from sealtrail._terminal import terminal_safe

# What `erased_by` begins with for an operator's erasure (`sealtrail-server
# tenant erase`), and each operator command's records name their actor by:
# `sealtrail-server:NAME`, which is no token's id (docs/retention.md).
OPERATOR_PREFIX: Final = "sealtrail-server:"
# A token's id: a UUID in its 8-4-4-4-12 form.
_TOKEN_ID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def erased_by_said(erased_by: str) -> str:
    """`erased_by` labelled: `token ID` for an erasure by the API, `operator
    NAME` for `tenant erase`'s (it holds `sealtrail-server:NAME` there, which
    is no token's id: the signed receipt keeps it so, docs/integrity.md),
    else as it is (a row written behind the service). Made safe for a
    terminal."""
    if erased_by.startswith(OPERATOR_PREFIX):
        return f"operator {terminal_safe(erased_by.removeprefix(OPERATOR_PREFIX))}"
    if _TOKEN_ID.fullmatch(erased_by):
        return f"token {erased_by}"
    return terminal_safe(erased_by)
