"""``seedrec memory serve`` and ``seedrec memory load``.

Examples::

    # a server on an embedded Redis (no REDIS_URL): admin token from --token or $SEEDREC_MEMORY_TOKEN
    seedrec memory serve --port 50061 --token s3cret
    # a server on a real Redis, with AUTH and TLS taken from the URL; or a Redis Cluster
    seedrec memory serve --redis rediss://:password@redis.internal:6380/0 --port 50061
    seedrec memory serve --redis redis://10.0.0.5:7000 --cluster --port 50061
    # load a model package's memory.safetensors as a new version and commit it
    seedrec memory load --package runs/export/lmn/3 --server 127.0.0.1:50061 --token s3cret
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from pathlib import Path

import numpy as np

from memory_service.configs import MemoryServiceConfig
from seedrec.errors import PackageError

__all__ = ["serve_main", "load_main", "read_memory_package"]

logger = logging.getLogger(__name__)

TOKEN_ENV = "SEEDREC_MEMORY_TOKEN"
MEMORY_FILE = "memory.safetensors"
TENSOR_NAME = "values"


def serve_main(argv: list[str]) -> int:
    """``seedrec memory serve [--redis URL] [--cluster] [--port P] [--token T] ...``."""
    p = argparse.ArgumentParser(prog="seedrec memory serve", description="Run the LMN memory service (gRPC over Redis).")
    p.add_argument("--redis", default=None, help="Redis URL (redis://, rediss://); default $REDIS_URL, else an embedded redis-server")
    p.add_argument("--cluster", action="store_true", help="the Redis URL names a node of a Redis Cluster")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=50061)
    p.add_argument("--token", default=None, help=f"admin token (default ${TOKEN_ENV}); without one admin calls are refused")
    p.add_argument("--name", default="lmn", help="default memory block name")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--max-batch-slots", type=int, default=65_536)
    p.add_argument("--keep-versions", type=int, default=0, help="auto-delete old versions beyond this many (0: never)")
    p.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on SIGTERM")
    args = p.parse_args(argv)
    from memory_service.server import serve
    from seedrec.redis_server import redis_url_or_embedded

    if args.cluster and not (args.redis or os.environ.get("REDIS_URL")):
        from seedrec.errors import ConfigError

        raise ConfigError("--cluster needs --redis URL (or REDIS_URL) naming a cluster node; the embedded Redis is standalone")
    with redis_url_or_embedded(args.redis) as url:
        cfg = MemoryServiceConfig(
            redis_url=url, cluster=args.cluster, name=args.name, host=args.host, port=args.port,
            token=args.token or os.environ.get(TOKEN_ENV) or None, metrics_port=args.metrics_port,
            workers=args.workers, max_batch_slots=args.max_batch_slots, keep_versions=args.keep_versions,
            grace_s=args.grace,
        )
        if cfg.token is None:
            logger.warning("no admin token (--token or $%s): loading and deltas are refused", TOKEN_ENV)
        asyncio.run(serve(cfg))
    return 0


def read_memory_package(package: Path) -> tuple[np.ndarray, str, str]:
    """Reads ``PACKAGE/memory.safetensors``: ``(values (M, D) float32, version, source)``.

    The version defaults to the manifest's ``version`` (else the folder name); when the manifest
    lists a sha256 for the file, it is checked.

    Raises:
        PackageError: the file is missing, corrupt, or not one float32 ``values`` tensor [n, d].
    """
    path = package / MEMORY_FILE
    if not path.is_file():
        raise PackageError(f"{path}: no {MEMORY_FILE} in the package (only LMN packages carry a memory block)")
    # The package format (and its checksums) belongs to serving.package: one reader, not two.
    from serving.package import MANIFEST_FILE, read_manifest, sha256_file

    name, version = package.resolve().parent.name, package.resolve().name
    if (package / MANIFEST_FILE).is_file():
        manifest = read_manifest(package)
        name, version = manifest.name, manifest.version
        expected = manifest.files.get(MEMORY_FILE)
        if expected is None:
            raise PackageError(f"{package / MANIFEST_FILE}: lists no {MEMORY_FILE}")
        if sha256_file(path) != expected.lower():
            raise PackageError(f"{path}: sha256 {sha256_file(path)} does not match the manifest ({expected})")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise PackageError(f"{path}: cannot read safetensors ({e})") from None
    if TENSOR_NAME not in tensors:
        raise PackageError(f"{path}: expected one tensor named {TENSOR_NAME!r}, found {sorted(tensors)}")
    values = tensors[TENSOR_NAME]
    if values.ndim != 2 or values.dtype != np.float32:
        raise PackageError(f"{path}: {TENSOR_NAME!r} must be a float32 [n, d] tensor, got {values.dtype} {list(values.shape)}")
    return values, version, f"{name}/{version}"


def load_main(argv: list[str]) -> int:
    """``seedrec memory load --package PKG_DIR --server ADDR [--version V] [--token T]``."""
    p = argparse.ArgumentParser(prog="seedrec memory load", description="Load a package's memory block as a new version and commit it.")
    p.add_argument("--package", required=True, help="model package folder NAME/VERSION/ holding memory.safetensors")
    p.add_argument("--server", required=True, help="memory server address host:port")
    p.add_argument("--version", default=None, help="version id (default: the package's version)")
    p.add_argument("--token", default=None, help=f"admin token (default ${TOKEN_ENV})")
    p.add_argument("--name", default="", help="memory block name (default: the server's)")
    args = p.parse_args(argv)
    from memory_service.client import MemoryClient

    values, version, source = read_memory_package(Path(args.package))
    version = args.version or version
    t0 = time.perf_counter()
    with MemoryClient(args.server, token=args.token or os.environ.get(TOKEN_ENV), name=args.name, cache_rows=0) as client:
        info = client.load_block(values, version=version, source=source)
    logger.info(
        "memory %s: version %s (%d x %d, sha256 %s) committed in %.1fs",
        info.name, info.version, info.n, info.d, info.sha256[:12], time.perf_counter() - t0,
    )
    return 0
