"""Logging set-up shared by every entry point."""

from __future__ import annotations

import logging
import os

__all__ = ["setup_logging"]


def _drop_library_chatter(record: logging.LogRecord) -> bool:
    # fbgemm_gpu logs one INFO line per shared library it loads, on the root logger.
    # fbgemm's table-batched embeddings log their optimizer arguments on the root logger too.
    msg = str(record.msg)
    return not (record.name == "root" and (msg.startswith("Successfully loaded") or msg.startswith("[TBE=")))


def setup_logging(level: str | None = None) -> None:
    """Configures the root logger once: ``LEVEL name: message`` on stderr.

    Args:
        level: a logging level name; defaults to ``$SEEDREC_LOG_LEVEL`` or ``INFO``.
    """
    level = (level or os.environ.get("SEEDREC_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_library_chatter)
    for noisy in ("torch.distributed", "torchrec", "fbgemm_gpu", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
