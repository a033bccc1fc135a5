"""Generates the Python gRPC stubs from ``protos/seedrec/v1/*.proto`` (run by ``make setup``).

The stubs are generated, not committed; ``tests/unit/seedrec/test_protogen.py`` checks that they
are current with the sources.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

__all__ = ["generate", "proto_sources"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent


def proto_sources() -> list[Path]:
    return sorted((ROOT / "protos" / "seedrec" / "v1").glob("*.proto"))


def generate() -> list[Path]:
    """Runs grpcio-tools' protoc over every source; returns the sources compiled."""
    import grpc_tools
    from grpc_tools import protoc

    sources = proto_sources()
    if not sources:
        return []
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    # Include root = repo root, so generated imports read `from protos.seedrec.v1 import x_pb2`
    # and never collide with the `seedrec` Python package (the proto package is `seedrec.v1`).
    args = ["grpc_tools.protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={ROOT}",
            f"--grpc_python_out={ROOT}", f"--pyi_out={ROOT}", *map(str, sources)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {[s.name for s in sources]}")
    return sources


if __name__ == "__main__":
    done = generate()
    print(f"generated stubs for {len(done)} proto file(s)", file=sys.stderr)
