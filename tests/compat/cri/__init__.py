"""A CRI v1 client for the tests: api.proto (the subset they use) compiled with grpcio-tools
into a directory of the caller's, then imported."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

PROTO = Path(__file__).with_name("api.proto")


def compile_api(out_dir: Path) -> tuple[ModuleType, ModuleType]:
    """(messages, stubs): the modules protoc makes of api.proto in `out_dir`."""
    from grpc_tools import protoc  # grpcio-tools, a test dependency

    out_dir.mkdir(parents=True, exist_ok=True)
    status = protoc.main(["grpc_tools.protoc", f"-I{PROTO.parent}", f"--python_out={out_dir}",
                          f"--grpc_python_out={out_dir}", str(PROTO)])
    if status != 0:
        raise RuntimeError(f"protoc failed on {PROTO} with status {status}")
    sys.path.insert(0, str(out_dir))
    try:
        return importlib.import_module("api_pb2"), importlib.import_module("api_pb2_grpc")
    finally:
        sys.path.remove(str(out_dir))
