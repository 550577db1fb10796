"""SetActionDescription's update mask (ADR 0148, addendum): a change of an
action's description keeps the category the catalogue declares for it, and a
change of its category keeps its description, whether it comes from the CLI,
the Python client or an older client that sends no mask; an entry left with
neither leaves the catalogue."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from click.testing import CliRunner
from google.protobuf import field_mask_pb2

from sealtrail import AuditClient
from sealtrail import _cli as client_cli
from sealtrail.v1 import audit_service_pb2_grpc, catalog_pb2, event_pb2
from tests.conftest import ServerThread

SECURITY = event_pb2.CATEGORY_SECURITY
BILLING = event_pb2.CATEGORY_BILLING


def _entry(client: AuditClient, action: str) -> tuple[str, int] | None:
    """`action`'s (description, category) as the catalogue lists it, or None
    when the catalogue holds no entry of it."""
    for entry in client.action_catalog().entries:
        if entry.action == action and entry.HasField("update_time"):
            return entry.description, entry.category
    return None


@pytest.fixture
def cli(server: ServerThread, tenant: str) -> Callable[..., tuple[int, str]]:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}

    def run(*args: str) -> tuple[int, str]:
        done = CliRunner().invoke(client_cli.main, ["actions", "describe", *args], env=env)
        return done.exit_code, done.output

    return run


def test_the_cli_changes_what_it_is_given_and_keeps_the_rest(
    cli: Callable[..., tuple[int, str]], client: AuditClient
) -> None:
    assert cli("api_key.create", "An API key was craeted", "--category", "security")[0] == 0
    # A typo fixed: the declared category stays.
    assert cli("api_key.create", "An API key was created") == (
        0,
        "api_key.create: An API key was created [category security]\n",
    )
    assert _entry(client, "api_key.create") == ("An API key was created", SECURITY)
    # The category alone: the description stays.
    assert cli("api_key.create", "--category", "billing") == (
        0,
        "api_key.create: An API key was created [category billing]\n",
    )
    assert _entry(client, "api_key.create") == ("An API key was created", BILLING)
    # --clear clears the description alone, and says the category stays.
    assert cli("api_key.create", "--clear") == (
        0,
        "api_key.create: description cleared; its category billing stays\n",
    )
    assert _entry(client, "api_key.create") == ("", BILLING)
    # --no-category then leaves nothing: the action leaves the catalogue.
    code, said = cli("api_key.create", "--no-category")
    assert (code, said) == (0, "api_key.create: category cleared\n"), said
    assert _entry(client, "api_key.create") is None
    # Nothing to change, or both ways at once: usage errors.
    assert cli("api_key.create")[0] == 2
    assert cli("api_key.create", "--category", "billing", "--no-category")[0] == 2
    assert cli("api_key.create", "text", "--clear")[0] == 2


def test_the_cli_clears_a_description_without_a_category(
    cli: Callable[..., tuple[int, str]], client: AuditClient
) -> None:
    assert cli("doc.view", "A document was read")[0] == 0
    assert cli("doc.view", "--clear") == (0, "doc.view: description cleared\n")
    assert _entry(client, "doc.view") is None


def test_the_client_keeps_what_it_is_not_given(client: AuditClient) -> None:
    client.set_action_description("api_key.create", "An API key was craeted", category="security")
    answer = client.set_action_description("api_key.create", "An API key was created")
    assert (answer.entry.description, answer.entry.category) == ("An API key was created", SECURITY)
    answer = client.set_action_description("api_key.create", category="billing")
    assert (answer.entry.description, answer.entry.category) == ("An API key was created", BILLING)
    answer = client.set_action_description("api_key.create", None)  # the description cleared
    assert (answer.entry.description, answer.entry.category) == ("", BILLING)
    assert _entry(client, "api_key.create") == ("", BILLING)
    assert client.set_action_description("api_key.create", category=None).event_id
    assert _entry(client, "api_key.create") is None
    with pytest.raises(TypeError, match="description or a category"):
        client.set_action_description("api_key.create")


def _stub_call(
    server: ServerThread, tenant: str, request: catalog_pb2.SetActionDescriptionRequest
) -> catalog_pb2.SetActionDescriptionResponse:
    metadata = (("authorization", f"Bearer {server.token(tenant)}"),)
    with grpc.insecure_channel(server.target) as channel:
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        answer: catalog_pb2.SetActionDescriptionResponse = stub.SetActionDescription(
            request, metadata=metadata
        )
        return answer


def test_an_empty_mask_changes_the_description_alone(
    server: ServerThread, tenant: str, client: AuditClient
) -> None:
    """As a client that predates categories sends it: no mask, no category."""
    client.set_action_description("api_key.create", "Made", category="security")
    answer = _stub_call(
        server,
        tenant,
        catalog_pb2.SetActionDescriptionRequest(action="api_key.create", description="Created"),
    )
    assert (answer.entry.description, answer.entry.category) == ("Created", SECURITY)
    answer = _stub_call(
        server, tenant, catalog_pb2.SetActionDescriptionRequest(action="api_key.create")
    )
    assert (answer.entry.description, answer.entry.category) == ("", SECURITY)
    assert _entry(client, "api_key.create") == ("", SECURITY)


def test_a_mask_of_both_sets_the_entry_whole(
    server: ServerThread, tenant: str, client: AuditClient
) -> None:
    client.set_action_description("api_key.create", "Made", category="security")
    for paths in (["description", "category"], ["*"]):
        client.set_action_description("api_key.create", "Made", category="security")
        _stub_call(
            server,
            tenant,
            catalog_pb2.SetActionDescriptionRequest(
                action="api_key.create",
                description="Created",
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            ),
        )
        assert _entry(client, "api_key.create") == ("Created", event_pb2.CATEGORY_UNSPECIFIED)


@pytest.mark.parametrize("paths", [["descripton"], ["description", "action"], ["*", "category"]])
def test_a_wrong_mask_is_refused_naming_update_mask(
    server: ServerThread, tenant: str, client: AuditClient, paths: list[str]
) -> None:
    client.set_action_description("api_key.create", "Made", category="security")
    with pytest.raises(grpc.RpcError) as refused:
        _stub_call(
            server,
            tenant,
            catalog_pb2.SetActionDescriptionRequest(
                action="api_key.create",
                description="Changed",
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            ),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_mask" in str(refused.value.details())
    assert _entry(client, "api_key.create") == ("Made", SECURITY)
