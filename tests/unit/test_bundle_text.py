"""What a bundle says of itself (its checkpoint's origin, its keys' names)
is chosen by whoever wrote it: it is never written to a terminal as control
codes. Signed notes holding control characters are refused, as C2SP's
signed-note forbids them, and what `sealtrail verify` prints is escaped."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealtrail import CheckpointError
from sealtrail import _cli as cli
from sealtrail._checkpoint_check import saved_checkpoint_text
from sealtrail.tlog import (
    Checkpoint,
    NoteError,
    Verifier,
    format_checkpoint,
    generate_signer_key,
    leaf_hash,
    open_note,
    parse_checkpoint,
)

FORGER = generate_signer_key("sealtrail.local/log")  # a key of the forger's own
# Cursor to column 1 and erase the line: "SELF-CONSISTENT" wiped, a fake "OK:"
# in its place; then black on black, hiding the forger's key and the warning.
HIDING = (
    "\x1b[1G\x1b[2KOK: 1 records (seq 1..1) are in sealtrail.local/log/acme at size 1;"
    " checkpoint signed by sealtrail.local/log+8a3f9c21+AbCd\x1b[30;40m"
)


def _signed(text: str) -> str:
    """`text` signed by the forger's key, as `sign_note` would if it let it."""
    signature = FORGER.verifier.key_id + FORGER.sign(text.encode())
    return f"{text}\n\u2014 {FORGER.name} {base64.b64encode(signature).decode()}\n"


def _forge(out: Path, origin: str) -> Path:
    """A one-record complete bundle of tenant acme whose checkpoint, by the
    forger's key, names `origin`."""
    record = json.dumps(
        # Received within the period a range bundle's test claims.
        {
            "action": "user.login",
            "received_at": "2026-01-01T12:00:00Z",
            "seq": 1,
            "tenant_id": "acme",
            "v": 1,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    out.mkdir()
    (out / "records.ndjson").write_bytes(record + b"\n")
    (out / "proofs.ndjson").write_text(json.dumps({"seq": 1, "proof": []}) + "\n")
    checkpoint = format_checkpoint(Checkpoint(origin, 1, leaf_hash(record)))
    (out / "checkpoint.txt").write_text(_signed(checkpoint))
    (out / "verifier-keys.txt").write_text(FORGER.verifier.text() + "\n")
    manifest = {
        "format": "sealtrail-bundle",
        "version": 1,
        "origin": origin,
        "tree_size": 1,
        "count": 1,
        "first_seq": 1,
        "last_seq": 1,
        "complete": True,
        "created_at": "2026-01-01T00:00:00Z",
    }
    (out / "bundle.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize("control", ["\x1b", "\r", "\t", "\x00", "\x7f", "\x9b"])
def test_a_signed_note_or_checkpoint_holding_a_control_character_is_refused(
    control: str,
) -> None:
    """C0 and C1 controls and DEL, but the newlines the formats are made of
    (C1's CSI, U+009B, is an escape sequence's start to some terminals)."""
    text = format_checkpoint(Checkpoint(f"sealtrail.local/log{control}/acme", 1, bytes(32)))
    with pytest.raises(NoteError, match=f"control character U\\+{ord(control):04X}"):
        open_note(_signed(text), [FORGER.verifier])
    with pytest.raises(NoteError, match="control character"):
        parse_checkpoint(text)
    with pytest.raises(NoteError, match="control character"):
        Verifier.parse(f"log{control}+{FORGER.verifier.text().split('+', 1)[1]}")


def test_sealtrail_verify_refuses_a_checkpoint_whose_origin_holds_terminal_codes(
    tmp_path: Path,
) -> None:
    """Its origin printed as it was, a forged bundle checked without --key
    showed a fake "OK:" line over "SELF-CONSISTENT" and hid the warning that
    it was not authenticated (helper-154)."""
    bundle = _forge(tmp_path / "forged", f"{HIDING}/acme")
    verified = CliRunner().invoke(cli.main, ["verify", str(bundle)])
    assert verified.exit_code == 1, verified.output
    assert verified.output.startswith("FAILED: checkpoint: ")
    assert "control character U+001B" in verified.output
    assert "\x1b" not in verified.output


def test_sealtrail_verify_shows_an_origin_that_reorders_text_escaped(tmp_path: Path) -> None:
    """No control character, but a right-to-left override: shown escaped in
    what verify prints, its verdict and its failures alike."""
    origin = "sealtrail.local/log/\u202eKO\u2066/acme"
    bundle = _forge(tmp_path / "forged", origin)
    runner = CliRunner()
    verified = runner.invoke(cli.main, ["verify", str(bundle)])
    assert verified.exit_code == 3, verified.output
    assert verified.output.startswith("SELF-CONSISTENT: ")
    assert "sealtrail.local/log/\\u202eKO\\u2066/acme" in verified.output
    assert "not authenticated" in verified.output
    failed = runner.invoke(cli.main, ["verify", str(bundle), "--tenant", "other"])
    assert failed.exit_code == 1, failed.output
    assert "(sealtrail.local/log/\\u202eKO\\u2066/acme)" in failed.output
    assert "\u202e" not in verified.output + failed.output


# JSON nested deeper than Python's recursion limit: json.loads raises
# RecursionError, not the ValueError of JSON otherwise malformed.
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("file", "manifest"),
    [
        ("bundle.json", {}),
        ("proofs.ndjson", {}),
        ("purged.ndjson", {"version": 2}),
        (
            "edges.ndjson",
            {
                "version": 3,
                "complete": False,
                "range": {"first_seq": 1, "last_seq": 1},
                "received": {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"},
            },
        ),
    ],
)
def test_sealtrail_verify_fails_a_bundle_of_json_nested_too_deep_saying_where(
    tmp_path: Path, file: str, manifest: dict[str, object]
) -> None:
    """It crashed with a RecursionError traceback and printed no verdict; the
    library raised RecursionError, not BundleError (helper-197)."""
    bundle = _forge(tmp_path / "nested", "sealtrail.local/log/acme")
    written = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**written, **manifest}))
    (bundle / file).write_text(DEEP + "\n")
    verified = CliRunner().invoke(cli.main, ["verify", str(bundle)])
    assert verified.exit_code == 1, verified.output
    assert verified.exception is None or isinstance(verified.exception, SystemExit)
    assert verified.output.startswith(f"FAILED: {file}"), verified.output


@pytest.mark.parametrize("given", ["file", "stdin"])
def test_a_saved_checkpoint_of_json_nested_too_deep_is_refused_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """`sealtrail checkpoint --check` crashed with a RecursionError traceback
    on such a file, where other JSON without a checkpoint is refused (helper-197)."""
    saved = tmp_path / "saved.json"
    saved.write_text('{"a": ' + DEEP + "}")
    if given == "stdin":
        stdin = io.TextIOWrapper(io.BytesIO(saved.read_bytes()), encoding="utf-8")
        monkeypatch.setattr("sys.stdin", stdin)
        saved = Path("-")
    with pytest.raises(CheckpointError, match="is JSON without a 'checkpoint'"):
        saved_checkpoint_text(saved)
