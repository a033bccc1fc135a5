"""``seedrec abtest run``: a simulated A/B test against a running scoring server.

::

    seedrec abtest run --config configs/abtest/demo.yaml --out runs/abtest \\
        [--server HOST:PORT] [--world DIR] [--token T] [--redis URL] [--no-configure] [--no-oracle]

The config is a YAML mapping of :class:`abtest.configs.ABTestConfig` fields (``arms``, ``salt``,
``users``, ``days``, ...); ``--server`` and ``--world`` override its ``server`` and ``world_dir``.
``--token`` defaults to ``$SEEDREC_ADMIN_TOKEN`` and ``--redis`` (the online feature store the
server reads, where the run writes its events) to ``$REDIS_URL``. Writes ``report.md``,
``report.json``, plots, per-user tables and the logged impressions/events under ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seedrec.errors import ConfigError

__all__ = ["run_main", "load_config"]

logger = logging.getLogger(__name__)


def load_config(path: str | Path, *, overrides: dict[str, Any] | None = None) -> Any:
    """Reads an :class:`~abtest.configs.ABTestConfig` from a YAML file (+ field overrides).

    Raises:
        ConfigError: the file is unreadable, not a mapping, or a field is invalid.
    """
    import yaml

    from abtest.configs import ABTestConfig

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the A/B test config ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: an A/B test config is a YAML mapping of ABTestConfig fields, got {type(raw).__name__}")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return ABTestConfig.from_dict(raw)


def run_main(argv: Sequence[str] | None = None) -> int:
    """``seedrec abtest run --config FILE --out DIR [...]``; returns 0 when the run had no failed request, else 1."""
    ap = argparse.ArgumentParser(prog="seedrec abtest run", description="Run a simulated A/B test against a scoring server.")
    ap.add_argument("--config", required=True, help="YAML file of ABTestConfig fields")
    ap.add_argument("--out", required=True, help="output folder (report.md, report.json, plots, tables, logs)")
    ap.add_argument("--server", default=None, help="scoring server HOST:PORT (overrides `server`)")
    ap.add_argument("--world", default=None, help="folder with world.json (overrides `world_dir`)")
    ap.add_argument("--token", default=None, help="admin token (default: $SEEDREC_ADMIN_TOKEN)")
    ap.add_argument("--redis", default=None, help="online feature store redis:// URL (default: $REDIS_URL)")
    ap.add_argument("--namespace", default="seedrec", help="online store key prefix")
    ap.add_argument("--no-configure", action="store_true",
                    help="do not set the experiment; use the server's running one (its arm names must match)")
    ap.add_argument("--keep-experiment", action="store_true", help="leave the experiment running after the test")
    ap.add_argument("--no-oracle", action="store_true", help="skip the true lift (saves K-1 Score calls per request)")
    ap.add_argument("--chunk-size", type=int, default=256, help="requests between two writes of events")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.chunk_size < 1:
        raise ConfigError(f"`--chunk-size` = {args.chunk_size}; must be ≥ 1, e.g. 256")
    from abtest.harness import run_abtest

    config = load_config(args.config, overrides={"server": args.server, "world_dir": args.world})
    run = run_abtest(
        config, args.out,
        redis_url=args.redis or os.environ.get("REDIS_URL") or None,
        namespace=args.namespace,
        admin_token=args.token or os.environ.get("SEEDREC_ADMIN_TOKEN") or None,
        configure_server=not args.no_configure,
        stop_after=not args.keep_experiment,
        oracle=not args.no_oracle,
        chunk_size=args.chunk_size,
        progress=not args.no_progress,
        plots=not args.no_plots,
    )
    failed = int(sum(run.stats.failed.values()))
    logger.info("report: %s", run.files.markdown)
    if failed:
        logger.error("%d of %d Score requests failed: %s", failed, run.stats.requests, dict(run.stats.failed))
    return 0 if failed == 0 else 1
