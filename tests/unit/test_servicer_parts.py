"""The servicer is one class made of a part per area of the API (StreamRpcs,
ExportRpcs, ...). A method one part defines under a name another part
defines too is silently replaced for both by whichever comes first in the
class's bases: StreamRpcs' `_within_the_log` (a cursor's check) once took
the place of ExportRpcs' (a range's), and a range bundle beyond the log was
refused in a stream's words, naming `after_seq` where it had sent `last_seq`."""

from __future__ import annotations

from collections import defaultdict

from sealtrail_server.api.servicer import AuditLogServicer


def test_no_two_parts_of_the_servicer_define_one_name() -> None:
    defined_by: defaultdict[str, set[str]] = defaultdict(set)
    for part in AuditLogServicer.__mro__[1:]:
        if not part.__module__.startswith("sealtrail_server."):
            continue  # gRPC's generated base, object
        for name in vars(part):
            if not (name.startswith("__") and name.endswith("__")):
                defined_by[name].add(part.__qualname__)
    shared = {name: sorted(parts) for name, parts in defined_by.items() if len(parts) > 1}
    assert not shared, f"defined by more than one part of the servicer: {shared}"
