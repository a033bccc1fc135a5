"""The package format: manifest, checksums and the refusal of anything unlisted, altered or not data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from seedrec.errors import PackageError
from serving.package import MANIFEST_FILE, MEMORY_FILE, MODEL_FILE, Manifest, read_manifest, verify_files


@pytest.fixture()
def pkg(toy_package: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(toy_package, tmp_path / "pkg"))


def test_manifest_lists_every_file_with_its_sha256(pkg: Path) -> None:
    m = verify_files(pkg, expect_name="toy", expect_version="1")
    assert set(m.files) == {"model.safetensors", "feature_spec.json", *(f"vocab/{t}.json" for t in
                            ("user", "item", "category", "device", "hour", "domain", "action"))}
    assert m.kind == "toy" and m.memory is None and m.metrics == {"test/auc": 0.5}
    assert Manifest.from_json(m.to_json()) == m


def test_memory_package_splits_the_value_table(memory_package: Path) -> None:
    m = read_manifest(memory_package)
    assert m.memory is not None and m.memory.rows == 64 and m.memory.dim == 8
    assert m.memory.param not in load_file(str(memory_package / MODEL_FILE))  # only in memory.safetensors
    values = load_file(str(memory_package / MEMORY_FILE))["values"]
    assert tuple(values.shape) == (64, 8)


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda p: (p / "vocab" / "item.json").write_text("[]"), r"vocab/item.json: sha256 mismatch"),
        (lambda p: (p / "vocab" / "user.json").unlink(), r"vocab/user.json: missing"),
        (lambda p: (p / "extra.json").write_text("{}"), r"extra.json: not listed in the manifest"),
        (lambda p: (p / MANIFEST_FILE).unlink(), r"manifest.json: missing"),
        (lambda p: (p / MANIFEST_FILE).write_text("{"), r"not a valid manifest"),
    ],
)
def test_a_broken_package_is_refused_naming_the_file(pkg: Path, break_it: object, message: str) -> None:
    break_it(pkg)  # type: ignore[operator]  # a lambda from the table
    with pytest.raises(PackageError, match=message):
        verify_files(pkg)


def test_pickle_files_are_refused_even_when_listed(pkg: Path) -> None:
    (pkg / "model.pt").write_bytes(b"\x80\x04")
    d = json.loads((pkg / MANIFEST_FILE).read_text())
    d["files"]["model.pt"] = "0" * 64
    (pkg / MANIFEST_FILE).write_text(json.dumps(d))
    with pytest.raises(PackageError, match=r"model.pt: only \['.json', '.safetensors'\] files"):
        verify_files(pkg)


def test_name_and_version_must_match(pkg: Path) -> None:
    with pytest.raises(PackageError, match="version '1', expected '2'"):
        verify_files(pkg, expect_version="2")
