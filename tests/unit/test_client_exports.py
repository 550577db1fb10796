"""The client package's public names, imported when first used (PEP 562):
`import sealtrail` (and its command line's cheap modules) costs nothing of
gRPC or protobuf, and every name of `__all__` is there all the same."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import sealtrail

# What the client's command lines (and `import sealtrail`) are not to import
# before they need it: each took a while to import on a busy machine.
HEAVY = ("grpc", "psycopg", "opentelemetry.sdk", "cryptography", "joserfc", "google.protobuf")


@pytest.mark.parametrize("name", sealtrail.__all__)
def test_every_public_name_imports_from_the_package(name: str) -> None:
    value = getattr(sealtrail, name)
    home = sealtrail._HOMES[name]
    assert value is getattr(sys.modules[home], name)
    assert name in dir(sealtrail)


def test_all_names_what_the_package_serves() -> None:
    assert sorted(sealtrail.__all__) == sorted(sealtrail._HOMES)
    assert len(set(sealtrail.__all__)) == len(sealtrail.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'AuditClients'"):
        sealtrail.AuditClients  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ImportError, match="AuditClients"):
        from sealtrail import AuditClients  # type: ignore[attr-defined]  # noqa: F401


def test_the_package_alone_imports_no_heavy_module() -> None:
    program = textwrap.dedent(
        f"""
        import json, sys
        import sealtrail, sealtrail._terminal
        print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))
        from sealtrail import *
        print(json.dumps(sorted(set(sealtrail.__all__) - set(globals()))))
        """
    )
    ended = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    loaded, missing = (json.loads(line) for line in ended.stdout.splitlines())
    assert loaded == []
    assert missing == []  # `import *` has them all
