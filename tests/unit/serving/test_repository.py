"""The repository: version order, atomic install, refusal of duplicates and corrupt packages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from seedrec.errors import PackageError
from serving.errors import AlreadyExistsError, NotFoundError
from serving.repository import ModelRepository, version_key


def test_versions_sort_numerically_then_by_name() -> None:
    assert sorted(["10", "2", "b", "1", "a"], key=version_key) == ["1", "2", "10", "a", "b"]


def test_install_renames_a_verified_package(toy_package: Path, tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    staged = repo.staging_dir()
    shutil.copytree(toy_package, staged, dirs_exist_ok=True)
    dest, manifest = repo.install(staged, name="toy", version="1")
    assert dest == repo.root / "toy" / "1" and not staged.exists() and manifest.name == "toy"
    assert repo.models() == ["toy"] and repo.latest("toy") == "1" and repo.next_version("toy") == "2"
    again = repo.staging_dir()
    shutil.copytree(toy_package, again, dirs_exist_ok=True)
    with pytest.raises(AlreadyExistsError):
        repo.install(again, name="toy", version="1")


def test_a_corrupt_package_is_never_installed(toy_package: Path, tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    staged = repo.staging_dir()
    shutil.copytree(toy_package, staged, dirs_exist_ok=True)
    (staged / "vocab" / "item.json").write_text("{}")
    with pytest.raises(PackageError, match="vocab/item.json: sha256 mismatch"):
        repo.install(staged, name="toy", version="1")
    assert repo.models() == [] and repo.versions("toy") == []
    with pytest.raises(NotFoundError):
        repo.path("toy", "1")
