"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP), atomic on disk, resumable exactly.

Layout of a run folder::

    RUN/checkpoints/
        step_00000100/
            .metadata                 DCP index of every tensor (written by the coordinator, rank 0)
            __0_0.distcp, __1_0.distcp ...   DCP data: each rank writes its own shards
            trainer_state.json        step, epoch, batch_in_epoch, samples, train time, world size, config
            rng/rank_00000.json ...   python / numpy / torch (and CUDA) RNG state of each rank
        step_00000200/ ...
        .tmp_step_00000300/           a save in progress (ignored; renamed when complete)

The DCP part holds one state dict::

    {"model": <model state dict: ShardedTensor for sharded tables, Tensor for the rest>,
     "optim": {"dense": {"<param>/<state>": Tensor},            # AdamW exp_avg, exp_avg_sq, step
               "fused": {"<param>/<state>": ShardedTensor}}}    # e.g. "<table>.momentum1" (rowwise Adagrad)

``trainer_state.json`` is written last, so a folder without it is incomplete; :class:`CheckpointManager`
writes into ``.tmp_step_*`` and renames it on rank 0 after a barrier, so a crash never leaves a
half-written ``step_*`` folder. :func:`save_checkpoint` / :func:`load_checkpoint` work on any folder
(non-atomically), which is what a Ray Train worker needs before ``ray.train.report(checkpoint=...)``.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from recsys.train.distributed import barrier, load_model_state_dict, model_state_dict
from seedrec.errors import DataError

__all__ = [
    "TrainProgress",
    "CheckpointManager",
    "save_checkpoint",
    "load_checkpoint",
    "load_model_weights",
    "read_trainer_state",
    "rng_state",
    "set_rng_state",
    "CHECKPOINTS_DIR",
    "TRAINER_STATE_FILE",
]

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"
_STEP_PREFIX = "step_"
_TMP_PREFIX = ".tmp_step_"


@dataclass
class TrainProgress:
    """Where training stands; with the model, optimizers and RNG it is all a resume needs.

    Attributes:
        step: optimizer steps done.
        epoch: the current epoch (0-based).
        batch_in_epoch: batches of ``epoch`` already consumed (resume skips them).
        samples: training samples seen, all ranks together.
        train_time_s: seconds spent in training steps, over all sessions of the run.

    Example:
        >>> TrainProgress(step=7, epoch=1, batch_in_epoch=2)
        TrainProgress(step=7, epoch=1, batch_in_epoch=2, samples=0, train_time_s=0.0)
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    samples: int = 0
    train_time_s: float = 0.0


# ---- RNG ----------------------------------------------------------------------------------
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


def rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch and CUDA RNG states as JSON-able values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out: dict[str, Any] = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": {
            "name": np_state[0],
            "keys": np_state[1].tolist(),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restores what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


# ---- optimizer state flattening -----------------------------------------------------------
def _flat_optimizer_state(opt: Any) -> dict[str, Any]:
    """``{"<param key>/<state name>": tensor}`` of a torchrec ``KeyedOptimizer``."""
    state = opt.state_dict()["state"]
    return {f"{key}/{name}": value for key, per_param in state.items() for name, value in per_param.items()}


def _checkpoint_keys(directory: Path) -> dict[str, Any]:
    """``{FQN: storage metadata}`` of a DCP folder."""
    return dict(dcp.FileSystemReader(str(directory)).read_metadata().state_dict_metadata)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


# ---- save / load on one folder ------------------------------------------------------------
def save_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizers: Mapping[str, Any],
    progress: TrainProgress,
    config: Mapping[str, Any] | None = None,
) -> None:
    """Writes a checkpoint into ``directory`` (collective: call on every rank with the same path).

    Not atomic by itself; :meth:`CheckpointManager.save` adds the temp folder and rename.

    Args:
        directory: the folder (created if missing; shared by all ranks).
        model: the trained model (DMP, DDP or plain).
        optimizers: ``{"dense": KeyedOptimizer, "fused": KeyedOptimizer}`` (``fused`` optional).
        progress: the training position.
        config: written into ``trainer_state.json`` (checkpoints carry their config).
    """
    directory = Path(directory)
    if _rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
    barrier()
    state = {
        "model": model_state_dict(model),
        "optim": {name: _flat_optimizer_state(opt) for name, opt in optimizers.items()},
    }
    dcp.save(state, checkpoint_id=str(directory))
    rng_dir = directory / "rng"
    rng_dir.mkdir(exist_ok=True)
    (rng_dir / f"rank_{_rank():05d}.json").write_text(json.dumps(rng_state()))
    barrier()
    if _rank() == 0:  # written last: its presence marks a complete checkpoint
        payload = {**asdict(progress), "world_size": _world(), "config": dict(config or {})}
        (directory / TRAINER_STATE_FILE).write_text(json.dumps(payload, indent=2, default=str))
    barrier()


def read_trainer_state(directory: str | Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint folder.

    Raises:
        DataError: the folder is not a complete checkpoint.
    """
    path = Path(directory) / TRAINER_STATE_FILE
    if not path.exists():
        raise DataError(f"{directory}: not a complete checkpoint (no {TRAINER_STATE_FILE})")
    return dict(json.loads(path.read_text()))


def _load_optimizer(name: str, opt: Any, flat: dict[str, Any]) -> None:
    """Copies a loaded ``flat`` optimizer state into ``opt``."""
    if name == "fused":  # FBGEMM keeps its state allocated (possibly empty, as for SGD): copy into it
        sd = opt.state_dict()
        for key, value in flat.items():
            pkey, sname = key.rsplit("/", 1)
            sd["state"][pkey][sname] = value
        opt.load_state_dict(sd)
        return
    nested: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        pkey, sname = key.rsplit("/", 1)
        nested.setdefault(pkey, {})[sname] = value
    params = opt.params
    for pkey, states in nested.items():
        opt.state[params[pkey]] = states


def load_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizers: Mapping[str, Any] | None = None,
    restore_rng: bool = True,
) -> TrainProgress:
    """Restores a checkpoint written by :func:`save_checkpoint` (collective: call on every rank).

    Args:
        directory: the checkpoint folder.
        model: a model wrapped the same way as at save time (shards may differ: DCP reshards).
        optimizers: as given to :func:`save_checkpoint`; ``None`` restores the model only.
        restore_rng: restore this rank's RNG states (skipped with a warning when the rank has none).

    Returns:
        The saved training position.

    Raises:
        DataError: the folder is incomplete, or its optimizer state does not match the optimizers.
    """
    directory = Path(directory)
    meta = read_trainer_state(directory)
    saved = _checkpoint_keys(directory)
    model_sd = model_state_dict(model)
    state: dict[str, Any] = {"model": model_sd}
    flats: dict[str, dict[str, Any]] = {}
    for name, opt in (optimizers or {}).items():
        current = _flat_optimizer_state(opt)
        prefix = f"optim.{name}."
        saved_keys = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
        missing = sorted(set(current) - set(saved_keys))
        if missing:
            raise DataError(
                f"{directory}: the checkpoint has no `{name}` optimizer state for {missing[:3]} "
                f"({len(missing)} missing); was it written with another optimizer configuration?"
            )
        params = opt.params
        for key, md in saved_keys.items():
            if key in current:
                continue
            if name == "fused":  # FBGEMM allocates all its state up front: extra keys mean another optimizer
                logger.warning("%s: ignoring saved `fused` optimizer state %r (not used by this optimizer)", directory, key)
                continue
            pkey, _ = key.rsplit("/", 1)
            if pkey not in params or not hasattr(md, "size"):
                raise DataError(f"{directory}: `{name}` optimizer state {key!r} matches no parameter of the model")
            p = params[pkey]
            # Lazily created dense state (AdamW): allocate it in the saved shape and dtype.
            dev = p.device if tuple(md.size) == tuple(p.shape) else torch.device("cpu")
            current[key] = torch.empty(tuple(md.size), dtype=md.properties.dtype, device=dev)
        flats[name] = current
    if flats:
        state["optim"] = flats
    dcp.load(state, checkpoint_id=str(directory))
    load_model_state_dict(model, state["model"])
    for name, opt in (optimizers or {}).items():
        _load_optimizer(name, opt, flats[name])
    if restore_rng:
        rng_file = directory / "rng" / f"rank_{_rank():05d}.json"
        if rng_file.exists():
            set_rng_state(json.loads(rng_file.read_text()))
        else:
            logger.warning("%s: no RNG state for rank %s; continuing with the current one", directory, _rank())
    fields = TrainProgress.__dataclass_fields__
    return TrainProgress(**{k: v for k, v in meta.items() if k in fields})


def load_model_weights(directory: str | Path, *, model: torch.nn.Module) -> TrainProgress:
    """Restores only the model of a checkpoint (evaluation / export); RNG and optimizers untouched."""
    return load_checkpoint(directory, model=model, optimizers=None, restore_rng=False)


# ---- a run's checkpoint folder ------------------------------------------------------------
class CheckpointManager:
    """The ``checkpoints/`` folder of a run: atomic saves, the latest checkpoint, keeping the last K.

    Args:
        run_dir: the run folder.
        keep: how many of the latest checkpoints to keep.

    Example:
        >>> import tempfile
        >>> CheckpointManager(tempfile.mkdtemp(), keep=2).latest() is None
        True
    """

    def __init__(self, run_dir: str | Path, *, keep: int = 3) -> None:
        self.root = Path(run_dir) / CHECKPOINTS_DIR
        self.keep = keep

    @staticmethod
    def step_dir_name(step: int) -> str:
        return f"{_STEP_PREFIX}{step:08d}"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [
            p
            for p in self.root.iterdir()
            if p.is_dir() and p.name.startswith(_STEP_PREFIX) and (p / TRAINER_STATE_FILE).exists()
        ]
        return sorted(found, key=lambda p: int(p.name[len(_STEP_PREFIX):]))

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or ``None``."""
        found = self.checkpoints()
        return found[-1] if found else None

    def save(
        self,
        step: int,
        *,
        model: torch.nn.Module,
        optimizers: Mapping[str, Any],
        progress: TrainProgress,
        config: Mapping[str, Any] | None = None,
    ) -> Path:
        """Saves into ``.tmp_step_N``, renames it to ``step_N`` on rank 0, then prunes old ones.

        Collective: every rank calls it with the same ``step``.

        Returns:
            The final folder.
        """
        final = self.root / self.step_dir_name(step)
        tmp = self.root / f"{_TMP_PREFIX}{step:08d}"
        if _rank() == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        barrier()
        save_checkpoint(tmp, model=model, optimizers=optimizers, progress=progress, config=config)
        if _rank() == 0:
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)  # atomic on one filesystem
            for old in self.checkpoints()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
            logger.info("checkpoint %s", final)
        barrier()
        return final
