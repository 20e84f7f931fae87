"""Build hook: generates the gRPC stubs of ``tandem_client`` from the repository's proto file.

The metadata lives in ``pyproject.toml``; this file only replaces setuptools' ``build_py`` with
one that also runs ``grpc_tools.protoc`` (a build requirement, pinned there) on
``../proto/tandem/v1/search.proto``, so that the proto file stays the one source of the API and no
generated code is committed.

The proto file is copied into a temporary tree as ``tandem_client/_proto/search.proto`` and
compiled with that tree as the include root, so the generated modules are
``tandem_client._proto.search_pb2`` (with its ``.pyi``) and
``tandem_client._proto.search_pb2_grpc``, which imports the former by its absolute package name.

``TANDEM_PROTO=/path/to/search.proto`` overrides where the proto file is looked for.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
DEFAULT_PROTO = HERE.parent / "proto" / "tandem" / "v1" / "search.proto"
PACKAGE_DIR = ("tandem_client", "_proto")
GENERATED = ("search_pb2.py", "search_pb2.pyi", "search_pb2_grpc.py")
# Generated code is not ours to type-check strictly; this holds wherever mypy is run from.
MYPY_HEADER = "# mypy: ignore-errors\n"


def proto_path() -> Path:
    """The proto file to compile, or a clear error naming where it was looked for."""
    override = os.environ.get("TANDEM_PROTO")
    path = Path(override).resolve() if override else DEFAULT_PROTO
    if not path.is_file():
        how = "TANDEM_PROTO" if override else "the repository layout (python/../proto/...)"
        raise RuntimeError(
            f"tandem_client: cannot generate the gRPC stubs: proto file not found at {path} "
            f"(looked for through {how}). Build the package from a checkout of the tandem "
            "repository (`pip install ./python` from its root), or set TANDEM_PROTO to the path "
            "of tandem/v1/search.proto."
        )
    return path


def generate(out_dir: Path) -> None:
    """Compiles the proto file into ``out_dir/tandem_client/_proto/``."""
    from grpc_tools import protoc  # a build requirement (pyproject.toml)

    try:
        from importlib.resources import files

        well_known = str(files("grpc_tools") / "_proto")
    except Exception:  # pragma: no cover - only the include path of google/protobuf/*.proto
        well_known = None

    source = proto_path()
    with tempfile.TemporaryDirectory(prefix="tandem-proto-") as tmp:
        tree = Path(tmp) / "src"
        proto_dir = tree.joinpath(*PACKAGE_DIR)
        proto_dir.mkdir(parents=True)
        shutil.copyfile(source, proto_dir / "search.proto")
        gen = Path(tmp) / "gen"
        gen.mkdir()
        args = ["grpc_tools.protoc", f"-I{tree}"]
        if well_known:
            args.append(f"-I{well_known}")
        args += [
            f"--python_out={gen}",
            f"--grpc_python_out={gen}",
            f"--pyi_out={gen}",
            str(proto_dir / "search.proto"),
        ]
        status = protoc.main(args)
        if status != 0:
            raise RuntimeError(f"tandem_client: grpc_tools.protoc failed on {source} ({status})")
        target = out_dir.joinpath(*PACKAGE_DIR)
        target.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            produced = gen.joinpath(*PACKAGE_DIR) / name
            if not produced.is_file():
                raise RuntimeError(f"tandem_client: grpc_tools.protoc did not produce {name}")
            text = produced.read_text(encoding="utf-8")
            (target / name).write_text(MYPY_HEADER + text, encoding="utf-8")
        (target / "__init__.py").write_text('"""Generated gRPC stubs."""\n', encoding="utf-8")


class BuildPyWithStubs(build_py):
    """``build_py`` that also writes the generated stubs into the build (or, for an editable
    install, into the source tree, where ``.gitignore`` keeps them out of the repository)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            generate(HERE)
        else:
            generate(Path(self.build_lib))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            base = Path(self.build_lib).joinpath(*PACKAGE_DIR)
            outputs += [str(base / name) for name in (*GENERATED, "__init__.py")]
        return outputs


setup(cmdclass={"build_py": BuildPyWithStubs})
