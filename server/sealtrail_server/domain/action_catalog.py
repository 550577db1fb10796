"""What a tenant's action catalogue accepts (SetActionDescription): an action
written as Record takes one, and a description written as a name people
give is (domain/names.py), only longer."""

from __future__ import annotations

from typing import Final

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
