"""``seedrec serve | push | score`` (``seedrec export`` lives in :mod:`serving.export`).

::

    seedrec serve --repository REPO --port 50051 [--memory HOST:PORT] [--redis URL] [--token T]
    seedrec push  --package REPO/lmn/3 --server HOST:PORT --activate [--token T]
    seedrec score --server HOST:PORT --user 7 --domain feed --items 1,2,3 [--model lmn]

``--token`` defaults to ``$SEEDREC_ADMIN_TOKEN``; ``--redis`` to ``$REDIS_URL`` (with neither, the
server has no online store and requests without a history are scored with none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os

from seedrec.errors import SeedrecError

__all__ = ["serve_main", "push_main", "score_main"]

logger = logging.getLogger(__name__)


def serve_main(argv: list[str]) -> int:
    """Runs the scoring server until SIGTERM / SIGINT."""
    from serving.configs import MemoryConfig, MemoryFallback, ScorerConfig, ServerConfig, StoreConfig
    from serving.server import serve

    ap = argparse.ArgumentParser(prog="seedrec serve", description="Run the gRPC scoring server.")
    ap.add_argument("--repository", required=True, help="model repository (REPO/NAME/VERSION/)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for every interface)")
    ap.add_argument("--port", type=int, default=50051)
    ap.add_argument("--memory", default=None, help="memory service HOST:PORT (LMN); default: the packaged table")
    ap.add_argument("--memory-block", default="", help="memory block name on the memory service")
    ap.add_argument("--memory-token", default=None)
    ap.add_argument("--memory-fallback", choices=[f.value for f in MemoryFallback], default="local")
    ap.add_argument("--memory-deadline-ms", type=float, default=50.0)
    ap.add_argument("--memory-cache-rows", type=int, default=100_000,
                    help="rows cached by the memory client (0: every read is a ReadWeighted call)")
    ap.add_argument("--redis", default=None, help="online feature store redis:// URL (default: $REDIS_URL)")
    ap.add_argument("--namespace", default="seedrec", help="online store key prefix")
    ap.add_argument("--store-deadline-ms", type=float, default=20.0,
                    help="timeout of one online-store read; past it the request is scored with no history (flagged)")
    ap.add_argument("--token", default=None, help="admin token (default: $SEEDREC_ADMIN_TOKEN; none = open admin)")
    ap.add_argument("--default-model", default=None)
    ap.add_argument("--models", default=None, help="comma-separated models to load at start (default: all)")
    ap.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port (0 = a free one)")
    ap.add_argument("--max-candidates", type=int, default=100_000)
    ap.add_argument("--score-threads", type=int, default=2)
    ap.add_argument("--grace-s", type=float, default=5.0)
    args = ap.parse_args(argv)
    memory = None
    if args.memory:
        memory = MemoryConfig(address=args.memory, block=args.memory_block, token=args.memory_token,
                              fallback=MemoryFallback(args.memory_fallback), deadline_ms=args.memory_deadline_ms,
                              cache_rows=args.memory_cache_rows)
    cfg = ServerConfig(
        repository=args.repository, host=args.host, port=args.port,
        admin_token=args.token or os.environ.get("SEEDREC_ADMIN_TOKEN") or None,
        default_model=args.default_model,
        models=tuple(m for m in args.models.split(",") if m) if args.models else None,
        metrics_port=args.metrics_port, score_threads=args.score_threads, grace_s=args.grace_s,
        scorer=ScorerConfig(max_candidates=args.max_candidates), memory=memory,
        store=StoreConfig(redis_url=args.redis or os.environ.get("REDIS_URL") or None, namespace=args.namespace,
                          deadline_ms=args.store_deadline_ms),
    )
    if cfg.admin_token is None:
        logger.warning("no admin token: anyone who reaches port %s can push models (pass --token)", cfg.port)
    asyncio.run(serve(cfg))
    return 0


def push_main(argv: list[str]) -> int:
    """Streams a package to a server; prints the reply as JSON."""
    from serving.client import AdminClient, ServingRpcError
    from serving.package import verify_files

    ap = argparse.ArgumentParser(prog="seedrec push", description="Ship a model package to a scoring server.")
    ap.add_argument("--package", required=True, help="the package folder (REPO/NAME/VERSION)")
    ap.add_argument("--server", required=True, help="HOST:PORT")
    ap.add_argument("--activate", action="store_true", help="make it the active version once installed")
    ap.add_argument("--token", default=None, help="admin token (default: $SEEDREC_ADMIN_TOKEN)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--version", default=None)
    ap.add_argument("--no-check", action="store_true", help="skip the local checksum check (the server checks anyway)")
    args = ap.parse_args(argv)
    if not args.no_check:
        verify_files(args.package)  # fail fast here rather than after the upload
    with AdminClient(args.server, token=args.token or os.environ.get("SEEDREC_ADMIN_TOKEN")) as ac:
        try:
            reply = ac.push(args.package, name=args.name, version=args.version, activate=args.activate)
        except ServingRpcError as e:
            raise SeedrecError(str(e)) from None
    print(json.dumps({"name": reply.name, "version": reply.version, "bytes": reply.bytes, "activated": reply.activated}))
    return 0


def score_main(argv: list[str]) -> int:
    """Scores items for one user; prints the scores as JSON."""
    from serving.client import RankingClient, ServingRpcError

    ap = argparse.ArgumentParser(prog="seedrec score", description="Score candidates from the shell.")
    ap.add_argument("--server", required=True, help="HOST:PORT")
    ap.add_argument("--user", type=int, required=True)
    ap.add_argument("--domain", required=True, help="domain name or index")
    ap.add_argument("--items", required=True, help="comma-separated raw item ids")
    ap.add_argument("--model", default="")
    ap.add_argument("--version", default="")
    ap.add_argument("--feature", action="append", default=[], metavar="NAME=VALUE",
                    help="a user/context feature (repeatable); ints and floats are parsed")
    ap.add_argument("--timeout-s", type=float, default=5.0)
    args = ap.parse_args(argv)
    try:
        items = [int(x) for x in args.items.split(",") if x.strip()]
    except ValueError:
        raise SeedrecError(f"--items {args.items!r}: give comma-separated integer ids, e.g. 1,2,3") from None
    features = dict(_parse_feature(f) for f in args.feature)
    with RankingClient(args.server, timeout_s=args.timeout_s) as rc:
        try:
            result = rc.score(user_id=args.user, domain=args.domain, item_ids=items, model=args.model,
                              version=args.version, features=features)
        except ServingRpcError as e:
            raise SeedrecError(str(e)) from None
    out = result.to_dict()
    out["items"] = items
    print(json.dumps(out))
    return 0


def _parse_feature(text: str) -> tuple[str, int | float | str]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise SeedrecError(f"--feature {text!r}: write NAME=VALUE, e.g. device=ios")
    for cast in (int, float):
        try:
            return name, cast(raw)
        except ValueError:
            continue
    return name, raw
