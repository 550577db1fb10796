"""The two Python clients are one API: each public method of one is the
other's, with the same parameters, and says the same of what it does, but
where the difference is a thread's and a task's (how a stream is closed, where
an export's file is written)."""

from __future__ import annotations

import inspect

from sealtrail import AsyncAuditClient, AuditClient

# Their docstrings differ where one says thread and the other task.
THREADS_AND_TASKS = {"export", "export_stream", "stream"}


def _public(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_each_method_of_one_client_is_the_others() -> None:
    assert set(_public(AuditClient)) == set(_public(AsyncAuditClient))


def test_each_method_says_in_one_client_what_it_says_in_the_other() -> None:
    """The async `set_retention_policy` said the change "is recorded in the
    log before it applies": the order before a change and its record
    committed together (ADR 0075), which the sync one says."""
    sync, asynchronous = _public(AuditClient), _public(AsyncAuditClient)
    differ = [
        name
        for name in sorted(sync.keys() - THREADS_AND_TASKS)
        if inspect.getdoc(sync[name]) != inspect.getdoc(asynchronous[name])
    ]
    assert differ == []


def test_each_method_never_retried_says_so() -> None:
    """A method whose call is never retried (`retry=False`) says so, as
    docs/clients.md says of them: `delete_sink` and `delete_alert_rule`
    did not, though their siblings `create_sink` and `create_alert_rule` did."""
    unsaid = [
        f"{client.__name__}.{name}"
        for client in (AuditClient, AsyncAuditClient)
        for name, method in _public(client).items()
        if "retry=False" in inspect.getsource(method)  # type: ignore[arg-type]
        and "not retried" not in (inspect.getdoc(method) or "").lower()
    ]
    assert unsaid == []
