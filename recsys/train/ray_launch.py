"""``seedrec train --workers N [--address RAY]``: the generic Trainer on N Ray Train workers.

Commands::

    # a private local Ray (started and shut down by the command), 2 CPU workers, gloo
    seedrec train --config configs/lmn.yaml --data samples/ --out runs/lmn --workers 2

    # a running cluster (KubeRay: deploy/kuberay/rayjob.yaml); data and run folder on shared storage
    seedrec train --config configs/lmn.yaml --data /shared/samples --out /shared/runs/lmn --workers 8 --address auto

What runs where::

    driver   validate (Trainer.check(), data folder, CPUs / GPUs: a SeedrecError before any worker starts)
             ray.init ─► ray.data.read_parquet(train split) ─► TorchTrainer(...).fit()
    worker r Ray Train made the process group (gloo on CPU, nccl + one GPU per worker on CUDA)
             build_task(run) ─► Trainer(task).fit(): the SAME loop as 1 process — DMP over one
             collective plan, DCP checkpoints in RUN/checkpoints, resume from the latest one;
             train batches = this worker's streaming_split shard (recsys.train.ray_data)
             rank 0 reports the final metrics and checkpoint to Ray (no copy: the run folder is
             Ray's experiment folder)

Losing a worker: Ray Train's controller sees the dead actor (health checks every 2 s), tears the
worker group down and starts a new one, up to ``max_failures`` times (``FailureConfig``). The new
workers run the same loop function; the Trainer finds the latest complete checkpoint in
``RUN/checkpoints`` and continues from its step (model shards, both optimizers, RNG, the position in
the epoch). Steps after that checkpoint are recomputed, so at most ``checkpoint_every - 1`` steps are
done twice and none is lost; the step count, sample count and schedule end as in a run that never
failed. On a cluster, ``RUN`` (and ``--data``) must be shared storage (NFS / a ReadWriteMany PVC):
every worker writes its DCP shards there and a restarted worker may land on another node.

A :class:`~seedrec.errors.SeedrecError` raised in a worker (bad data, a NaN loss) is deterministic:
it is recorded in ``RUN/.ray_fatal_error.json``, retries of the same launch re-raise it at once, and
the driver raises it as the same one-line error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, unique
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seedrec import errors
from seedrec.errors import ConfigError, DataError, SeedrecError, ServiceUnavailableError

if TYPE_CHECKING:
    from recsys.train.run_config import RunConfig

# This module stays light at import time (no torch, no torchrec): Ray imports it in every worker
# process of a local Ray for `_setup_local_worker`, Ray Data's read tasks included.

__all__ = [
    "RayLaunchConfig",
    "FaultInjection",
    "LaunchErrorType",
    "RayCapacityError",
    "RayTrainingError",
    "resolve_use_gpu",
    "check_capacity",
    "prepare_run",
    "launch",
    "start_local_ray",
    "FATAL_ERROR_FILE",
]

logger = logging.getLogger(__name__)

FATAL_ERROR_FILE = ".ray_fatal_error.json"
_FAULT_MARKER = ".ray_fault_injected"


# ---- configuration (no behaviour) ----------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RayLaunchConfig:
    """How to run a training job on Ray Train.

    Attributes:
        workers: Ray Train workers (ranks).
        address: a running Ray cluster (``auto``, ``ray://head:10001``); ``None`` starts a private
            local Ray (or reuses one already initialised in this process) and, if started here,
            shuts it down afterwards.
        use_gpu: one GPU per worker and nccl; ``None``: when ``train.device`` is ``cuda``, or it is
            unset and the machine (local) or the cluster has GPUs.
        cpus_per_worker: CPUs reserved per worker.
        data_cpus: logical CPUs a local Ray adds on top of the workers' for Ray Data's read tasks
            (Ray Train reserves the workers' CPUs; without spare ones the reads would never run).
        max_failures: worker-group restarts after a lost worker or a worker error
            (``FailureConfig(max_failures=...)``); -1 retries forever.
        timeout_s: timeout of the process group's collectives (``TorchConfig(timeout_s=...)``);
            ``None``: the run's ``train.dist_timeout_s``.
        ray_data: feed ranking tasks' training batches from Ray Data (``streaming_split`` shards);
            ``False`` keeps the local ``SampleLoader`` (rank / world-size sharding) in every worker.
        check_resources: refuse a launch the cluster cannot place now (turn off for autoscaling
            clusters that grow on demand).
    """

    workers: int = 2
    address: str | None = None
    use_gpu: bool | None = None
    cpus_per_worker: float = 1.0
    data_cpus: float = 1.0
    max_failures: int = 2
    timeout_s: float | None = None
    ray_data: bool = True
    check_resources: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"`workers` = {self.workers!r}; must be an int ≥ 1")
        if not self.cpus_per_worker > 0:
            raise ConfigError(f"`cpus_per_worker` = {self.cpus_per_worker}; must be > 0")
        if not self.data_cpus >= 0:
            raise ConfigError(f"`data_cpus` = {self.data_cpus}; must be ≥ 0")
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < -1:
            raise ConfigError(f"`max_failures` = {self.max_failures!r}; must be an int ≥ -1 (-1: retry forever)")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ConfigError(f"`timeout_s` = {self.timeout_s}; must be > 0 seconds (or unset: train.dist_timeout_s)")
        if self.address is not None and not str(self.address).strip():
            raise ConfigError("`address` is empty; give a Ray address such as 'auto' or 'ray://head:10001', or leave it unset")


@dataclass(frozen=True, kw_only=True)
class FaultInjection:
    """Kill one worker once, to exercise recovery: rank ``rank`` SIGKILLs itself at its ``step``-th
    training step (1-based, counted from the start of the run) unless ``RUN/.ray_fault_injected``
    exists, which it writes first, so the restarted workers run through.

    Example:
        >>> FaultInjection(rank=1, step=7)
        FaultInjection(rank=1, step=7)
    """

    rank: int
    step: int

    def __post_init__(self) -> None:
        if self.rank < 0 or self.step < 1:
            raise ConfigError(f"FaultInjection(rank={self.rank}, step={self.step}): need rank ≥ 0 and step ≥ 1")


@unique
class LaunchErrorType(str, Enum):  # noqa: UP042  (STYLE §3: str, Enum)
    """Why a launch was refused before any worker started."""

    INSUFFICIENT_CPUS = "insufficient_cpus"
    INSUFFICIENT_GPUS = "insufficient_gpus"


class RayCapacityError(ConfigError):
    """The workers asked for do not fit the machine or cluster (``error_type`` says which resource)."""

    def __init__(self, message: str, *, error_type: LaunchErrorType) -> None:
        super().__init__(message)
        self.error_type = error_type


class RayTrainingError(SeedrecError):
    """The Ray Train run failed beyond its ``max_failures`` restarts (not a Seedrec error in a worker)."""


# ---- validation (driver side, without Ray) -------------------------------------------------------
def resolve_use_gpu(config: RayLaunchConfig, *, device: str | None, available_gpus: float) -> bool:
    """Whether the workers get one GPU each (and nccl), from the launch and train configs.

    Args:
        config: the launch config (``use_gpu`` wins when set).
        device: the run's ``train.device`` (``cpu``, ``cuda`` or ``None``).
        available_gpus: GPUs of the local machine or the cluster.

    Raises:
        ConfigError: ``use_gpu`` contradicts ``train.device``.

    Example:
        >>> resolve_use_gpu(RayLaunchConfig(workers=2), device=None, available_gpus=0)
        False
        >>> resolve_use_gpu(RayLaunchConfig(workers=2), device=None, available_gpus=8)
        True
    """
    if config.use_gpu is not None:
        if config.use_gpu and device == "cpu":
            raise ConfigError("`use_gpu` = True but `train.device` = 'cpu'; drop one of them")
        if not config.use_gpu and device == "cuda":
            raise ConfigError("`use_gpu` = False but `train.device` = 'cuda'; drop one of them")
        return config.use_gpu
    if device is not None:
        return device == "cuda"
    return available_gpus > 0


def check_capacity(
    workers: int, *, cpus_per_worker: float, use_gpu: bool, resources: Mapping[str, float], where: str
) -> None:
    """Refuses a worker group that ``resources`` cannot hold (Ray would wait for it forever).

    Args:
        workers: Ray Train workers.
        cpus_per_worker: CPUs each reserves.
        use_gpu: each also reserves one GPU.
        resources: ``{"CPU": n, "GPU": m}`` of the machine or cluster.
        where: names the machine or cluster in the message.

    Raises:
        RayCapacityError: too few CPUs or GPUs; the message lists numbered remedies.

    Example:
        >>> check_capacity(4, cpus_per_worker=1, use_gpu=False, resources={"CPU": 2}, where="this machine")
        Traceback (most recent call last):
        ...
        recsys.train.ray_launch.RayCapacityError: 4 workers × 1 CPU = 4 CPUs, but this machine has 2: (1) use `--workers 2` or fewer, (2) lower `cpus_per_worker`, (3) pass `--address` of a Ray cluster with ≥ 4 CPUs
    """
    cpus = float(resources.get("CPU", 0.0))
    need = workers * cpus_per_worker
    if need > cpus + 1e-9:
        fit = int(cpus // cpus_per_worker)
        raise RayCapacityError(
            f"{workers} workers × {cpus_per_worker:g} CPU = {need:g} CPUs, but {where} has {cpus:g}: "
            f"(1) use `--workers {max(fit, 1)}` or fewer, (2) lower `cpus_per_worker`, "
            f"(3) pass `--address` of a Ray cluster with ≥ {need:g} CPUs",
            error_type=LaunchErrorType.INSUFFICIENT_CPUS,
        )
    gpus = float(resources.get("GPU", 0.0))
    if use_gpu and workers > gpus + 1e-9:
        raise RayCapacityError(
            f"{workers} workers need one GPU each, but {where} has {gpus:g}: (1) use `--workers {max(int(gpus), 1)}` "
            f"or fewer, (2) train on CPU (`train.device=cpu`), (3) pass `--address` of a cluster with ≥ {workers} GPUs",
            error_type=LaunchErrorType.INSUFFICIENT_GPUS,
        )


def prepare_run(run: RunConfig, config: RayLaunchConfig) -> RunConfig:
    """Validates ``run`` on the driver and returns the run the workers get.

    Checks, without starting Ray or a process group: the run folder is set, the data folder exists,
    the task builds and :meth:`Trainer.check` passes (splits, sharding types, tables, embedding
    optimizer), and a ranking split gives every worker at least one batch, so a bad config is one
    ``SeedrecError`` instead of N worker tracebacks or a collective timeout. A ranking task gets
    ``task.batch_source = "ray_data"`` when ``config.ray_data`` is on; progress bars are turned off.

    Raises:
        ConfigError: no ``train.out_dir``, or an invalid task / model / train section.
        DataError: the data folder does not exist, or has too few training rows for one batch per worker.
    """
    from recsys.train.run_config import RunConfig, build_task
    from recsys.train.trainer import Trainer

    if not run.train.out_dir:
        raise ConfigError("`train.out_dir` is unset; Ray training writes RUN/metrics.json and RUN/checkpoints (pass --out RUN)")
    data_dir = run.task.get("data_dir")
    if data_dir is not None and not Path(str(data_dir)).is_dir():
        raise DataError(
            f"`task.data_dir` = {data_dir}: no such folder; pass --data DIR (the output of `seedrec data build`, "
            "on storage every Ray node mounts)"
        )
    task = dict(run.task)
    if config.ray_data and run.kind == "ranking":
        task["batch_source"] = "ray_data"
    # tqdm bars of N workers would come back through Ray's log forwarding as thousands of lines.
    prepared = RunConfig(task=task, model=run.model, train=dataclasses.replace(run.train, progress_bar=False))
    built = build_task(prepared)
    Trainer(built, config=prepared.train).check()
    if run.kind == "ranking":  # an epoch without a single batch per worker: refuse it here, not in N workers
        from recsys.train.ray_data import split_files, split_rows

        transform = getattr(built, "transform", None)
        per_worker = split_rows(split_files(str(data_dir), "train", transform=transform)) // config.workers
        batch = int(task.get("batch_size", 512))
        if per_worker == 0 or (per_worker < batch and task.get("drop_last", True)):
            raise DataError(
                f"{per_worker} training rows per worker make no batch of {batch} with {config.workers} workers; "
                "use more data, fewer workers or a smaller `task.batch_size`"
            )
    return prepared


# ---- the worker ------------------------------------------------------------------------------------
class _FaultInjectingTask:
    """Delegates to ``task``; SIGKILLs this process at the configured step (see :class:`FaultInjection`)."""

    def __init__(self, task: Any, *, fault: FaultInjection, rank: int, out_dir: Path) -> None:
        self._task = task
        self._armed = rank == fault.rank and not (out_dir / _FAULT_MARKER).exists()
        self._fault = fault
        self._marker = out_dir / _FAULT_MARKER
        self._steps = 0

    def __getattr__(self, name: str) -> Any:  # sharding_constraints, splits, config_dict, ...
        return getattr(self._task, name)

    def build_model(self, *, device: Any) -> Any:
        return self._task.build_model(device=device)

    def batches(self, split: str, *, rank: int, world_size: int, epoch: int) -> Any:
        return self._task.batches(split, rank=rank, world_size=world_size, epoch=epoch)

    def evaluate(self, model: Any, split: str, *, rank: int, world_size: int) -> dict[str, float]:
        return dict(self._task.evaluate(model, split, rank=rank, world_size=world_size))

    def step(self, model: Any, batch: Any) -> Any:
        self._steps += 1
        if self._armed and self._steps == self._fault.step:
            self._marker.write_text(json.dumps({"rank": self._fault.rank, "step": self._fault.step, "pid": os.getpid()}))
            logger.warning("fault injection: killing rank %s (pid %s) at step %s", self._fault.rank, os.getpid(), self._steps)
            os.kill(os.getpid(), signal.SIGKILL)
        return self._task.step(model, batch)


def _record_fatal(out_dir: Path, launch_id: str, error: SeedrecError) -> None:
    payload = {"launch_id": launch_id, "type": type(error).__name__, "message": str(error)}
    tmp = out_dir / f"{FATAL_ERROR_FILE}.{os.getpid()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(payload))
    tmp.replace(out_dir / FATAL_ERROR_FILE)


def _recorded_fatal(out_dir: Path, launch_id: str) -> SeedrecError | None:
    path = out_dir / FATAL_ERROR_FILE
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if payload.get("launch_id") != launch_id:
        return None
    cls = getattr(errors, str(payload.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, SeedrecError)):
        cls = SeedrecError
    return cls(str(payload.get("message")))


def _train_loop(loop_config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs (each attempt): the Trainer, then one report."""
    import ray.train
    from ray.train import Checkpoint, CheckpointUploadMode

    from recsys.train.checkpoint import CheckpointManager
    from recsys.train.run_config import build_task, run_config_from_dict
    from recsys.train.trainer import Trainer
    from seedrec.logs import setup_logging

    setup_logging(loop_config.get("log_level"))
    run = run_config_from_dict(loop_config["run"])
    out_dir = Path(str(run.train.out_dir))
    launch_id = str(loop_config["launch_id"])
    rank = ray.train.get_context().get_world_rank()
    recorded = _recorded_fatal(out_dir, launch_id)
    if recorded is not None:  # a deterministic error of an earlier attempt: fail again at once
        raise recorded
    try:
        task: Any = build_task(run)
        if loop_config.get("fault") is not None:
            task = _FaultInjectingTask(task, fault=FaultInjection(**loop_config["fault"]), rank=rank, out_dir=out_dir)
        metrics = Trainer(task, config=run.train, run_config=run.to_dict()).fit()
    except SeedrecError as e:
        _record_fatal(out_dir, launch_id, e)
        raise
    # Every rank reports once (ray.train.report is a barrier); rank 0 attaches the final checkpoint,
    # which already lies in Ray's experiment folder (the run folder), so nothing is copied.
    latest = CheckpointManager(out_dir).latest() if rank == 0 else None
    checkpoint = Checkpoint.from_directory(str(latest)) if latest is not None else None
    payload: dict[str, Any] = {k: float(v) for k, v in metrics.items()}
    payload["seedrec/step"] = int(latest.name.rsplit("_", 1)[-1]) if latest is not None else -1
    ray.train.report(payload, checkpoint=checkpoint, checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)


# ---- the driver ------------------------------------------------------------------------------------
_NOISY_WITHOUT_DASHBOARD = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def _setup_local_worker() -> None:
    """``worker_process_setup_hook`` of a private local Ray: it runs without the dashboard, hence
    without the State API, and Ray Train's placement-group cleaner would log a warning every second
    that it cannot query it (the cleaner only matters when a controller dies; ``ray.shutdown`` frees
    everything of a private Ray anyway)."""
    for name in _NOISY_WITHOUT_DASHBOARD:
        logging.getLogger(name).setLevel(logging.ERROR)


def _local_resources() -> dict[str, float]:
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count() if torch.cuda.is_available() else 0)}


def start_local_ray(*, num_cpus: int, num_gpus: int = 0) -> None:
    """Starts a private single-node Ray on loopback, without the dashboard (tests, benchmarks).

    Args:
        num_cpus: logical CPUs (may exceed the cores: Ray Data's tasks need some beyond the workers').
        num_gpus: GPUs to expose.
    """
    import ray

    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level=logging.WARNING, log_to_driver=True,
             runtime_env={"worker_process_setup_hook": f"{__name__}._setup_local_worker"})


def _check_reachable(address: str, *, timeout_s: float = 5.0) -> None:
    """Fails fast on a ``host:port`` / ``ray://host:port`` nobody listens on (``ray.init`` would
    retry for minutes); ``auto`` and other forms are left to Ray.

    Raises:
        ServiceUnavailableError: no TCP connection within ``timeout_s``.
    """
    import socket

    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ServiceUnavailableError(
            f"no Ray cluster answers at {address} ({e}); check `--address` (e.g. `auto` on a cluster node, "
            "`ray://head:10001` from outside) or leave it out to train on a local Ray"
        ) from None


def _init_ray(config: RayLaunchConfig, *, need_cpus: float, gpus: float) -> bool:
    """Connects to ``config.address``, reuses an initialised Ray, or starts a local one.

    Returns:
        Whether this call started Ray (and so must shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    if config.address is not None:
        _check_reachable(config.address)
        ray.init(address=config.address, logging_level=logging.WARNING, log_to_driver=True)
        return True
    start_local_ray(num_cpus=max(int(os.cpu_count() or 1), math.ceil(need_cpus + config.data_cpus)), num_gpus=int(gpus))
    return True


def _fatal_or_failure(out_dir: Path, launch_id: str, error: BaseException, max_failures: int) -> SeedrecError:
    recorded = _recorded_fatal(out_dir, launch_id)
    if recorded is not None:
        return recorded
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    first = lines[0] if lines else type(error).__name__
    tail = next((ln for ln in reversed(lines) if "Error" in ln and ln != first), "")
    detail = f"{first} … {tail}" if tail else first
    return RayTrainingError(
        f"Ray Train run in {out_dir} failed after {max_failures} restart(s): {detail} (worker logs: Ray's session logs)"
    )


def launch(
    run: RunConfig,
    *,
    workers: int,
    address: str | None = None,
    config: RayLaunchConfig | None = None,
    fault: FaultInjection | None = None,
) -> dict[str, float]:
    """Trains ``run`` on ``workers`` Ray Train workers and returns its final metrics.

    Args:
        run: the run; ``train.out_dir`` is the run folder (shared storage on a cluster).
        workers: Ray Train workers; overrides ``config.workers``.
        address: a running Ray cluster; overrides ``config.address`` when given.
        config: the rest of the launch settings (default: :class:`RayLaunchConfig`).
        fault: kill a worker once (recovery tests); see :class:`FaultInjection`.

    Returns:
        The final metrics of ``RUN/metrics.json`` (``{split}/...``).

    Raises:
        ConfigError: a bad config, or too few CPUs / GPUs (:class:`RayCapacityError`); raised
            before any worker starts.
        DataError: no data folder, or a data problem found by a worker.
        ServiceUnavailableError: nothing answers at ``address``.
        RayTrainingError: the run failed more than ``max_failures`` times for another reason.
    """
    cfg = config or RayLaunchConfig()
    cfg = dataclasses.replace(cfg, workers=workers, address=address if address is not None else cfg.address)
    if cfg.address is None and os.environ.get("RAY_ADDRESS"):
        cfg = dataclasses.replace(cfg, address=os.environ["RAY_ADDRESS"])  # inside `ray job submit` / a RayJob
    prepared = prepare_run(run, cfg)
    out_dir = Path(str(prepared.train.out_dir)).resolve()

    import ray

    local = cfg.address is None and not ray.is_initialized()
    if local:  # check before starting anything: Ray would wait for the missing CPUs forever
        resources = _local_resources()
        use_gpu = resolve_use_gpu(cfg, device=prepared.train.device, available_gpus=resources["GPU"])
        if cfg.check_resources:
            check_capacity(cfg.workers, cpus_per_worker=cfg.cpus_per_worker, use_gpu=use_gpu, resources=resources,
                           where="this machine")
    else:
        resources, use_gpu = {}, False
    started = _init_ray(cfg, need_cpus=cfg.workers * cfg.cpus_per_worker, gpus=resources.get("GPU", 0.0))
    try:
        if not local:
            cluster = {k: float(v) for k, v in ray.cluster_resources().items()}
            use_gpu = resolve_use_gpu(cfg, device=prepared.train.device, available_gpus=cluster.get("GPU", 0.0))
            if cfg.check_resources:
                check_capacity(cfg.workers, cpus_per_worker=cfg.cpus_per_worker, use_gpu=use_gpu, resources=cluster,
                               where=f"the Ray cluster at {cfg.address or 'this process'}")
        return _fit(prepared, cfg, out_dir=out_dir, use_gpu=use_gpu, fault=fault)
    finally:
        if started:
            ray.shutdown()


def _fit(run: RunConfig, cfg: RayLaunchConfig, *, out_dir: Path, use_gpu: bool, fault: FaultInjection | None) -> dict[str, float]:
    import ray.train
    from ray.data import DataContext
    from ray.train.torch import TorchConfig, TorchTrainer

    if not getattr(ray.train, "is_v2_enabled", lambda: True)():
        raise ConfigError("Ray Train V2 is off (RAY_TRAIN_V2_ENABLED=0); unset it, Seedrec uses the V2 API")
    datasets: dict[str, Any] = {}
    if run.task.get("batch_source") == "ray_data":
        from recsys.train.ray_data import TRAIN_DATASET, read_split

        DataContext.get_current().enable_progress_bars = False
        datasets[TRAIN_DATASET] = read_split(str(run.task["data_dir"]), "train", shuffle=bool(run.task.get("shuffle", True)),
                                             seed=run.train.seed)
    launch_id = uuid.uuid4().hex
    timeout = cfg.timeout_s if cfg.timeout_s is not None else run.train.dist_timeout_s
    loop_config = {
        "run": run.to_dict(),
        "launch_id": launch_id,
        "fault": dataclasses.asdict(fault) if fault is not None else None,
        "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo", timeout_s=max(int(timeout), 1)),
        run_config=ray.train.RunConfig(
            name=out_dir.name,
            storage_path=str(out_dir.parent),  # Ray's experiment folder is the run folder itself
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),  # the Trainer prunes its own
            worker_runtime_env={"env_vars": {"SEEDREC_LOG_LEVEL": str(loop_config["log_level"])}},
        ),
        datasets=datasets or None,
    )
    logger.info("Ray Train: %s workers (%s), run folder %s", cfg.workers, "nccl, 1 GPU each" if use_gpu else "gloo, CPU", out_dir)
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as e:
        raise _fatal_or_failure(out_dir, launch_id, e, cfg.max_failures) from None
    metrics_file = out_dir / "metrics.json"
    if not metrics_file.exists():
        raise RayTrainingError(f"the Ray Train run finished but wrote no {metrics_file}")
    return {k: float(v) for k, v in json.loads(metrics_file.read_text())["metrics"].items()}
