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
