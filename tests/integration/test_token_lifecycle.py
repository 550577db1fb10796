"""An API token's life as a tenant's admin and the deployment's operator
manage it: what the log says of its revocation, whoever revokes it, and
which servers stop honouring it when."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from sealtrail import AuditClient, UnauthenticatedError, build_filter
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread, run_operator

# A secret pasted into a name: the records show it redacted, never in clear.
_LEAKED = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"


def _revocation_of(admin: AuditClient, token_id: str) -> event_pb2.Event:
    [revoked] = [
        event
        for event in admin.query(build_filter(actions="api_token.revoked"))
        if event.resource.id == token_id
    ]
    return revoked


def test_the_operators_revocation_names_the_tokens_role_and_name_as_the_apis_does(
    migrated_database_url: str, server: ServerThread, tenant: str
) -> None:
    """The operator's `token revoke` recorded "Revoked an API token" and no
    details: which token went (a billing service's recorder, the team's
    admin) was to be looked up elsewhere, and a SIEM rule on the revoked
    token's `details.role`, which the API's revocations carry, never saw the
    operator's."""
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        by_api = admin.create_token("recorder", name=f"billing, was {_LEAKED}")
        by_operator = admin.create_token("admin", name=f"team admin, was {_LEAKED}")
        admin.revoke_token(by_api.token.token_id)
        revoked = run_operator(migrated_database_url, "token", "revoke", by_operator.token.token_id)
        assert revoked.exit_code == 0, revoked.output
        api_record = _revocation_of(admin, by_api.token.token_id)
        operator_record = _revocation_of(admin, by_operator.token.token_id)
        created_name = json_format.MessageToDict(admin.get_event(by_operator.event_id).details)[
            "name"
        ]
    assert operator_record.actor.type == event_pb2.ACTOR_TYPE_SYSTEM
    assert api_record.description == "Revoked an API token with role recorder"
    assert operator_record.description == "Revoked an API token with role admin"
    details = json_format.MessageToDict(operator_record.details)
    assert set(details) == set(json_format.MessageToDict(api_record.details)) == {"role", "name"}
    assert details["role"] == "admin"
    # As its creation's record names it: redacted as the tenant's events are.
    assert details["name"] == created_name
    assert _LEAKED not in details["name"] and details["name"].startswith("team admin, was ")


def test_a_revocation_answered_as_done_already_stops_the_token_on_the_server_answering(
    migrated_database_url: str, server: ServerThread, tenant: str
) -> None:
    """A revocation whose answer was lost is sent again (the Python client
    does it itself), and behind a load balancer the retry reaches another
    server process, which answers the token revoked: yet that process went
    on honouring the token it had cached, for its whole cache interval, where
    a revocation it answers stops the token on it at once."""
    other = ServerThread(migrated_database_url, token_cache_seconds=3600)
    try:
        with AuditClient(server.target, token=server.token(tenant)) as admin:
            reader = admin.create_token("reader", name="departed employee")
            with AuditClient(other.target, token=reader.secret, max_attempts=1) as departed:
                departed.get_verifier_keys()  # resolved there, cached for an hour
                admin.revoke_token(reader.token.token_id)  # its answer lost, say
                with AuditClient(other.target, token=server.token(tenant)) as retrying:
                    again = retrying.revoke_token(reader.token.token_id)
                assert again.token.HasField("revoke_time")
                with pytest.raises(UnauthenticatedError):
                    departed.get_verifier_keys()
    finally:
        other.close()
