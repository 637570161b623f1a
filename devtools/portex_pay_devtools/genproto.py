"""Regenerates the Python stubs from `protos/` (grpcio-tools + mypy-protobuf), or checks them.

The stubs are committed under `clients/python/src` so that the client package installs without
grpcio-tools; server and clients import the same modules. `--check` generates into a temporary
directory and fails when the committed files differ, which is how `make check` catches stale code.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path("protos")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi", ".binpb")
# The contract with its comments (source info), for server reflection: the _pb2 modules carry
# descriptors without comments, and `grpcurl describe` should show them.
DESCRIPTOR_SET = Path("portex") / "descriptor_set.binpb"
# mypy-protobuf's plugins are console scripts installed beside this interpreter.
BIN_DIR = Path(sys.executable).parent
PACKAGE_INIT = '"""Generated protobuf package. DO NOT EDIT: run `make proto`."""\n'


def generate(out_dir: Path) -> None:
    protos = sorted(str(p) for p in PROTO_ROOT.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={BIN_DIR / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN_DIR / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        f"--descriptor_set_out={out_dir / DESCRIPTOR_SET}",
        "--include_source_info",
        "--include_imports",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for proto in protos:
        package_dir = out_dir / Path(proto).relative_to(PROTO_ROOT).parent
        for directory in [package_dir, *package_dir.relative_to(out_dir).parents]:
            init = out_dir / directory / "__init__.py"
            if directory != Path(".") and not init.exists():
                init.write_text(PACKAGE_INIT)


def generated_files(root: Path) -> set[Path]:
    top = root / "portex"
    if not top.exists():
        return set()
    return {
        p.relative_to(root)
        for p in top.rglob("*")
        if p.is_file() and (p.name.endswith(GENERATED_SUFFIXES) or p.name == "__init__.py")
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed stubs are stale"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        (fresh_root / DESCRIPTOR_SET).parent.mkdir(parents=True)
        generate(fresh_root)
        fresh = generated_files(fresh_root)
        current = generated_files(options.out)
        if options.check:
            stale = sorted(
                str(p)
                for p in fresh | current
                if p not in fresh
                or p not in current
                or not filecmp.cmp(fresh_root / p, options.out / p, shallow=False)
            )
            if stale:
                print("generated stubs are stale; run `make proto`:", *stale, sep="\n  ")
                return 1
            return 0
        for path in current - fresh:
            (options.out / path).unlink()
        for path in fresh:
            (options.out / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh_root / path, options.out / path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
