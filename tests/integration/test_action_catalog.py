"""The action catalogue end to end (SetActionDescription, ListActionCatalog):
admins describe actions, readers list every action the log holds beside its
description, each change is recorded with the description it replaced, bad
input names its field, and a description never shows a secret pasted into
it, nor one tenant's catalogue another's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from google.protobuf import json_format

from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    InvalidArgumentError,
    PermissionDeniedError,
    build_event,
    build_filter,
)
from sealtrail import _cli as client_cli
from sealtrail.v1 import catalog_pb2, event_pb2
from tests.conftest import ServerThread, token_id_of
from tests.unit.test_redaction import SECRETS

Clients = Callable[..., AuditClient]


def _entries(client: AuditClient, **options: Any) -> dict[str, catalog_pb2.ActionCatalogEntry]:
    return {entry.action: entry for entry in client.action_catalog(**options).entries}


def _changes_recorded(client: AuditClient, action: str) -> list[event_pb2.Event]:
    """The `action_catalog.updated` records of `action`'s description, oldest first."""
    found = client.query_page(
        build_filter(actions="action_catalog.updated"), order="oldest", page_size=100
    )
    return [event for event in found.events if event.resource.id == action]


def _before_after(event: event_pb2.Event) -> tuple[Any, Any]:
    [change] = event.changes
    assert change.field == "description"
    before = json_format.MessageToDict(change.before) if change.HasField("before") else None
    after = json_format.MessageToDict(change.after) if change.HasField("after") else None
    return before, after


def test_descriptions_join_the_actions_the_log_holds(client: AuditClient) -> None:
    client.record_batch(
        [
            build_event(action="doc.share_external", actor_id="u"),
            build_event(action="doc.share_external", actor_id="u"),
            build_event(action="doc.edit", actor_id="u"),
        ]
    )
    shared = client.set_action_description(
        "doc.share_external", "A document was shared outside the organisation"
    )
    assert shared.event_id
    assert shared.entry.description == "A document was shared outside the organisation"
    assert shared.entry.HasField("update_time") and shared.entry.updated_by
    client.set_action_description("billing.refund", "A refund was issued")

    listed = client.action_catalog()
    # By action in byte order; the two changes' own records are in the log too.
    assert [(e.action, e.count, e.description) for e in listed.entries] == [
        ("action_catalog.updated", 2, ""),
        ("billing.refund", 0, "A refund was issued"),
        ("doc.edit", 1, ""),
        ("doc.share_external", 2, "A document was shared outside the organisation"),
    ]
    assert listed.total_entries == 4 and not listed.truncated
    entries = {entry.action: entry for entry in listed.entries}
    assert entries["doc.edit"].HasField("last_occurred_time")
    assert not entries["billing.refund"].HasField("last_occurred_time")
    assert not entries["doc.edit"].HasField("update_time") and not entries["doc.edit"].updated_by
    # Its own record comes after the log it read: the next listing counts it.
    assert listed.tree_size == 5
    assert _entries(client)["audit_log.queried"].count == 1

    cleared = client.set_action_description("billing.refund", "")
    assert cleared.event_id and not cleared.entry.description
    client.set_action_description("doc.share_external", "")
    after = _entries(client)
    assert "billing.refund" not in after  # neither recorded nor described
    assert after["doc.share_external"].count == 2 and not after["doc.share_external"].description


def test_each_change_is_recorded_with_the_description_before_it(
    client_for: Clients, tenant: str, server: Any, sql: psycopg.Connection[Any]
) -> None:
    token = server.token(tenant)
    with AuditClient(server.target, token=token) as admin:
        first = admin.set_action_description("doc.share_external", "Shared outside")
        again = admin.set_action_description("doc.share_external", "Shared outside")
        changed = admin.set_action_description("doc.share_external", "Shared with a guest")
        cleared = admin.set_action_description("doc.share_external", "")
        cleared_again = admin.set_action_description("doc.share_external", "")
        assert again.event_id == "" and cleared_again.event_id == ""  # nothing changed
        recorded = _changes_recorded(admin, "doc.share_external")
    assert [event.id for event in recorded] == [first.event_id, changed.event_id, cleared.event_id]
    assert [_before_after(event) for event in recorded] == [
        (None, "Shared outside"),
        ("Shared outside", "Shared with a guest"),
        ("Shared with a guest", None),
    ]
    assert [event.description for event in recorded] == [
        "Description of doc.share_external set",
        "Description of doc.share_external changed",
        "Description of doc.share_external cleared",
    ]
    assert {event.actor.id for event in recorded} == {token_id_of(sql, token)}
    assert first.entry.updated_by == token_id_of(sql, token)
    assert all(event.category == event_pb2.CATEGORY_CONFIGURATION for event in recorded)


def test_only_admins_describe_and_readers_list(client_for: Clients, tenant: str) -> None:
    admin = client_for(tenant)
    admin.set_action_description("doc.edit", "A document was edited")
    for role in ("reader", "exporter"):
        reader = client_for(tenant, role)
        assert _entries(reader)["doc.edit"].description == "A document was edited"
        with pytest.raises(PermissionDeniedError):
            reader.set_action_description("doc.edit", "changed by a reader")
    recorder = client_for(tenant, "recorder")
    with pytest.raises(PermissionDeniedError):
        recorder.set_action_description("doc.edit", "changed by a recorder")
    with pytest.raises(PermissionDeniedError):
        recorder.action_catalog()
    assert _entries(admin)["doc.edit"].description == "A document was edited"
    assert len(_changes_recorded(admin, "doc.edit")) == 1


@pytest.mark.parametrize(
    ("action", "description", "field"),
    [
        ("", "A document was edited", "action"),
        ("Doc.Edit", "A document was edited", "action"),
        ("docedit", "A document was edited", "action"),
        ("doc." + "e" * 200, "A document was edited", "action"),
        ("doc.edit", "   ", "description"),
        ("doc.edit", "x" * 501, "description"),
        ("doc.edit", "edited\nby someone", "description"),
        ("doc.edit", "edited\u200bquietly", "description"),
    ],
)
def test_bad_input_names_its_field(
    client: AuditClient, action: str, description: str, field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        client.set_action_description(action, description)
    assert [name for name, _ in refused.value.field_violations] == [field]
    assert _changes_recorded(client, action) == []


def test_the_longest_description_is_taken(client: AuditClient) -> None:
    longest = "é" * 500  # characters, not bytes
    assert client.set_action_description("doc.edit", longest).entry.description == longest


def test_a_limit_bounds_the_listing(client: AuditClient) -> None:
    for action in ("a.one", "b.two", "c.three"):
        client.set_action_description(action, f"The action {action}")
    first = client.action_catalog(limit=2)
    assert [entry.action for entry in first.entries] == ["a.one", "action_catalog.updated"]
    assert first.truncated and first.next_page_token and first.total_entries == 4
    with pytest.raises(InvalidArgumentError) as refused:
        client.action_catalog(limit=-1)
    assert [name for name, _ in refused.value.field_violations] == ["limit"]


@pytest.mark.parametrize(
    ("rule", "secret", "template"), SECRETS[:3], ids=[s[0] for s in SECRETS[:3]]
)
def test_a_secret_pasted_into_a_description_is_redacted(
    client: AuditClient,
    sql: psycopg.Connection[Any],
    tenant: str,
    rule: str,
    secret: str,
    template: str,
) -> None:
    answer = client.set_action_description("session.expire", template.format(secret))
    assert secret not in answer.entry.description and "REDACTED" in answer.entry.description
    assert secret not in _entries(client)["session.expire"].description
    [recorded] = _changes_recorded(client, "session.expire")
    assert secret not in str(recorded)
    stored = sql.execute(
        "SELECT count(*) FROM action_catalog WHERE tenant_id = %s AND strpos(description, %s) > 0",
        [tenant, secret],
    ).fetchone()
    assert stored == (0,)


def test_a_tenant_sees_only_its_own_catalogue(client_for: Clients, tenant: str) -> None:
    mine, theirs = client_for(tenant), client_for(f"{tenant}-other")
    mine.record(build_event(action="doc.mine", actor_id="u"))
    mine.set_action_description("doc.mine", "Mine")
    theirs.set_action_description("doc.mine", "Theirs")
    theirs.set_action_description("doc.theirs", "Theirs only")
    assert _entries(mine)["doc.mine"].description == "Mine"
    assert _entries(mine)["doc.mine"].count == 1
    assert "doc.theirs" not in _entries(mine)
    theirs_listed = _entries(theirs)
    assert theirs_listed["doc.mine"].description == "Theirs"
    assert theirs_listed["doc.mine"].count == 0
    mine.set_action_description("doc.mine", "")
    assert _entries(theirs)["doc.mine"].description == "Theirs"


def test_the_cli_lists_and_describes_actions(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    def cli(*args: str, role: str = "admin") -> tuple[int, str]:
        env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, role)}
        done = CliRunner().invoke(client_cli.main, ["actions", *args], env=env)
        return done.exit_code, done.output

    client.record(build_event(action="doc.share_external", actor_id="u"))
    code, said = cli("describe", "doc.share_external", "Shared outside the organisation")
    assert (code, said) == (0, "doc.share_external: Shared outside the organisation\n")
    assert cli("describe", "doc.share_external", "Shared outside the organisation") == (
        0,
        "doc.share_external: already as asked; nothing recorded\n",
    )
    assert cli("describe", "billing.refund", "A refund was issued")[0] == 0

    code, listed = cli("list", role="reader")
    assert code == 0, listed
    # Rich draws the header's rules heavy (U+2503), the rows' light (U+2502).
    [header] = [line.split("\u2503") for line in listed.splitlines() if "\u2503" in line]
    assert [cell.strip() for cell in header[1:5]] == [
        "action",
        "events",
        "last seen",
        "description",
    ]
    rows = [line.split("\u2502") for line in listed.splitlines() if "\u2502" in line]
    cells = {row[1].strip(): [cell.strip() for cell in row[2:]] for row in rows}
    assert cells["doc.share_external"][0] == "1" and cells["doc.share_external"][1]
    assert cells["doc.share_external"][2] == "Shared outside the organisation"
    assert cells["billing.refund"] == ["0", "", "A refund was issued", "", ""]

    assert cli("describe", "billing.refund", "--clear") == (
        0,
        "billing.refund: description cleared\n",
    )
    assert "billing.refund" not in cli("list")[1]
    # Neither or both of a description and --clear; a reader may not describe.
    assert cli("describe", "doc.edit")[0] == 2
    assert cli("describe", "doc.edit", "text", "--clear")[0] == 2
    code, said = cli("describe", "doc.edit", "A document was edited", role="reader")
    assert code != 0 and "PERMISSION_DENIED" in said
    code, said = cli("describe", "Doc.Edit", "A document was edited")
    assert code == 2 and "ACTION: must be dotted lowercase" in said


def recorded_actions(client: AuditClient, actions: list[str]) -> None:
    """`client` records one event of each of `actions`, in batches of 500."""
    for start in range(0, len(actions), 500):
        client.record_batch(
            [build_event(action=action, actor_id="u") for action in actions[start : start + 500]]
        )


def _listings_recorded(client: AuditClient) -> int:
    """How many ListActionCatalog listings the log has recorded."""
    found = client.query(build_filter(actions="audit_log.queried"), page_size=1000)
    return sum(1 for event in found if event.details["rpc"] == "ListActionCatalog")


def test_pages_list_every_entry_once_in_order_of_one_log(client: AuditClient) -> None:
    # Actions of the log and described ones, some sharing a first letter, one
    # of each kind described: in byte order, "a_b" sorts after "a.c".
    recorded_actions(client, ["doc.edit", "doc.edit", "a_b.x", "doc.share", "zz.last"])
    client.set_action_description("a.c", "Described, not recorded")
    client.set_action_description("zz.last", "The last by name")
    first = client.action_catalog(limit=2)
    expected = sorted(
        ["a.c", "a_b.x", "action_catalog.updated", "doc.edit", "doc.share", "zz.last"],
        key=str.encode,
    )
    assert first.total_entries == len(expected)
    # Recorded meanwhile: counted by none of the pages (they count the first's log).
    client.record(build_event(action="doc.edit", actor_id="u"))
    client.record(build_event(action="aa.between", actor_id="u"))
    pages = [first]
    while pages[-1].next_page_token:
        assert pages[-1].truncated
        pages.append(client.action_catalog(limit=2, page_token=pages[-1].next_page_token))
    assert not pages[-1].truncated and len(pages) == 3
    listed = [entry for page in pages for entry in page.entries]
    assert [entry.action for entry in listed] == expected
    assert {page.tree_size for page in pages} == {first.tree_size}
    assert {page.total_entries for page in pages} == {len(expected)}
    counts = {entry.action: entry.count for entry in listed}
    assert counts["doc.edit"] == 2 and counts["a.c"] == 0
    assert {entry.action: entry.description for entry in listed}["zz.last"] == "The last by name"
    # The later pages read on the strength of the first's record, not recorded.
    assert _listings_recorded(client) == 1
    # The iterator reads every page: the events recorded since counted too.
    every = list(client.action_catalog_entries(page_size=2))
    assert [e.action for e in every] == sorted([*expected, "aa.between", "audit_log.queried"])
    assert {e.action: e.count for e in every}["doc.edit"] == 3
    assert [e.action for e in client.action_catalog_entries(page_size=2, limit=3)] == [
        "a.c",
        "a_b.x",
        "aa.between",
    ]


def test_later_pages_carry_the_first_pages_total(client: AuditClient) -> None:
    recorded_actions(client, ["a.one", "b.two", "c.three"])
    pages = [client.action_catalog(limit=1)]
    assert pages[0].total_entries == 3
    # Described after the first page: listed on a later one (descriptions are
    # read as each page is), not counted in the total it carries on.
    client.set_action_description("zz.new", "Described since")
    while pages[-1].next_page_token:
        pages.append(client.action_catalog(limit=1, page_token=pages[-1].next_page_token))
    assert [e.action for page in pages for e in page.entries] == [
        "a.one",
        "b.two",
        "c.three",
        "zz.new",
    ]
    assert {page.total_entries for page in pages} == {3}


async def test_the_async_client_reads_every_page(server: ServerThread, tenant: str) -> None:
    with AuditClient(server.target, token=server.token(tenant)) as client:
        recorded_actions(client, ["b.two", "a.one", "c.three"])
    async with AsyncAuditClient(server.target, token=server.token(tenant, "reader")) as reader:
        first = await reader.action_catalog(limit=1)
        second = await reader.action_catalog(limit=1, page_token=first.next_page_token)
        every = [entry.action async for entry in reader.action_catalog_entries(page_size=1)]
        some = [entry.action async for entry in reader.action_catalog_entries(limit=2)]
    assert [e.action for e in (*first.entries, *second.entries)] == ["a.one", "b.two"]
    assert every == ["a.one", "audit_log.queried", "b.two", "c.three"]
    assert some == ["a.one", "audit_log.queried"]


def _refused_page_token(client: AuditClient, token: str) -> str:
    with pytest.raises(InvalidArgumentError) as refused:
        client.action_catalog(limit=1, page_token=token)
    [(field, said)] = refused.value.field_violations
    assert field == "page_token"
    return said


def test_a_page_token_of_another_tenant_rpc_or_caller_or_altered_is_refused(
    client_for: Clients, tenant: str
) -> None:
    mine, theirs = client_for(tenant), client_for(f"{tenant}-other")
    for client in (mine, theirs):
        recorded_actions(client, ["a.one", "b.two", "c.three"])
    token = mine.action_catalog(limit=1).next_page_token
    assert token
    # Another tenant's caller, another caller of mine: issued to neither.
    assert "not one issued to this caller" in _refused_page_token(theirs, token)
    other_caller = client_for(tenant, "reader")
    assert "not one issued to this caller" in _refused_page_token(other_caller, token)
    # Another RPC's (Query's), of the same caller: signed, of another kind.
    queried = mine.query_page(page_size=1).next_page_token
    assert queried and "start the query again" in _refused_page_token(mine, queried)
    # Altered: its last action or tree_size changed, or its signature.
    payload, _, mac = token.partition(".")
    assert "not one issued" in _refused_page_token(mine, f"{payload}x.{mac}")
    assert "not one issued" in _refused_page_token(mine, f"{payload}.{mac[::-1]}")
    assert "not one issued" in _refused_page_token(mine, "garbage")
    # The token itself still works for its caller: the first page's log, its
    # reads recorded since (audit_log.queried) not in it.
    assert [e.action for e in mine.action_catalog(limit=1, page_token=token).entries] == ["b.two"]


def test_the_cli_lists_every_action_or_the_first_of_them(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    # Past the API's 1,000 in one answer: the CLI reads the second page.
    actions = [f"svc.a{n:04d}" for n in range(1001)]
    recorded_actions(client, actions)
    client.set_action_description("svc.a1000", "Past the first page")
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "reader")}
    done = CliRunner().invoke(client_cli.main, ["actions", "list"], env=env)
    assert done.exit_code == 0, done.output
    rows = [line.split("\u2502") for line in done.output.splitlines() if "\u2502" in line]
    cells = {row[1].strip(): [cell.strip() for cell in row[2:]] for row in rows}
    assert set(actions) <= set(cells) and len(cells) == 1002  # and action_catalog.updated
    assert cells["svc.a1000"][2] == "Past the first page"
    assert "more actions" not in done.output

    cut = CliRunner().invoke(client_cli.main, ["actions", "list", "--limit", "2"], env=env)
    assert cut.exit_code == 0, cut.output
    rows = [line.split("\u2502") for line in cut.stdout.splitlines() if "\u2502" in line]
    assert [row[1].strip() for row in rows] == ["action_catalog.updated", "audit_log.queried"]
    assert cut.stderr == "more actions: showing the first 2; raise --limit (0: every action)\n"
    done = CliRunner().invoke(client_cli.main, ["actions", "list", "--limit", "-1"], env=env)
    assert done.exit_code == 2 and "--limit" in done.output
