"""A sink as the command line takes it: by its id, or by its name where one
of the tenant's sinks has it. A name is for people, and the server keeps no
two apart (sinks may share one): a name several sinks have is refused, as is
one none has, each saying where to see the sinks' ids."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import click

from sealtrail._terminal import terminal_safe

if TYPE_CHECKING:
    from sealtrail._client import AuditClient

# What a command taking a SINK says of it in --help.
SINK_HELP: Final = "SINK: a sink by its id or its name (where no other sink has it)."
# Where the refusals send the user to see the sinks' ids and names.
_LISTED: Final = "`sealtrail sinks` lists them"


def _is_an_id(given: str) -> bool:
    """Whether `given` is a UUID, which the server takes as a sink's id."""
    try:
        uuid.UUID(given)
    except ValueError:
        return False
    return True


def sink_ids_of(client: AuditClient, given: Iterable[str], *, param_hint: str) -> list[str]:
    """The ids of the sinks `given` names, in order: an id as it is (the
    server says if no sink has it), a name as the id of the one sink that has
    it, read with one ListSinks whatever the number of names. A name no sink
    or several sinks have is a BadParameter of `param_hint`."""
    given = list(given)
    if all(_is_an_id(each) for each in given):
        return given  # no call more than the command makes
    ids_by_name: dict[str, list[str]] = {}
    for sink in client.list_sinks():
        ids_by_name.setdefault(sink.name, []).append(sink.id)
    found = []
    for each in given:
        if _is_an_id(each):
            found.append(each)
            continue
        ids = ids_by_name.get(each, [])
        shown = terminal_safe(repr(each))
        if not ids:
            raise click.BadParameter(
                f"no sink is named {shown}, and it is no sink id (a UUID); {_LISTED}",
                param_hint=param_hint,
            )
        if len(ids) > 1:
            raise click.BadParameter(
                f"{len(ids)} sinks are named {shown}: give its id; {_LISTED}",
                param_hint=param_hint,
            )
        found.append(ids[0])
    return found


def sink_id_of(client: AuditClient, given: str, *, param_hint: str = "SINK") -> str:
    """The id of the sink `given` names, by its id or its name (`sink_ids_of`)."""
    return sink_ids_of(client, [given], param_hint=param_hint)[0]
