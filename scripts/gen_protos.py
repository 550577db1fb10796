"""Generate the Python client's protobuf, gRPC and mypy stub modules from proto/.

`--out DIR` writes them into DIR (the client's src/, so the proto package
`sealtrail.v1` is the import path). `--check DIR` generates into a temporary
directory and exits 1 if anything differs from what DIR holds.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("sealtrail") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out: Path, *, quiet: bool = False) -> None:
    """The modules of proto/ into `out`; `quiet`: without mypy-protobuf's
    `Writing mypy to ...` line per stub, which a check into a temporary
    directory printed as if it rewrote the committed ones."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    bin_dir = Path(sys.executable).parent
    mypy_options = "quiet:" if quiet else ""
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={Path(protoc.__file__).parent / '_proto'}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={mypy_options}{out}",
        f"--mypy_grpc_out={mypy_options}{out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_files(root: Path) -> set[str]:
    package = root / PACKAGE_DIR
    return {p.name for p in package.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", type=Path)
    mode.add_argument("--check", type=Path)
    options = parser.parse_args()

    if options.out:
        package = options.out / PACKAGE_DIR
        for name in generated_files(options.out) if package.exists() else set():
            (package / name).unlink()
        package.mkdir(parents=True, exist_ok=True)
        generate(options.out)
        return 0

    committed = options.check
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        (fresh / PACKAGE_DIR).mkdir(parents=True)
        generate(fresh, quiet=True)
        want, have = generated_files(fresh), generated_files(committed)
        stale = sorted(want ^ have)
        differing = sorted(
            name
            for name in want & have
            if not filecmp.cmp(fresh / PACKAGE_DIR / name, committed / PACKAGE_DIR / name, False)
        )
        if stale or differing:
            print("generated code is out of date; run `make proto`:", *(stale + differing))
            return 1
    print("generated code matches proto/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
