"""A purge summary's seal: bound to the deployment's secret, its tenant, its
purge and every value of it."""

from __future__ import annotations

from sealtrail_server.domain.purge_summaries import SummarySeal

SUMMARY = {"purged": 3, "first_seq": 4, "last_seq": 9, "rules": [{"default": {"purged": 3}}]}
SEAL = SummarySeal(b"k" * 32)


def test_a_summary_opens_with_the_seal_it_was_given() -> None:
    mac = SEAL.seal("t1", "p1", SUMMARY)
    assert SEAL.opens("t1", "p1", dict(SUMMARY), mac)  # as read back, key order aside


def test_the_seal_binds_tenant_purge_values_and_secret() -> None:
    mac = SEAL.seal("t1", "p1", SUMMARY)
    assert not SEAL.opens("t2", "p1", SUMMARY, mac)
    assert not SEAL.opens("t1", "p2", SUMMARY, mac)
    assert not SEAL.opens("t1", "p1", {**SUMMARY, "purged": 4}, mac)
    assert not SummarySeal(b"j" * 32).opens("t1", "p1", SUMMARY, mac)


def test_no_seal_or_a_summary_no_pass_writes_does_not_open() -> None:
    assert not SEAL.opens("t1", "p1", SUMMARY, None)
    assert not SEAL.opens("t1", "p1", SUMMARY, b"")
    assert not SEAL.opens("t1", "p1", {"purged": 2**60}, bytes(32))  # rfc8785 refuses it
