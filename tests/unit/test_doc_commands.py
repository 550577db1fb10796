"""Every `sealtrail` and `sealtrail-server` command in the shell blocks of the
READMEs and docs names commands and options the command lines have, with no
argument left over: a reader who copies one is never told `No such option`.
The commands are parsed as the command lines parse them, never run (no server,
no database); a placeholder such as SINK_ID or FIRST-LAST stands for a value,
and a file the reader makes (`@hec-token.txt`) may be missing, but any other
value an option refuses (`--window 10m` where it takes seconds) is found."""

from __future__ import annotations

import io
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from sealtrail._cli import main as client_cli
from sealtrail_server.cli import main as server_cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "clients/python/README.md", *sorted(ROOT.glob("docs/*.md"))]
CONTROL = {"|", "||", "&", "&&", ";", "(", ")"}
REDIRECT = re.compile(r"\d?[<>]{1,2}&?\d?")
UNREAD_FILE = re.compile(r"No such file|does not exist|cannot read")
PLACEHOLDER = re.compile(r"'\$?[A-Z][A-Z0-9_-]*'")


def shell_commands(text: str) -> Iterator[str]:
    """The commands of the ```sh blocks of `text`, and the `$ ` lines of its
    blocks of no language (a command shown with its output): one per pipeline
    stage, per `$(...)`, per list item; comments, `VAR=value` prefixes and
    redirections dropped."""
    for language, block in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if language not in ("sh", "bash", "shell", ""):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("$ "):
                line = line[2:]
            elif not language:
                continue
            # A substitution is a command of its own; its value, a word.
            inner = re.findall(r"\$\(([^()]*)\)", line)
            line = re.sub(r"\$\([^()]*\)", "VALUE", line)
            for command in [*inner, line]:
                yield from _split(command)


def _split(line: str) -> Iterator[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;()<>")
    lexer.whitespace_split = True
    try:
        tokens = [*lexer, ";"]
    except ValueError:
        # A line of a quoted text spanning lines (a script given to python3 -c,
        # a JSON body): no command of ours, unless it starts like one.
        assert not re.match(r"\s*(\.venv/bin/)?sealtrail", line), line
        return
    words: list[str] = []
    for word in tokens:
        if word in CONTROL:
            if words:
                yield shlex.join(words)
            words = []
        else:
            words.append(word)


def invocation(command: str) -> list[str] | None:
    """`command` as argv of one of the two command lines, or None."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        words.pop(0)
    kept: list[str] = []
    redirected = False
    for word in words:
        if redirected:
            redirected = False
        elif REDIRECT.fullmatch(word):
            redirected = True  # its file follows
        else:
            kept.append(word)
    if not kept or Path(kept[0]).name not in ("sealtrail", "sealtrail-server"):
        return None
    return [Path(kept[0]).name, *kept[1:]]


def misuse(argv: list[str]) -> str | None:
    """What the command line would say is wrong with `argv`'s commands and
    options (an unknown command or option, an option without its value, an
    argument too many), or None."""
    command: click.Command = server_cli if argv[0] == "sealtrail-server" else client_cli
    parent: click.Context | None = None
    args = argv[1:]
    while isinstance(command, click.Group):
        context = click.Context(command, info_name=command.name, parent=parent)
        try:
            # A group's own options, then its subcommand and the rest.
            rest = click.Command.parse_args(command, context, list(args))
        except click.NoSuchOption as error:
            return error.format_message()
        if not rest:
            return None  # a group run without a subcommand (`sealtrail sinks`)
        found = command.get_command(context, rest[0])
        if found is None:
            return f"no command {rest[0]!r} in {' '.join(argv)}"
        command, parent, args = found, context, rest[1:]
    try:
        command.make_context(command.name, list(args), parent=parent)
    except click.MissingParameter:
        return None  # a value left out for brevity
    except click.BadParameter as error:
        # A file the reader makes (`@hec-token.txt`, an export's manifest), or a
        # placeholder where a value goes (SINK_ID, $VKEY); any other value refused
        # (`--window 10m` where seconds are taken) is the doc's mistake.
        said = error.format_message()
        if UNREAD_FILE.search(said) or PLACEHOLDER.search(said):
            return None
        return said
    except click.UsageError as error:
        return error.format_message()
    except click.exceptions.Exit:
        return None
    return None


def documented() -> list[tuple[str, str]]:
    return [
        (str(doc.relative_to(ROOT)), command)
        for doc in DOCS
        for command in shell_commands(doc.read_text("utf-8"))
        if invocation(command) is not None
    ]


def test_the_docs_show_commands_of_both_command_lines() -> None:
    commands = documented()
    assert len(commands) > 50
    assert any(command.startswith("sealtrail-server ") for _, command in commands)


@pytest.mark.parametrize(("doc", "command"), documented())
def test_a_documented_command_names_commands_and_options_the_cli_has(
    doc: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An option that reads `-` reads stdin as it is parsed.
    monkeypatch.setattr(sys, "stdin", io.StringIO("x\n"))
    argv = invocation(command)
    assert argv is not None
    assert misuse(argv) is None, f"{doc}: {command}: {misuse(argv)}"


@pytest.mark.parametrize(
    "argv",
    [
        ["sealtrail", "sinks", "update", "SINK_ID", "--no-such-flag"],
        ["sealtrail", "query", "--since", "1h", "extra"],
        ["sealtrail", "no-such-command"],
        ["sealtrail-server", "tenant", "list", "--format"],
        ["sealtrail", "--no-such-flag", "query"],
        # A value of the wrong kind, not a placeholder: words, not a duration.
        ["sealtrail", "alerts", "create", "x", "--kind", "threshold", "--window", "ten minutes"],
        ["sealtrail", "query", "--format", "yaml"],
    ],
)
def test_a_command_the_cli_would_refuse_is_found(argv: list[str]) -> None:
    assert misuse(argv) is not None


def test_substitutions_pipelines_and_redirections_are_taken_apart() -> None:
    text = (
        "```sh\n"
        'sealtrail verify nov-audit --key "$(sealtrail-server key show)"\n'
        "TOKEN=$(sealtrail tokens create --role recorder) # a comment\n"
        "sealtrail checkpoint > saved.txt && sealtrail query --format jsonl | jq .\n"
        "```\n"
    )
    assert [invocation(command) for command in shell_commands(text)] == [
        ["sealtrail-server", "key", "show"],
        ["sealtrail", "verify", "nov-audit", "--key", "VALUE"],
        ["sealtrail", "tokens", "create", "--role", "recorder"],
        None,  # TOKEN=VALUE, a comment
        ["sealtrail", "checkpoint"],
        ["sealtrail", "query", "--format", "jsonl"],
        None,  # jq
    ]


def make_targets() -> set[str]:
    """The Makefile's targets, as its `.PHONY` line names them."""
    (line,) = re.findall(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text("utf-8"), re.M)
    return set(line.split())


def test_every_make_target_is_in_contributings_table() -> None:
    """CONTRIBUTING.md's table is where a contributor finds the Makefile's
    targets: `make soak` and `make clean` were not in it."""
    rows = re.findall(r"^\|([^|\n]*)\|", (ROOT / "CONTRIBUTING.md").read_text("utf-8"), re.M)
    listed = {target for row in rows for target in re.findall(r"`make ([a-z-]+)`", row)}
    assert make_targets() - listed == set()
