"""A sink as the command line takes it: by its id, or by its name where one
of the tenant's sinks has it. A name is for people, and the server keeps no
two apart (sinks may share one, and one may be another's id): a name several
sinks have is refused, as is one none has, and a value one sink has as its id
and another as its name, each saying where to see the sinks' ids."""

from __future__ import annotations

import re
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
# A sink's id as the server reads one (domain.event.parse_uuid): the
# 8-4-4-4-12 form in either case. uuid.UUID() reads more (32 digits, braces,
# urn:uuid:), which the server refuses as an id, so those are names here.
_ID: Final = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def sink_ids_of(client: AuditClient, given: Iterable[str], *, param_hint: str) -> list[str]:
    """The ids of the sinks `given` names, in order, read with one ListSinks
    whatever the number of values (an id too: only the list says whether
    another sink has it as its name). A value in an id's form is the sink
    with that id, else the one sink named so, else sent as it is (the server
    says no sink has it); any other value is a name. A name no sink or
    several sinks have, or a value one sink has as its id and another as its
    name, is a BadParameter of `param_hint`."""
    sinks = client.list_sinks()
    ids_by_name: dict[str, list[str]] = {}
    for sink in sinks:
        ids_by_name.setdefault(sink.name, []).append(sink.id)
    all_ids = {sink.id for sink in sinks}
    found = []
    for each in given:
        shown = terminal_safe(repr(each))
        named = ids_by_name.get(each, [])
        is_an_id = _ID.fullmatch(each) is not None
        if is_an_id and (as_id := each.lower()) in all_ids:  # lowered as the server reads it
            if any(sink_id != as_id for sink_id in named):
                raise click.BadParameter(
                    f"one sink has {shown} as its id and another as its name:"
                    f" give the id of the one meant; {_LISTED}",
                    param_hint=param_hint,
                )
            found.append(as_id)
            continue
        if not named:
            if is_an_id:
                found.append(each)  # the server says no sink has it
                continue
            raise click.BadParameter(
                f"no sink is named {shown}, and it is no sink id (a UUID, 8-4-4-4-12); {_LISTED}",
                param_hint=param_hint,
            )
        if len(named) > 1:
            raise click.BadParameter(
                f"{len(named)} sinks are named {shown}: give its id; {_LISTED}",
                param_hint=param_hint,
            )
        found.append(named[0])
    return found


def sink_id_of(client: AuditClient, given: str, *, param_hint: str = "SINK") -> str:
    """The id of the sink `given` names, by its id or its name (`sink_ids_of`)."""
    return sink_ids_of(client, [given], param_hint=param_hint)[0]
