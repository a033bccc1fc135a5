"""The model repository: ``REPO/NAME/VERSION/`` package folders, installed atomically.

Layout (Triton / TF Serving style)::

    REPO/
      NAME/
        VERSION/            one verified package (see serving.package); never modified once installed
        serving_state.json  {"active": "2", "history": ["1"]}: what to serve after a restart
      .staging/<id>/        pushes being received; renamed into NAME/VERSION only once verified

Versions sort numerically when they are all digits ("2" < "10"), else by string. A push is written
under ``.staging`` on the same file system and moved with one ``rename``, so a reader never sees a
half-written version; a failed push removes its staging folder.

Example:
    >>> import tempfile
    >>> repo = ModelRepository(tempfile.mkdtemp())
    >>> repo.models(), repo.next_version("din")
    ([], '1')
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from serving.configs import NAME_PATTERN, check_name
from serving.errors import AlreadyExistsError, NotFoundError
from serving.package import Manifest, verify_files

__all__ = ["ModelRepository", "version_key"]

logger = logging.getLogger(__name__)

STATE_FILE = "serving_state.json"
STAGING = ".staging"


def version_key(version: str) -> tuple[int, int, str]:
    """Sort key: numeric versions first in numeric order, then the rest by string."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


class ModelRepository:
    """One repository folder.

    Args:
        root: the repository folder (created if missing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- queries --------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Names of the models with at least one version."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME_PATTERN.match(p.name) and self.versions(p.name))

    def versions(self, name: str) -> list[str]:
        """Installed versions of ``name``, oldest first (empty when the model is unknown)."""
        d = self.root / name
        if not NAME_PATTERN.match(name) or not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if p.is_dir() and NAME_PATTERN.match(p.name)), key=version_key)

    def latest(self, name: str) -> str:
        """The highest version of ``name``.

        Raises:
            NotFoundError: no such model.
        """
        vs = self.versions(name)
        if not vs:
            raise NotFoundError(f"model {name!r} is not in the repository {self.root}; models: {self.models()}")
        return vs[-1]

    def path(self, name: str, version: str) -> Path:
        """The folder of one installed version.

        Raises:
            NotFoundError: unknown model or version.
        """
        if version not in self.versions(name):
            known = self.versions(name)
            what = f"versions: {known}" if known else f"models: {self.models()}"
            raise NotFoundError(f"model {name!r} version {version!r} is not in the repository; {what}")
        return self.root / name / version

    def next_version(self, name: str) -> str:
        """One more than the highest numeric version (``"1"`` for a new model)."""
        nums = [int(v) for v in self.versions(name) if v.isdigit()]
        return str(max(nums, default=0) + 1)

    # ---- installing ------------------------------------------------------------------------
    def staging_dir(self) -> Path:
        """A fresh, empty folder under ``.staging`` (same file system as the models)."""
        d = self.root / STAGING / uuid.uuid4().hex
        d.mkdir(parents=True)
        return d

    def install(self, staged: str | Path, *, name: str, version: str) -> tuple[Path, Manifest]:
        """Verifies a staged package and renames it into ``NAME/VERSION``.

        Args:
            staged: a folder from :meth:`staging_dir` holding the package files.
            name: the model name the package must declare.
            version: the version it must declare.

        Returns:
            The installed folder and its manifest.

        Raises:
            AlreadyExistsError: the version is already installed.
            PackageError: the package fails verification (the file is named); nothing is installed.
        """
        check_name("name", name)
        check_name("version", version)
        manifest = verify_files(staged, expect_name=name, expect_version=version)
        dest = self.root / name / version
        if dest.exists():
            raise AlreadyExistsError(f"model {name!r} version {version!r} is already installed; push a new version")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged, dest)  # atomic: readers see the whole version or none of it
        logger.info("installed %s/%s (%d files)", name, version, len(manifest.files))
        return dest, manifest

    def discard(self, staged: str | Path) -> None:
        """Removes a staging folder (after a failed push)."""
        shutil.rmtree(staged, ignore_errors=True)

    # ---- serving state ---------------------------------------------------------------------
    def read_state(self, name: str) -> dict[str, Any]:
        """``{"active": version | None, "history": [...]}`` saved by :meth:`write_state`; empty if none."""
        path = self.root / name / STATE_FILE
        try:
            d = json.loads(path.read_text())
            return {"active": d.get("active"), "history": [str(v) for v in d.get("history", [])]}
        except FileNotFoundError:
            return {"active": None, "history": []}
        except (ValueError, TypeError, AttributeError) as e:
            logger.warning("%s is unreadable (%s); serving the latest version", path, e)
            return {"active": None, "history": []}

    def write_state(self, name: str, *, active: str, history: list[str]) -> None:
        """Atomically records what ``name`` serves (write a temp file, then rename)."""
        path = self.root / name / STATE_FILE
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps({"active": active, "history": history}) + "\n")
        tmp.replace(path)
