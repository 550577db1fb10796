"""Each caller's budget of unknown tokens (auth/unknown_tokens.py), on a
clock the test moves: spent one a token, refilled at its rate, and kept for
no more callers than it is told, a caller forgotten being one never seen."""

from __future__ import annotations

from sealtrail_server.auth.unknown_tokens import UnknownTokenBudgets, caller_key
from tests.clock import Clock


def test_a_budget_is_spent_then_refilled_at_its_rate() -> None:
    clock = Clock()
    budgets = UnknownTokenBudgets(per_minute=3, clock=clock)
    for _ in range(3):
        assert budgets.wait("a") == 0
        budgets.spent("a")
    assert budgets.wait("a") == 20.0  # one token a third of a minute
    assert budgets.wait("b") == 0
    clock.advance(seconds=15)
    assert budgets.wait("a") == 5.0
    clock.advance(seconds=5)
    assert budgets.wait("a") == 0


def test_no_limit_keeps_nothing() -> None:
    budgets = UnknownTokenBudgets(per_minute=0, clock=Clock())
    for n in range(100):
        budgets.spent(str(n))
        assert budgets.wait(str(n)) == 0
    assert len(budgets) == 0


def test_callers_whose_budget_is_full_again_are_forgotten() -> None:
    """100,000 addresses presenting an unknown token each kept 100,000
    budgets for good; now those full again go, and at most `max_callers`
    are kept."""
    clock = Clock()
    budgets = UnknownTokenBudgets(per_minute=2, clock=clock, max_callers=100)
    for n in range(100_000):
        budgets.spent(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
        if n % 1000 == 999:
            clock.advance(seconds=30)  # a thousand callers' budgets are full again
    assert len(budgets) <= 100
    budgets.spent("busy")
    budgets.spent("busy")
    assert budgets.wait("busy") == 30.0
    clock.advance(seconds=60)
    budgets.spent("another")  # makes room: "busy" is full again
    assert budgets.wait("busy") == 0


def test_an_ipv6_caller_is_its_64() -> None:
    network = "2001:db8:0:1::/64"
    assert caller_key("2001:db8:0:1::7") == caller_key("2001:db8:0:1:ffff::1") == network
    assert caller_key("203.0.113.7") == "203.0.113.7"
    assert caller_key("") == ""
