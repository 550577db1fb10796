"""`sealtrail alerts ...` run in process against a test's server as the
tenant's admin, for tests of the alerts commands."""

from __future__ import annotations

from collections.abc import Callable

from click.testing import CliRunner

from sealtrail import _cli as client_cli
from tests.conftest import ServerThread


def alerts_cli(server: ServerThread, tenant: str) -> Callable[..., tuple[int, str]]:
    """A runner of `sealtrail alerts *args`: its exit code and output."""
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "admin")}

    def cli(*args: str) -> tuple[int, str]:
        done = CliRunner().invoke(client_cli.main, ["alerts", *args], env=env)
        return done.exit_code, done.output

    return cli
