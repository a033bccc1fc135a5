"""The model package: a folder of JSON and safetensors files, checked before anything loads it.

Layout of ``REPO/NAME/VERSION/``::

    manifest.json         name, version, architecture (kind + model config), feature spec, metrics,
                          memory block description (LMN), created, sha256 of every other file
    model.safetensors     the full unsharded state dict (LMN: without the memory value table)
    memory.safetensors    LMN only: tensor ``values`` (n, d_v), the ``lmn_memory`` table
    feature_spec.json     the feature spec of the training samples
    vocab/<table>.json    the vocabularies the spec names

No pickle anywhere: only ``.json`` and ``.safetensors`` files are allowed, and every file must be
listed in the manifest with its sha256 (an unlisted, missing or altered file refuses the package,
naming the file).

Example:
    >>> import tempfile, json
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "feature_spec.json").write_text("{}")
    >>> _ = (d / "model.safetensors").write_bytes(b"")
    >>> m = write_manifest(d, name="toy", version="1", kind="toy", model_config={}, feature_spec={})
    >>> sorted(m.files)
    ['feature_spec.json', 'model.safetensors']
    >>> _ = (d / "feature_spec.json").write_text("{ }")
    >>> verify_files(d)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    seedrec.errors.PackageError: ...feature_spec.json: sha256 mismatch (manifest ..., file ...)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seedrec.errors import PackageError

__all__ = [
    "FORMAT",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "MEMORY_FILE",
    "SPEC_FILE",
    "MEMORY_TENSOR",
    "ALLOWED_SUFFIXES",
    "MemoryBlock",
    "Manifest",
    "sha256_file",
    "package_files",
    "write_manifest",
    "read_manifest",
    "verify_files",
]

logger = logging.getLogger(__name__)

FORMAT = "seedrec.package/v1"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.safetensors"
MEMORY_FILE = "memory.safetensors"
SPEC_FILE = "feature_spec.json"
MEMORY_TENSOR = "values"
#: The only file kinds a package may hold: data, never code (no pickle, no TorchScript).
ALLOWED_SUFFIXES: tuple[str, ...] = (".json", ".safetensors")
_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class MemoryBlock:
    """The LMN memory block of a package (``memory.safetensors``).

    Attributes:
        table: the model's EmbeddingCollection table holding the values (``lmn_memory``).
        param: the model state-dict key of the value table (left out of ``model.safetensors``).
        rows: n, the number of slots.
        dim: d_v, the width of a value row.
        sha256: digest of ``memory.safetensors`` (also in ``files``); names the memory version.
    """

    table: str
    param: str
    rows: int
    dim: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """``manifest.json``: what a package is, where it came from, and the checksum of every file."""

    name: str
    version: str
    kind: str
    model_config: dict[str, Any]
    feature_spec: dict[str, Any]
    files: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)
    memory: MemoryBlock | None = None
    created: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, origin: str = MANIFEST_FILE) -> Manifest:
        """Parses a manifest.

        Raises:
            PackageError: not JSON, a field missing or of the wrong type, or an unknown format.
        """
        try:
            d = json.loads(text)
            if d.get("format") != FORMAT:
                raise PackageError(f"{origin}: format {d.get('format')!r}; this server reads {FORMAT!r}")
            mem = d.get("memory")
            m = cls(
                name=str(d["name"]),
                version=str(d["version"]),
                kind=str(d["kind"]),
                model_config=dict(d["model_config"]),
                feature_spec=dict(d["feature_spec"]),
                files={str(k): str(v) for k, v in dict(d["files"]).items()},
                metrics=dict(d.get("metrics") or {}),
                memory=MemoryBlock(**mem) if mem else None,
                created=str(d.get("created", "")),
                source=dict(d.get("source") or {}),
            )
        except PackageError:
            raise
        except (KeyError, TypeError, ValueError) as e:  # JSONDecodeError is a ValueError
            raise PackageError(f"{origin}: not a valid manifest ({type(e).__name__}: {e})") from None
        return m


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def package_files(folder: str | Path) -> list[str]:
    """Relative POSIX paths of every file under ``folder`` except the manifest, sorted."""
    root = Path(folder)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)


def write_manifest(
    folder: str | Path,
    *,
    name: str,
    version: str,
    kind: str,
    model_config: dict[str, Any],
    feature_spec: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    memory: MemoryBlock | None = None,
    source: dict[str, Any] | None = None,
) -> Manifest:
    """Checksums every file of ``folder`` and writes ``manifest.json`` beside them.

    Returns:
        The manifest written.

    Raises:
        PackageError: a file with a suffix outside :data:`ALLOWED_SUFFIXES`.
    """
    root = Path(folder)
    files = package_files(root)
    bad = [f for f in files if not f.endswith(ALLOWED_SUFFIXES)]
    if bad:
        raise PackageError(f"{root}: {bad} are not allowed in a package; only {list(ALLOWED_SUFFIXES)} files")
    m = Manifest(
        name=name,
        version=version,
        kind=kind,
        model_config=model_config,
        feature_spec=feature_spec,
        files={f: sha256_file(root / f) for f in files},
        metrics=dict(metrics or {}),
        memory=memory,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        source=dict(source or {}),
    )
    tmp = root / (MANIFEST_FILE + ".tmp")
    tmp.write_text(m.to_json())
    tmp.replace(root / MANIFEST_FILE)
    return m


def read_manifest(folder: str | Path) -> Manifest:
    """Reads ``folder/manifest.json``.

    Raises:
        PackageError: the manifest is missing or invalid.
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise PackageError(f"{path}: missing; a package needs a manifest.json (made by `seedrec export`)")
    return Manifest.from_json(path.read_text(), origin=str(path))


def verify_files(folder: str | Path, *, expect_name: str | None = None, expect_version: str | None = None) -> Manifest:
    """Checks a package's files against its manifest: the file set, suffixes and every sha256.

    Args:
        folder: the package folder.
        expect_name: if given, the manifest's name must equal it.
        expect_version: if given, the manifest's version must equal it.

    Returns:
        The manifest.

    Raises:
        PackageError: naming the first file that is missing, unlisted, not allowed or altered.
    """
    root = Path(folder)
    m = read_manifest(root)
    if expect_name is not None and m.name != expect_name:
        raise PackageError(f"{root / MANIFEST_FILE}: name {m.name!r}, expected {expect_name!r}")
    if expect_version is not None and m.version != expect_version:
        raise PackageError(f"{root / MANIFEST_FILE}: version {m.version!r}, expected {expect_version!r}")
    present = set(package_files(root))
    for rel in sorted(m.files):
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise PackageError(f"{root / MANIFEST_FILE}: file path {rel!r} leaves the package")
        if not rel.endswith(ALLOWED_SUFFIXES):
            raise PackageError(f"{root / rel}: only {list(ALLOWED_SUFFIXES)} files are allowed in a package")
        if rel not in present:
            raise PackageError(f"{root / rel}: missing (listed in the manifest)")
    extra = sorted(present - set(m.files))
    if extra:
        raise PackageError(f"{root / extra[0]}: not listed in the manifest; a package holds only checksummed files")
    for required in (MODEL_FILE, SPEC_FILE):
        if required not in m.files:
            raise PackageError(f"{root / required}: missing (every package has one)")
    if m.memory is not None and MEMORY_FILE not in m.files:
        raise PackageError(f"{root / MEMORY_FILE}: missing (the manifest describes a memory block)")
    for rel, digest in sorted(m.files.items()):
        got = sha256_file(root / rel)
        if got != digest:
            raise PackageError(f"{root / rel}: sha256 mismatch (manifest {digest[:12]}…, file {got[:12]}…)")
    return m
