"""Process groups, devices, TorchRec sharding plans and model wrapping for the generic Trainer.

One code path for 1 and N processes: without a process group, :func:`init_distributed` creates a
single-process gloo group on a free loopback port, so a 1-process run goes through the same
``DistributedModelParallel`` as a 32-GPU one. Under torchrun or Ray Train the group already exists
(or the ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` environment describes it) and is used as is.

Sharding on CPU (gloo), measured (``shared/specs/stack-facts.md``):

============================  =========================================================
module                        sharding types valid on CPU
============================  =========================================================
EmbeddingBagCollection        data_parallel, table_wise, column_wise, table_column_wise
EmbeddingCollection           data_parallel, table_wise, column_wise, row_wise
============================  =========================================================

The Trainer's defaults leave ``data_parallel`` out: a data-parallel table is a plain replicated
tensor trained by the dense AdamW instead of the fused sparse optimizer, which is rarely wanted for
embeddings. Constraints are validated on every rank *before* the collective plan, because a plan that
fails on one rank only shows up on the others as a collective timeout.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from recsys.train.configs import EmbeddingOptimizer
from seedrec.errors import ConfigError
from seedrec.net import free_port

__all__ = [
    "DistContext",
    "WrappedModel",
    "free_port",
    "run_local_workers",
    "init_distributed",
    "shutdown_distributed",
    "barrier",
    "all_reduce_sum",
    "all_reduce_min_int",
    "has_embedding_modules",
    "check_embedding_optimizer",
    "embedding_tables",
    "valid_sharding_types",
    "default_sharding_types",
    "sharding_constraints",
    "plan_sharding",
    "wrap_model",
    "model_state_dict",
    "load_model_state_dict",
    "load_full_state_dict",
    "unwrap_model",
]

logger = logging.getLogger(__name__)

EBC = "EmbeddingBagCollection"
EC = "EmbeddingCollection"


# ---- process group and device ----------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class DistContext:
    """Where this process sits: rank, world, device and whether it created the process group."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0




def _pick_device(preferred: str | None, local_rank: int) -> tuple[torch.device, str]:
    if preferred == "cuda" and not torch.cuda.is_available():
        raise ConfigError("`device` = 'cuda' but CUDA is not available on this machine; use 'cpu' or leave it unset")
    use_cuda = torch.cuda.is_available() if preferred is None else preferred == "cuda"
    if use_cuda:
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1)), "nccl"
    return torch.device("cpu"), "gloo"


def init_distributed(*, device: str | None = None, timeout_s: float = 300.0) -> DistContext:
    """Joins (or creates) the default process group and picks this rank's device.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available). When a group already exists
            its backend decides: nccl means ``cuda:local_rank``, anything else CPU.
        timeout_s: timeout of collectives in a group created here.

    Returns:
        The context; ``owns_group`` tells :func:`shutdown_distributed` whether to destroy the group.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        backend = str(dist.get_backend())
        if "nccl" in backend:
            dev = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
            torch.cuda.set_device(dev)
        else:
            dev = torch.device("cpu")
        world = dist.get_world_size()
        return DistContext(
            rank=dist.get_rank(),
            world_size=world,
            local_rank=local_rank,
            local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
            device=dev,
            backend=backend,
            owns_group=False,
        )
    dev, backend = _pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    timeout = timedelta(seconds=timeout_s)
    if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:  # torchrun-style environment
        dist.init_process_group(backend, init_method="env://", timeout=timeout)
    else:
        port = free_port()
        dist.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1, timeout=timeout
        )
    world = dist.get_world_size()
    ctx = DistContext(
        rank=dist.get_rank(),
        world_size=world,
        local_rank=local_rank,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        device=dev,
        backend=backend,
        owns_group=True,
    )
    logger.debug("process group %s: rank %s of %s on %s", backend, ctx.rank, world, dev)
    return ctx


def shutdown_distributed(ctx: DistContext) -> None:
    """Destroys the process group if :func:`init_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    if dist.is_initialized() and "nccl" in str(dist.get_backend()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """A barrier over the default group (no-op without one)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over ranks, returned on the device of ``values``."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    t = values.detach().to(_comm_device(), copy=True)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.to(values.device)


def all_reduce_min_int(value: int) -> int:
    """The smallest ``value`` over ranks."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _worker_entry(local_rank: int, fn: Callable[..., Any], args: tuple[Any, ...], world: int, port: int) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(local_rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
        }
    )
    fn(*args)


def run_local_workers(fn: Callable[..., Any], args: tuple[Any, ...] = (), *, workers: int) -> None:
    """Runs ``fn(*args)`` in ``workers`` spawned processes on this machine, torchrun-style.

    Each child gets ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT`` (a
    free loopback port), so :func:`init_distributed` joins one group of ``workers`` ranks. ``fn`` must be
    importable (a module-level function). Blocks until all exit.

    Raises:
        torch.multiprocessing.ProcessRaisedException: a worker raised (its traceback is in the message).
    """
    import torch.multiprocessing as mp

    if workers < 1:
        raise ConfigError(f"`workers` = {workers}; must be ≥ 1")
    mp.start_processes(_worker_entry, args=(fn, args, workers, free_port()), nprocs=workers, join=True, start_method="spawn")


# ---- TorchRec tables and sharding constraints -------------------------------------------------
def _embedding_module_kind(m: nn.Module) -> str | None:
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    if isinstance(m, EmbeddingBagCollection):
        return EBC
    if isinstance(m, EmbeddingCollection):
        return EC
    return None


def has_embedding_modules(model: nn.Module) -> bool:
    """Whether ``model`` contains a TorchRec ``EmbeddingBagCollection`` or ``EmbeddingCollection``."""
    return any(_embedding_module_kind(m) is not None for m in model.modules())


def embedding_tables(model: nn.Module) -> dict[str, str]:
    """``{table name: "EmbeddingBagCollection" | "EmbeddingCollection"}`` for every TorchRec table."""
    tables: dict[str, str] = {}
    for m in model.modules():
        kind = _embedding_module_kind(m)
        if kind == EBC:
            names = [t.name for t in m.embedding_bag_configs()]  # type: ignore[operator]  # EBC method
        elif kind == EC:
            names = [t.name for t in m.embedding_configs()]  # type: ignore[operator]  # EC method
        else:
            continue
        for n in names:
            tables[n] = kind
    return tables


def valid_sharding_types(module_kind: str, compute_device: str) -> list[str]:
    """The sharding types TorchRec's default sharder supports for a module kind on a device type."""
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder

    sharder = EmbeddingBagCollectionSharder() if module_kind == EBC else EmbeddingCollectionSharder()
    return list(sharder.sharding_types(compute_device))


def default_sharding_types(module_kind: str, compute_device: str) -> list[str]:
    """The valid sharding types minus ``data_parallel`` (embeddings stay under the fused optimizer)."""
    return [t for t in valid_sharding_types(module_kind, compute_device) if t != "data_parallel"]


def sharding_constraints(
    model: nn.Module,
    *,
    compute_device: str,
    sharding_types: Iterable[str] | None = None,
    per_table: Mapping[str, str] | None = None,
    task_constraints: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Planner constraints for every table, validated against what the device supports.

    Precedence: ``per_table`` (config ``train.sharding``) > ``sharding_types`` (config
    ``train.sharding_types``) > the task's own constraints > :func:`default_sharding_types`.

    Args:
        model: the (meta) model.
        compute_device: ``"cpu"`` or ``"cuda"``.
        sharding_types: allow-list applied to every table.
        per_table: ``{table: sharding type}``.
        task_constraints: ``{table: ParameterConstraints}`` from ``Task.sharding_constraints()``.

    Returns:
        ``{table: ParameterConstraints}`` for :func:`plan_sharding`.

    Raises:
        ConfigError: an unknown sharding type or table, or a type the table's module cannot use on
            this device (the message lists the valid ones).
    """
    from torchrec.distributed.planner.types import ParameterConstraints

    tables = embedding_tables(model)
    per_table = dict(per_table or {})
    task_constraints = dict(task_constraints or {})
    all_types = sorted(set(valid_sharding_types(EBC, "cuda")) | set(valid_sharding_types(EC, "cuda")))
    for name in per_table:
        if name not in tables:
            raise ConfigError(f"`sharding.{name}`: no embedding table {name!r}; tables: {sorted(tables)}")
    for t in list(sharding_types or []) + list(per_table.values()):
        if t not in all_types:
            raise ConfigError(f"unknown sharding type {t!r}; valid types: {', '.join(all_types)}")

    out: dict[str, Any] = {}
    for name, kind in sorted(tables.items()):
        valid = valid_sharding_types(kind, compute_device)
        base = task_constraints.get(name)
        if name in per_table:
            chosen = [per_table[name]]
            source = f"`sharding.{name}`"
        elif sharding_types is not None:
            chosen = [t for t in sharding_types if t in valid]
            source = "`sharding_types`"
            if not chosen:
                raise ConfigError(
                    f"`sharding_types` = {list(sharding_types)} leaves no valid type for table {name!r} "
                    f"({kind} on {compute_device}); valid for it: {', '.join(valid)}"
                )
        elif base is not None and base.sharding_types:
            chosen = list(base.sharding_types)
            source = "the task's sharding constraints"
        else:
            chosen = default_sharding_types(kind, compute_device)
            source = "defaults"
        bad = [t for t in chosen if t not in valid]
        if bad:
            raise ConfigError(
                f"{source}: sharding type {bad[0]!r} is not supported for table {name!r} ({kind} on "
                f"{compute_device}); valid for it: {', '.join(valid)}"
            )
        if base is not None:
            out[name] = ParameterConstraints(**{**vars(base), "sharding_types": chosen})
        else:
            out[name] = ParameterConstraints(sharding_types=chosen)
    return out


def _topology(*, world_size: int, local_world_size: int, compute_device: str) -> Any:
    from torchrec.distributed.planner.types import Topology

    try:  # torchrec ≥ 1.8 prefers the factory and warns when Topology is built directly
        from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig

        return TopologyFactory.create_topology(
            trainer_config=TrainerConfig(world_size=world_size, local_world_size=local_world_size),
            kernel_config=KernelConfig(compute_device=compute_device),
        )
    except (ImportError, TypeError, ValueError):
        return Topology(world_size=world_size, local_world_size=local_world_size, compute_device=compute_device)


def plan_sharding(
    model: nn.Module,
    *,
    world_size: int,
    local_world_size: int,
    compute_device: str,
    constraints: Mapping[str, Any],
    batch_size: int | None = None,
) -> Any:
    """The same TorchRec ``ShardingPlan`` on every rank (planned on rank 0 and broadcast).

    Args:
        model: the model on ``meta``, embedding parameters already given their fused optimizer.
        world_size: ranks in the default group.
        local_world_size: ranks per host.
        compute_device: ``"cpu"`` or ``"cuda"``.
        constraints: ``{table: ParameterConstraints}`` from :func:`sharding_constraints`.
        batch_size: per-rank batch size for the planner's cost model (``None``: its default).
    """
    from torchrec.distributed.planner import EmbeddingShardingPlanner
    from torchrec.distributed.sharding_plan import get_default_sharders

    topology = _topology(world_size=world_size, local_world_size=local_world_size, compute_device=compute_device)
    kwargs: dict[str, Any] = {"topology": topology, "constraints": dict(constraints)}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    planner = EmbeddingShardingPlanner(**kwargs)
    return planner.collective_plan(model, get_default_sharders(), dist.GroupMember.WORLD)


# ---- wrapping -----------------------------------------------------------------------------------
@dataclass
class WrappedModel:
    """A model ready to train, with its optimizers.

    Attributes:
        model: what ``Task.step`` receives: a ``DistributedModelParallel``, a DDP or the plain module.
        dense_optimizer: a ``KeyedOptimizer`` (AdamW) over every parameter not trained in backward.
        fused_optimizer: the TorchRec fused embedding optimizer (``None`` without TorchRec tables).
        kind: ``"dmp"``, ``"ddp"`` or ``"plain"``.
        plan: the ``ShardingPlan`` (``None`` unless ``kind == "dmp"``).
    """

    model: nn.Module
    dense_optimizer: Any
    fused_optimizer: Any | None
    kind: str
    plan: Any | None = None

    @property
    def optimizers(self) -> dict[str, Any]:
        """``{"dense": ..., "fused": ...}`` (the fused one only when present), for checkpoints."""
        out = {"dense": self.dense_optimizer}
        if self.fused_optimizer is not None:
            out["fused"] = self.fused_optimizer
        return out

    def dense_parameters(self) -> list[torch.Tensor]:
        """The parameters the dense optimizer updates (the ones gradient clipping applies to)."""
        return [p for group in self.dense_optimizer.param_groups for p in group["params"]]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside a DMP and/or DDP wrapper."""
    from torchrec.distributed import DistributedModelParallel

    if isinstance(model, DistributedModelParallel):
        model = model.module
    while isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return model


def model_state_dict(model: nn.Module) -> dict[str, Any]:
    """The state dict with the user's key names (DMP strips its own prefixes; DDP's ``module.`` goes)."""
    from torchrec.distributed import DistributedModelParallel

    if isinstance(model, DistributedModelParallel):
        return dict(model.state_dict())
    return dict(unwrap_model(model).state_dict())


def load_model_state_dict(model: nn.Module, state_dict: Mapping[str, Any]) -> None:
    """Loads a state dict with the user's key names into a DMP, DDP or plain model (strict)."""
    from torchrec.distributed import DistributedModelParallel

    if isinstance(model, DistributedModelParallel):
        model.load_state_dict(dict(state_dict))
    else:
        unwrap_model(model).load_state_dict(dict(state_dict))


def load_full_state_dict(model: nn.Module, full: Mapping[str, torch.Tensor]) -> None:
    """Copies whole (unsharded) tensors into a possibly sharded model: each rank copies its shards.

    The inverse of gathering a checkpoint: e.g. to start a DMP from an unsharded model's weights.

    Args:
        model: a DMP, DDP or plain model.
        full: ``{key: full tensor}`` with the user's key names (an unsharded ``state_dict()``).

    Raises:
        ConfigError: a key is missing from ``full`` or has another shape.
    """
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    own = model_state_dict(model)
    with torch.no_grad():
        for key, target in own.items():
            if key not in full:
                raise ConfigError(f"no tensor {key!r} in the given state dict ({len(full)} keys)")
            src = full[key]
            if isinstance(target, ShardedTensor):
                if tuple(target.size()) != tuple(src.shape):
                    raise ConfigError(f"{key!r}: shape {tuple(src.shape)} differs from the model's {tuple(target.size())}")
                for shard in target.local_shards():
                    index = tuple(
                        slice(o, o + n) for o, n in zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes)
                    )
                    shard.tensor.copy_(src[index])
            elif isinstance(target, torch.Tensor):
                if tuple(target.shape) != tuple(src.shape):
                    raise ConfigError(f"{key!r}: shape {tuple(src.shape)} differs from the model's {tuple(target.shape)}")
                target.copy_(src)
    if hasattr(model, "_dmp_wrapped_module"):
        # Fused (FBGEMM) tables keep their own storage: the state dict views write through, but a
        # load_state_dict round trip makes sure every sharded module sees the new values.
        load_model_state_dict(model, own)


def check_embedding_optimizer(name: EmbeddingOptimizer, compute_device: str) -> None:
    """Raises :class:`ConfigError` when FBGEMM has no kernel for ``name`` on ``compute_device``."""
    _embedding_optimizer_class(name, compute_device)


def _embedding_optimizer_class(name: EmbeddingOptimizer, compute_device: str) -> tuple[type, dict[str, Any]]:
    import torchrec.optim as trec_optim

    classes: dict[EmbeddingOptimizer, tuple[type, dict[str, Any]]] = {
        EmbeddingOptimizer.SGD: (trec_optim.SGD, {}),
        EmbeddingOptimizer.ADAGRAD: (trec_optim.Adagrad, {"eps": 1e-8}),
        EmbeddingOptimizer.ROWWISE_ADAGRAD: (trec_optim.RowWiseAdagrad, {"eps": 1e-8}),
        EmbeddingOptimizer.ADAM: (trec_optim.Adam, {"eps": 1e-8}),
    }
    if compute_device == "cpu" and name is EmbeddingOptimizer.ADAM:
        valid = ", ".join(o.value for o in EmbeddingOptimizer if o is not EmbeddingOptimizer.ADAM)
        raise ConfigError(f"`embedding_optimizer` = 'adam' has no FBGEMM CPU kernel; on CPU use one of: {valid}")
    return classes[name]


def _no_dense_optimizer() -> Any:
    """A ``KeyedOptimizer`` over no parameters whose ``step`` does nothing."""
    from torchrec.optim.keyed import KeyedOptimizer

    class _NoDense(KeyedOptimizer):
        def step(self, closure: Any = None) -> None:
            return None

    return _NoDense({}, {}, [])


def _modules_left_uninitialised(model: nn.Module) -> list[str]:
    """Modules DMP could not initialise from ``meta``: they own meta parameters but have no
    ``reset_parameters()``, or own meta buffers but no meta parameters (DMP would zero them)."""
    bad: list[str] = []
    skip: set[int] = set()
    for m in model.modules():
        if _embedding_module_kind(m) is not None:
            skip.update(id(s) for s in m.modules())
    for name, m in model.named_modules():
        if id(m) in skip:
            continue
        meta_params = any(p is not None and p.device.type == "meta" for p in m._parameters.values())
        meta_buffers = any(b is not None and b.device.type == "meta" for b in m._buffers.values())
        if (meta_params and not hasattr(m, "reset_parameters")) or (meta_buffers and not meta_params):
            bad.append(name)
    return bad


def _reinit_plan(model: nn.Module, names: list[str]) -> list[nn.Module] | None:
    """For each module in ``names``, its nearest ancestor (or itself) with ``reset_parameters()`` and
    no TorchRec tables inside; ``None`` when one has no such ancestor."""
    modules = dict(model.named_modules())
    chosen: dict[int, nn.Module] = {}
    for name in names:
        parts = name.split(".") if name else []
        for cut in range(len(parts), -1, -1):
            m = modules[".".join(parts[:cut])]
            if hasattr(m, "reset_parameters") and not has_embedding_modules(m):
                chosen[id(m)] = m
                break
        else:
            return None
    return list(chosen.values())


def wrap_model(
    build: Callable[[torch.device], nn.Module],
    *,
    ctx: DistContext,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    embedding_optimizer: EmbeddingOptimizer,
    embedding_lr: float,
    sharding_types: Iterable[str] | None = None,
    per_table: Mapping[str, str] | None = None,
    task_constraints: Mapping[str, Any] | None = None,
) -> WrappedModel:
    """Builds the model and wraps it for this process group: DMP for TorchRec models, else DDP / plain.

    TorchRec models are built on ``meta``, their embedding parameters get the fused in-backward
    optimizer, the plan is made collectively and DMP materialises the shards on ``ctx.device``
    (dense modules run their ``reset_parameters()``). A module that owns parameters but has no
    ``reset_parameters()`` (an ``nn.ParameterDict``, say) is re-initialised after sharding by its
    nearest enclosing module that has one, then broadcast from rank 0; without such a module the
    model is built on CPU instead (real initialisation) and DMP copies it.

    Args:
        build: ``device -> model`` (``Task.build_model``).
        ctx: from :func:`init_distributed`.
        lr: peak dense learning rate (the Trainer's schedule rescales it).
        weight_decay: dense AdamW weight decay.
        betas: dense AdamW betas.
        embedding_optimizer: fused optimizer of the tables.
        embedding_lr: its peak learning rate.
        sharding_types: see :func:`sharding_constraints`.
        per_table: see :func:`sharding_constraints`.
        task_constraints: see :func:`sharding_constraints`.

    Raises:
        ConfigError: invalid sharding or optimizer settings for this device.
    """
    from torchrec.optim.keyed import KeyedOptimizerWrapper

    def dense_factory(params: Any) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)

    def dense_optimizer(named: Mapping[str, torch.Tensor]) -> Any:
        # A model with embeddings only has no dense parameters: AdamW would refuse the empty list.
        return KeyedOptimizerWrapper(dict(named), dense_factory) if named else _no_dense_optimizer()

    compute_device = ctx.device.type
    model = build(torch.device("meta"))
    if not has_embedding_modules(model):
        model = build(ctx.device)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if ctx.world_size > 1:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
            kind = "ddp"
        else:
            kind = "plain"
        return WrappedModel(model=model, dense_optimizer=dense_optimizer(dict(named)), fused_optimizer=None, kind=kind)

    from torchrec.distributed import DistributedModelParallel
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    opt_cls, opt_kwargs = _embedding_optimizer_class(embedding_optimizer, compute_device)
    constraints = sharding_constraints(
        model,
        compute_device=compute_device,
        sharding_types=sharding_types,
        per_table=per_table,
        task_constraints=task_constraints,
    )
    uninitialised = _modules_left_uninitialised(model)
    reinit: list[nn.Module] = []
    if uninitialised:
        found = _reinit_plan(model, uninitialised)
        if found is None:
            logger.warning(
                "modules %s own parameters (or buffers) that DMP cannot initialise from meta and no "
                "enclosing module has reset_parameters(); building the model on CPU instead",
                uninitialised,
            )
            model = build(torch.device("cpu"))
        else:
            reinit = found  # re-run their reset_parameters() once DMP has allocated the tensors
    emb_params = [
        p for m in model.modules() if _embedding_module_kind(m) is not None for p in m.parameters()
    ]
    apply_optimizer_in_backward(opt_cls, emb_params, {"lr": embedding_lr, **opt_kwargs})
    plan = plan_sharding(
        model,
        world_size=ctx.world_size,
        local_world_size=ctx.local_world_size,
        compute_device=compute_device,
        constraints=constraints,
    )
    dmp = DistributedModelParallel(model, device=ctx.device, plan=plan)
    for m in reinit:  # the same module objects: DMP replaces only the embedding modules
        m.reset_parameters()  # type: ignore[operator]  # checked by _reinit_plan
        if ctx.world_size > 1:
            # DMP's DDP broadcast rank 0's dense tensors before this re-initialisation, and the ranks'
            # RNGs drifted apart while each initialised its own shards: broadcast again.
            with torch.no_grad():
                for t in itertools.chain(m.parameters(), m.buffers()):
                    dist.broadcast(t.data, src=0)
    dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    dense = {n: p for n, p in dense.items() if p.requires_grad}
    return WrappedModel(
        model=dmp,
        dense_optimizer=dense_optimizer(dense),
        fused_optimizer=dmp.fused_optimizer,
        kind="dmp",
        plan=plan,
    )
