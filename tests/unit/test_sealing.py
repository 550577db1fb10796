"""Secrets sealed at rest (domain/sealing.py): they open only where they were
sealed, only with a configured key, and a rotation reseals under the new key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from sealtrail_server.config import Settings
from sealtrail_server.domain.sealing import SEALED_PREFIX, SealError, SecretBox, key_id
from sealtrail_server.sealing_setup import load_secret_box

OLD, NEW = bytes(32), bytes(range(32))
PLACE = "sinks/t1/8c1f/token"


def test_a_sealed_secret_opens_where_it_was_sealed_and_hides_what_it_holds() -> None:
    box = SecretBox([NEW])
    sealed = box.seal("hec-token-1234", place=PLACE)
    assert sealed.startswith(SEALED_PREFIX) and "hec-token" not in sealed
    assert box.seal("hec-token-1234", place=PLACE) != sealed  # a fresh nonce each time
    assert box.open(sealed, place=PLACE) == "hec-token-1234"
    assert box.is_current(sealed)


def test_a_sealed_secret_copied_elsewhere_does_not_open() -> None:
    box = SecretBox([NEW])
    sealed = box.seal("hec-token-1234", place=PLACE)
    with pytest.raises(SealError, match="belongs elsewhere"):
        box.open(sealed, place="sinks/t2/8c1f/token")


def test_a_changed_sealed_secret_does_not_open() -> None:
    box = SecretBox([NEW])
    sealed = box.seal("hec-token-1234", place=PLACE)
    packed = bytearray(base64.urlsafe_b64decode(sealed.removeprefix(SEALED_PREFIX)))
    packed[-1] ^= 1  # one bit of the tag
    changed = SEALED_PREFIX + base64.urlsafe_b64encode(bytes(packed)).decode()
    with pytest.raises(SealError, match="changed"):
        box.open(changed, place=PLACE)
    with pytest.raises(SealError, match="base64"):
        box.open(SEALED_PREFIX + "%%%", place=PLACE)
    with pytest.raises(SealError, match="too short"):
        box.open(SEALED_PREFIX + "AAAA", place=PLACE)


def test_a_secret_sealed_under_a_key_not_configured_names_that_key() -> None:
    sealed = SecretBox([OLD]).seal("k", place=PLACE)
    with pytest.raises(SealError, match=key_id(OLD).hex()):
        SecretBox([NEW]).open(sealed, place=PLACE)


def test_while_rotating_the_new_key_seals_and_the_old_still_opens() -> None:
    old_sealed = SecretBox([OLD]).seal("k", place=PLACE)
    rotating = SecretBox([NEW, OLD])
    assert rotating.open(old_sealed, place=PLACE) == "k"
    assert not rotating.is_current(old_sealed)
    assert rotating.is_current(rotating.seal("k", place=PLACE))
    assert SecretBox([NEW]).open(rotating.seal("k", place=PLACE), place=PLACE) == "k"


def test_a_secret_in_the_clear_is_refused_and_not_current() -> None:
    box = SecretBox([NEW])
    with pytest.raises(SealError, match="in the clear"):
        box.open("whsec_plain", place=PLACE)
    assert not box.is_current("whsec_plain")


@pytest.mark.parametrize("keys", [[], [bytes(31)], [NEW, bytes(33)]])
def test_keys_are_32_bytes(keys: list[bytes]) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox(keys)


def test_the_secrets_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secrets_key=None)
    sealed = load_secret_box(settings).seal("k", place=PLACE)
    kept = tmp_path / "secrets-key"
    assert kept.stat().st_mode & 0o777 == 0o600
    assert load_secret_box(settings).open(sealed, place=PLACE) == "k"  # the same key again


def test_configured_keys_seal_with_the_first_and_open_with_any(tmp_path: Path) -> None:
    old_sealed = SecretBox([OLD]).seal("k", place=PLACE)
    settings = Settings(data_dir=tmp_path, secrets_key=f"{NEW.hex()}, {OLD.hex()}")
    box = load_secret_box(settings)
    assert box.open(old_sealed, place=PLACE) == "k" and not box.is_current(old_sealed)
    assert not (tmp_path / "secrets-key").exists()


@pytest.mark.parametrize("text", ["", "abc", NEW.hex() + ",", "zz" * 32])
def test_a_malformed_secrets_key_stops_the_start_naming_it(tmp_path: Path, text: str) -> None:
    settings = Settings(data_dir=tmp_path, secrets_key=text or " ")
    with pytest.raises(SystemExit, match=r"SEALTRAIL_SECRETS_KEY: not a secrets key \(64 hex"):
        load_secret_box(settings)
