"""``seedrec export``: a training run's checkpoint → a model package in a repository.

::

    seedrec export --checkpoint runs/lmn --out repo [--name lmn] [--version 3] [--samples /tmp/s]

1. Read ``RUN/config.json`` (the model config, the samples folder) and ``RUN/metrics.json``.
2. Build the model **unsharded on CPU** with ``recsys.models.registry.build_model`` and load the
   DCP checkpoint into its plain tensors (DCP reshards the saved ShardedTensors at load time).
   Checkpoint keys are matched to the model's by prefix: the Trainer stores ``model.<key>``; a
   checkpoint of a wrapped model may say ``model._dmp_wrapped_module.<key>`` or ``module.<key>``
   (:func:`load_checkpoint_weights`).
3. Write the package (see :mod:`serving.package`) into ``REPO/.staging/…`` and rename it into
   ``REPO/NAME/VERSION`` once its manifest is written.

LMN memory (decision): ``model.safetensors`` does **not** hold the ``lmn_memory`` value table; it
is written once, to ``memory.safetensors`` (tensor ``values``, (n, d_v) float32), which the memory
service loads (``seedrec memory load``) and which the scoring server also reads as its offline
fallback. Keeping it in both files would double a million-slot package for nothing.
``manifest.memory.sha256`` is the memory service's block checksum (sha256 of the little-endian
float32 rows), so the server finds the memory-service version holding exactly this table.

Everything written is JSON or safetensors: no pickle anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from feature_pipeline.spec import FeatureSpec
from seedrec.errors import ConfigError, DataError, PackageError
from serving.configs import check_name
from serving.package import MEMORY_FILE, MEMORY_TENSOR, MODEL_FILE, SPEC_FILE, MemoryBlock, write_manifest
from serving.repository import ModelRepository

__all__ = ["write_package", "export_checkpoint", "load_checkpoint_weights", "block_sha256", "export_main"]

logger = logging.getLogger(__name__)

_KINDS = ("din", "ads", "lmn")


def block_sha256(values: torch.Tensor) -> str:
    """sha256 of an (n, d) table as little-endian float32 C-order bytes (the memory service's checksum)."""
    from memory_service.layout import block_sha256 as _sha

    return _sha(values.detach().to(torch.float32).contiguous().numpy())


def write_package(
    out: str | Path,
    *,
    name: str,
    version: str,
    kind: str,
    model_config: Mapping[str, Any],
    model: nn.Module,
    samples: str | Path,
    metrics: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
) -> Path:
    """Writes one package folder from a model in memory.

    Args:
        out: the package folder (must not exist yet).
        name: the model name.
        version: the version.
        kind: the architecture kind (``din``, ``ads``, ``lmn``; ``toy`` in tests).
        model_config: the model config as a JSON-able mapping.
        model: the unsharded model holding the weights.
        samples: the samples folder holding ``feature_spec.json`` and ``vocab/``.
        metrics: the run's metrics.
        source: provenance (run folder, checkpoint, step).

    Returns:
        ``out``.
    """
    from serving.scorer import _memory_param  # the same rule the loader uses to find the table

    check_name("name", name)
    check_name("version", version)
    out = Path(out)
    if out.exists():
        raise PackageError(f"{out}: already exists; pick a new version")
    samples = Path(samples)
    spec = FeatureSpec.load(samples)
    out.mkdir(parents=True)
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}  # own storage each
    memory: MemoryBlock | None = None
    param = _memory_param(model)
    if param is not None:
        values = state.pop(param).to(torch.float32)
        save_file({MEMORY_TENSOR: values}, str(out / MEMORY_FILE), metadata={"table": "lmn_memory", "param": param})
        memory = MemoryBlock(table="lmn_memory", param=param, rows=int(values.shape[0]), dim=int(values.shape[1]),
                             sha256=block_sha256(values))
    save_file(state, str(out / MODEL_FILE), metadata={"format": "pt", "kind": kind})
    shutil.copyfile(samples / SPEC_FILE, out / SPEC_FILE)
    for t in spec.tables:
        if t.vocab is not None:
            src = samples / t.vocab
            if not src.is_file():
                raise DataError(f"{src}: vocabulary of table `{t.name}` is missing from the samples folder")
            (out / t.vocab).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / t.vocab)
    write_manifest(
        out,
        name=name,
        version=version,
        kind=kind,
        model_config=_jsonable(dict(model_config)),
        feature_spec=json.loads(spec.to_json()),
        metrics=_jsonable(dict(metrics or {})),
        memory=memory,
        source=_jsonable(dict(source or {})),
    )
    return out


def _jsonable(d: Any) -> Any:
    return json.loads(json.dumps(d, default=lambda o: o.value if hasattr(o, "value") else str(o)))


# ==== from a training run ======================================================================
def _find_model_config(payload: Any) -> dict[str, Any] | None:
    """The first mapping with ``kind`` in din/ads/lmn, searched breadth-first through ``config.json``."""
    queue = [payload]
    while queue:
        node = queue.pop(0)
        if isinstance(node, Mapping):
            if node.get("kind") in _KINDS:
                return dict(node)
            queue.extend(node.values())
    return None


def _find_samples(payload: Mapping[str, Any], run: Path) -> Path | None:
    """The samples folder named in ``config.json`` (a string value whose folder has a feature spec)."""
    queue: list[Any] = [payload]
    while queue:
        node = queue.pop(0)
        if isinstance(node, Mapping):
            queue.extend(node.values())
        elif isinstance(node, str) and len(node) < 4096:
            for cand in (Path(node), run / node):
                if (cand / SPEC_FILE).is_file():
                    return cand
    return None


#: Prefixes a model key may carry in a DCP checkpoint, tried in order (the Trainer's first).
_PREFIXES: tuple[str, ...] = ("model.", "model._dmp_wrapped_module.", "model.module.", "_dmp_wrapped_module.", "module.", "")


def load_checkpoint_weights(checkpoint: str | Path, model: nn.Module) -> None:
    """Loads the model tensors of a DCP checkpoint into an unsharded model (in place).

    Each model key is looked up under the prefixes of :data:`_PREFIXES`; DCP then reads (and
    reshards) exactly those tensors into the model's own plain tensors. Optimizer state and
    anything else in the checkpoint is ignored.

    Raises:
        DataError: the folder is not a DCP checkpoint, or it lacks a tensor the model needs.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    checkpoint = Path(checkpoint)
    try:
        saved = FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
    except (OSError, RuntimeError, ValueError) as e:
        raise DataError(f"{checkpoint}: not a torch.distributed.checkpoint folder ({e})") from None
    own = model.state_dict()
    mapping: dict[str, str] = {}
    for key in own:
        found = next((p + key for p in _PREFIXES if p + key in saved), None)
        if found is not None:
            mapping[key] = found
    missing = [k for k in own if k not in mapping]
    if missing:
        raise DataError(f"{checkpoint}: no tensor for model keys {missing[:5]} ({len(missing)} missing); "
                        f"checkpoint keys look like {sorted(saved)[:3]} — is it a checkpoint of this model config?")
    state = {mapping[k]: v for k, v in own.items()}
    dcp.load(state, checkpoint_id=str(checkpoint))  # fills the model's tensors in place (no process group needed)
    model.load_state_dict({k: state[mapping[k]] for k in own}, strict=True)


def _checkpoint_dir(run: Path) -> Path:
    if (run / ".metadata").is_file():
        return run
    from recsys.train.checkpoint import CheckpointManager

    latest = CheckpointManager(run).latest()
    if latest is None:
        raise DataError(f"{run}: no complete checkpoint under {run / 'checkpoints'}; train with save_final=True first")
    return latest


def export_checkpoint(
    run: str | Path,
    repository: str | Path,
    *,
    name: str | None = None,
    version: str | None = None,
    samples: str | Path | None = None,
) -> Path:
    """Exports the latest checkpoint of a run (or one checkpoint folder) as ``REPO/NAME/VERSION``.

    Args:
        run: the run folder (``config.json``, ``metrics.json``, ``checkpoints/``) or one
            ``checkpoints/step_N`` folder inside it.
        repository: the repository folder (created if missing).
        name: the model name; default: the model kind.
        version: the version; default: one more than the highest numeric version installed.
        samples: the samples folder (``feature_spec.json``, ``vocab/``); default: the one named in
            ``config.json``.

    Returns:
        The package folder.

    Raises:
        DataError: no config, no checkpoint, or no samples folder.
        ConfigError: the config names no din/ads/lmn model.
    """
    from recsys.configs import model_config_from_dict
    from recsys.models.registry import build_model

    run = Path(run)
    ckpt = _checkpoint_dir(run)
    run_dir = run if (run / "config.json").is_file() else ckpt.parent.parent
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise DataError(f"{cfg_path}: missing; export needs the run's config.json (written by the Trainer)")
    payload = json.loads(cfg_path.read_text())
    model_cfg = _find_model_config(payload)
    if model_cfg is None:
        raise ConfigError(f"{cfg_path}: names no model config with `kind` in {list(_KINDS)}")
    samples_dir = Path(samples) if samples is not None else _find_samples(payload, run_dir)
    if samples_dir is None or not (samples_dir / SPEC_FILE).is_file():
        raise DataError(f"{cfg_path}: cannot find the samples folder (with {SPEC_FILE}); pass --samples DIR")
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    spec = FeatureSpec.load(samples_dir)
    cfg = model_config_from_dict(model_cfg)
    model = build_model(cfg, spec, device="cpu")
    load_checkpoint_weights(ckpt, model)
    model.eval()
    state_file = ckpt / "trainer_state.json"
    step = json.loads(state_file.read_text()).get("step") if state_file.is_file() else None

    repo = ModelRepository(repository)
    name = name or cfg.kind
    check_name("name", name)
    version = version or repo.next_version(name)
    check_name("version", version)
    if (repo.root / name / version).exists():
        raise PackageError(f"{repo.root / name / version}: already exists; pick a new --version")
    staged = repo.staging_dir()
    try:
        write_package(
            staged / "pkg",
            name=name,
            version=version,
            kind=cfg.kind,
            model_config=dataclasses.asdict(cfg),
            model=model,
            samples=samples_dir,
            metrics=_scalars(metrics),
            source={"run": str(run_dir.resolve()), "checkpoint": ckpt.name, "step": step},
        )
        dest, _ = repo.install(staged / "pkg", name=name, version=version)
    finally:
        repo.discard(staged)
    logger.info("exported %s (step %s) to %s", ckpt, step, dest)
    return dest


def _scalars(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics worth carrying: the final split metrics (``metrics``) flattened, plus the run's
    scalar facts (steps, samples, times); no eval history, no config (the manifest has its own)."""
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if k == "metrics" and isinstance(v, Mapping):
            out.update({str(m): x for m, x in v.items() if isinstance(x, (int, float))})
        elif v is None or isinstance(v, (int, float, str)):
            out[f"run/{k}"] = v
    return out


def export_main(argv: list[str]) -> int:
    """``seedrec export --checkpoint RUN --out REPO [--name N] [--version V] [--samples DIR]``."""
    ap = argparse.ArgumentParser(prog="seedrec export", description="Checkpoint of a run -> model package REPO/NAME/VERSION.")
    ap.add_argument("--checkpoint", required=True, help="the run folder (or one checkpoints/step_N folder)")
    ap.add_argument("--out", required=True, help="the model repository")
    ap.add_argument("--name", default=None, help="model name (default: the model kind)")
    ap.add_argument("--version", default=None, help="version (default: next integer)")
    ap.add_argument("--samples", default=None, help="samples folder (default: from the run's config.json)")
    args = ap.parse_args(argv)
    path = export_checkpoint(args.checkpoint, args.out, name=args.name, version=args.version, samples=args.samples)
    print(json.dumps({"package": str(path)}))
    return 0
