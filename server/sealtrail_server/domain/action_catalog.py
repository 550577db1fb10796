"""What a tenant's action catalogue accepts (SetActionDescription): an action
written as Record takes one, and a description written as a name people
give is (domain/names.py), only longer; and, with a tenant's `strict_actions`
on, what Record refuses against it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from .errors import FieldViolation
from .event import ACTION_PATTERN, MAX_ACTION
from .names import name_problem

MAX_DESCRIPTION: Final = 500


def action_problem(action: str) -> str | None:
    """Why `action` names no action Record could record, or None. Sealtrail's
    own actions (`audit_log.queried`, `retention.*`) may be described too."""
    if not action:
        return "is required"
    if len(action) > MAX_ACTION:
        return f"must be at most {MAX_ACTION} characters"
    if not ACTION_PATTERN.fullmatch(action):
        return "must be dotted lowercase `resource.verb`, e.g. `api_key.create`"
    return None


def description_problem(description: str) -> str | None:
    """Why `description` cannot describe an action, or None: blank, longer
    than MAX_DESCRIPTION, or holding a control or invisible character."""
    return name_problem(description, limit=MAX_DESCRIPTION, required=True)


def strict_refusal(
    action: str, category: str | None, catalog: Mapping[str, str | None], *, path: str
) -> FieldViolation | None:
    """Why a tenant with `strict_actions` on refuses an event (its `action`
    and `category`, at `path` of its request) against its `catalog` (each
    action and its declared category, None for any), or None (ADR 0148).
    Refused, not given the declared category: the sender's mistake would be
    hidden, and its category filters and rules keep missing what it sends."""
    if action not in catalog:
        return FieldViolation(
            f"{path}.action",
            "the action catalogue does not describe this action (strict_actions is on)",
        )
    declared = catalog[action]
    if declared is not None and category != declared:
        return FieldViolation(
            f"{path}.category",
            f"the action catalogue declares category CATEGORY_{declared.upper()} for this action",
        )
    return None
