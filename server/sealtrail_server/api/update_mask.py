"""Update masks (AIP-134): which fields of a resource an Update request
changes, each checked, with INVALID_ARGUMENT naming `update_mask`."""

from __future__ import annotations

from collections.abc import Collection

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from ..domain.errors import InvalidArgument


def update_paths(
    mask: field_mask_pb2.FieldMask, settable: Collection[str]
) -> frozenset[str] | None:
    """The fields `mask` names, each one of `settable`; None when it names
    none, or only `*` (the request replaces every field), which names no
    other beside it."""
    paths = frozenset(mask.paths)
    if paths == {"*"}:
        return None
    if "*" in paths:  # not as one of the fields it may name: it names them all
        raise InvalidArgument.field(
            "update_mask", "names '*' and other fields; '*' (every field) stands alone"
        )
    for path in sorted(paths - frozenset(settable)):
        raise InvalidArgument.field(
            "update_mask", f"names {path!r}; the fields it may name: {', '.join(settable)}"
        )
    return paths or None


def replaces_oneof(paths: frozenset[str], message: Message, oneof: str, *, path: str) -> bool:
    """Whether the mask replaces the oneof `oneof` of the resource, which it
    does by naming the member `message` sets (`path`: the message's path in
    the request, for errors)."""
    members = [field.name for field in message.DESCRIPTOR.oneofs_by_name[oneof].fields]
    named = sorted(paths.intersection(members))
    if not named:
        return False
    chosen = message.WhichOneof(oneof)
    if len(named) > 1 or named[0] != chosen:
        raise InvalidArgument.field(
            "update_mask",
            f"names {', '.join(named)} but {path} sets "
            + (f"{chosen}: name that one" if chosen else f"no {oneof}"),
        )
    return True
