"""Runs the offline experiments of :class:`~recsys.experiments.configs.ExperimentConfig`.

Every training run goes through the same library path as ``seedrec train``
(:func:`recsys.train.run_config.load_run_config` on the YAML file, then
:func:`recsys.train.cli.run_training`), with these overrides on top of the config file:
``train.seed``, ``train.final_splits=[test]`` and nothing written but ``metrics.json`` / ``config.json``
(no checkpoints, no TensorBoard, no resume), plus the sweep's own key (``model.n_sub``,
``model.num_chunks``) and ``ExperimentConfig.overrides``.

Studies (``RunRecord.study``)::

    main     every (dataset, model, seed): DIN vs ADS vs LMN, RelaImpr vs DIN of the same seed
    memory   LMN at n = n_sub² for each n_sub of `memory_sizes`, seed 0 (the main run is reused
             when its n_sub is in the sweep)
    chunks   ADS at each `num_chunks` of `chunk_counts`, seed 0 (the main run reused for its value)

Layout under ``work_dir``::

    data/world, data/synthetic          the world's logs (+ world.json) and its samples
    data/movielens_logs, data/movielens MovieLens-100k as logs and samples
    runs/{study}/{dataset}/{name}/      one run folder per training run
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys.experiments.configs import ExperimentConfig
from recsys.metrics import auc, gauc, logloss, rela_impr
from seedrec.errors import ConfigError, DataError

__all__ = [
    "RunRecord",
    "config_file",
    "prepare_dataset",
    "oracle_metrics",
    "train_run",
    "run_experiments",
    "mean_std",
    "summarize_main",
]

logger = logging.getLogger(__name__)

_HEAD = "click"
_RUN_OVERRIDES = (
    "train.final_splits=[test]",
    "train.checkpoint_every=0",
    "train.save_final=false",
    "train.tensorboard=false",
    "train.progress_bar=false",
    "train.resume=never",
    "train.eval_every=0",
)


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One training run's identity and results.

    Attributes:
        study: ``main``, ``memory`` or ``chunks``.
        dataset: ``synthetic`` or ``movielens``.
        model: ``din``, ``ads`` or ``lmn``.
        seed: the training seed.
        variant: the sweep value (``"n_sub=256"``, ``"num_chunks=4"``) or ``""``.
        metrics: the run's final ``test/...`` metrics (click head and the others).
        samples_per_s: training throughput by the Trainer's step clock (batch loading included).
        step_ms: mean training step time.
        train_time_s: training time (steps only).
        wall_s: the whole run: set-up, training and the test evaluation.
        steps: optimizer steps taken.
        batch_size: training rows per step.
        run_dir: the run folder.
        model_config: the run's resolved ``model`` section (after overrides).
    """

    study: str
    dataset: str
    model: str
    seed: int
    variant: str
    metrics: dict[str, float]
    samples_per_s: float
    step_ms: float
    train_time_s: float
    wall_s: float
    steps: int
    batch_size: int
    run_dir: str
    model_config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def metric(self, name: str, *, split: str = "test", head: str = _HEAD) -> float:
        """``metrics[f"{split}/{head}/{name}"]`` (``nan`` when absent), e.g. ``metric("auc/feed")``."""
        return float(self.metrics.get(f"{split}/{head}/{name}", float("nan")))


# ---- data -------------------------------------------------------------------------------------
def config_file(cfg: ExperimentConfig, dataset: str, model: str) -> Path:
    """The YAML run file of ``model`` on ``dataset``.

    Raises:
        ConfigError: the file does not exist.
    """
    base = Path(cfg.config_dir)
    path = base / f"{model}.yaml" if dataset == "synthetic" else base / dataset / f"{model}.yaml"
    if not path.is_file():
        raise ConfigError(f"no run config {path} for model {model!r} on {dataset!r}; add it or change `config_dir`")
    return path


def _marker_matches(folder: Path, key: dict[str, Any]) -> bool:
    marker = folder / "experiment_data.json"
    return (folder / "feature_spec.json").is_file() and marker.is_file() and json.loads(marker.read_text()) == key


def prepare_dataset(cfg: ExperimentConfig, dataset: str) -> Path:
    """Builds (or reuses, when built by the same settings) the samples of ``dataset``.

    Returns:
        The samples folder (``feature_spec.json``, ``train/``, ``valid/``, ``test/``).
    """
    from feature_pipeline.build_config import BuildConfig
    from feature_pipeline.samples import build_samples

    root = Path(cfg.work_dir) / "data"
    samples = root / dataset
    if dataset == "synthetic":
        s = cfg.synthetic
        key = {"dataset": dataset, **dataclasses.asdict(s)}
        if _marker_matches(samples, key):
            return samples
        from feature_pipeline.configs import WorldConfig
        from feature_pipeline.world import synth

        logs = root / "world"
        shutil.rmtree(logs, ignore_errors=True)
        synth(WorldConfig(users=s.users, items=s.items, days=s.days, seed=s.seed), logs, progress=False)
        build = BuildConfig(seq_len=s.seq_len, valid_days=s.valid_days, test_days=s.test_days, min_freq=1, progress=False)
    elif dataset == "movielens":
        m = cfg.movielens
        key = {"dataset": dataset, **dataclasses.asdict(m)}
        if _marker_matches(samples, key):
            return samples
        from feature_pipeline.movielens import ingest_movielens

        logs = root / "movielens_logs"
        shutil.rmtree(logs, ignore_errors=True)
        ingest_movielens(logs)
        build = BuildConfig(seq_len=m.seq_len, valid_days=m.valid_days, test_days=m.test_days, min_freq=1, progress=False)
    else:
        raise ConfigError(f"unknown data set {dataset!r}")
    build_samples(logs, samples, build)
    (samples / "experiment_data.json").write_text(json.dumps(key))
    return samples


def split_stats(samples: Path) -> dict[str, Any]:
    """Rows, click rate and mean history length of each split (from ``feature_spec.json``)."""
    from feature_pipeline.spec import FeatureSpec

    stats = FeatureSpec.load(samples).stats
    out: dict[str, Any] = {}
    for split in ("train", "valid", "test"):
        s = stats.get(split)
        if isinstance(s, dict) and "rows" in s:
            out[split] = {k: s[k] for k in ("rows", "click_rate", "mean_hist_len", "days") if k in s}
            if isinstance(out[split].get("days"), list):
                out[split]["days"] = len(out[split]["days"])
    return out


def oracle_metrics(world_dir: Path, samples: Path, *, split: str = "test") -> dict[str, float]:
    """The synthetic world's ground-truth click probabilities scored on ``split``'s rows.

    ``position``-aware: the true p_click (with the examination bias of the slot it was shown in).
    ``position_blind``: the same at position 0 — the ceiling of a model that, like ours, does not
    see the position. ``position_only``: the AUC of −position alone.
    """
    import pyarrow.parquet as pq

    from feature_pipeline.world import World

    world = World.load(world_dir)
    files = sorted((samples / split).glob("*.parquet"))
    if not files:
        raise DataError(f"{samples / split}: no parquet files to score the oracle on")
    cols = ["user_id", "domain", "ts", "item_id", "position", "click"]
    t = pq.read_table(files[0], columns=cols) if len(files) == 1 else None
    if t is None:
        import pyarrow as pa

        t = pa.concat_tables([pq.read_table(f, columns=cols) for f in files])
    user = t.column("user_id").to_numpy()
    domain = np.asarray(t.column("domain").to_pylist(), dtype=str)
    ts = t.column("ts").cast("int64").to_numpy() // 1000  # ms → s
    item = t.column("item_id").to_numpy()[:, None]
    pos = t.column("position").to_numpy()[:, None]
    y = t.column("click").to_numpy()
    p = world.click_prob(user, domain, ts, item, pos)[:, 0]
    p0 = world.click_prob(user, domain, ts, item, np.zeros_like(pos))[:, 0]
    return {
        "position_aware_auc": auc(y, p),
        "position_aware_gauc": gauc(y, p, user),
        "position_aware_logloss": logloss(y, p),
        "position_blind_auc": auc(y, p0),
        "position_blind_gauc": gauc(y, p0, user),
        "position_only_auc": auc(y, -pos[:, 0].astype(np.float64)),
    }


# ---- training ---------------------------------------------------------------------------------
def train_run(
    config: Path,
    samples: Path,
    *,
    out: Path,
    seed: int,
    overrides: Sequence[str] = (),
    threads: int = 1,
    max_steps: int | None = None,
    study: str = "main",
    dataset: str = "",
    variant: str = "",
) -> RunRecord:
    """Trains ``config`` on ``samples`` into a fresh ``out`` via ``run_training``.

    Raises:
        ConfigError: an invalid config or override.
        DataError: the run wrote no ``metrics.json``.
    """
    from recsys.train.cli import run_training
    from recsys.train.run_config import load_run_config

    shutil.rmtree(out, ignore_errors=True)
    steps = [f"train.max_steps={max_steps}", "train.epochs=null", f"train.warmup_steps={min(2, max_steps)}"] if max_steps else []
    run = load_run_config(config, [
        f"task.data_dir={samples}", f"train.out_dir={out}", f"train.seed={seed}", *_RUN_OVERRIDES, *steps, *overrides,
    ])
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    run_training(run)
    wall = time.perf_counter() - t0
    summary_file = out / "metrics.json"
    if not summary_file.is_file():
        raise DataError(f"{out}: the run wrote no metrics.json")
    summary = json.loads(summary_file.read_text())
    n_steps = int(summary["steps"])
    record = RunRecord(
        study=study,
        dataset=dataset,
        model=str(run.model.get("kind")),
        seed=seed,
        variant=variant,
        metrics={k: float(v) for k, v in summary["metrics"].items()},
        samples_per_s=float(summary["samples_per_s"]),
        step_ms=1000.0 * float(summary["train_time_s"]) / max(n_steps, 1),
        train_time_s=float(summary["train_time_s"]),
        wall_s=wall,
        steps=n_steps,
        batch_size=int(run.task.get("batch_size", 0)),
        run_dir=str(out),
        model_config=_jsonable(dict(run.model)),
    )
    logger.info("%s %s %s seed %s %s: test AUC %.4f, %.0f samples/s, %.0f s", study, dataset, record.model, seed,
                variant, record.metric("auc"), record.samples_per_s, wall)
    return record


def run_experiments(
    cfg: ExperimentConfig,
    *,
    on_record: Callable[[RunRecord], None] | None = None,
) -> dict[str, Any]:
    """Builds the data and runs every study of ``cfg``.

    Args:
        cfg: what to run.
        on_record: called after each run (e.g. to checkpoint partial results).

    Returns:
        A JSON-able dict: ``config``, ``datasets`` (split stats, the synthetic oracle),
        ``records`` (every :class:`RunRecord` as a dict), ``wall_s``.
    """
    t0 = time.perf_counter()
    wanted = list(dict.fromkeys([*cfg.datasets,
                                 *([cfg.memory_dataset] if cfg.memory_sizes and "lmn" in cfg.models else []),
                                 *([cfg.chunk_dataset] if cfg.chunk_counts and "ads" in cfg.models else [])]))
    data: dict[str, Path] = {}
    info: dict[str, Any] = {}
    for name in wanted:
        t = time.perf_counter()
        data[name] = prepare_dataset(cfg, name)
        info[name] = {"samples": str(data[name]), "splits": split_stats(data[name]), "build_s": time.perf_counter() - t}
        if name == "synthetic":
            info[name]["oracle"] = oracle_metrics(Path(cfg.work_dir) / "data" / "world", data[name])
    runs = Path(cfg.work_dir) / "runs"
    records: list[RunRecord] = []

    def train(study: str, dataset: str, model: str, seed: int, variant: str, overrides: Iterable[str]) -> RunRecord:
        name = f"{model}_s{seed}" + (f"_{variant.replace('=', '')}" if variant else "")
        record = train_run(config_file(cfg, dataset, model), data[dataset], out=runs / study / dataset / name, seed=seed,
                           overrides=[*overrides, *cfg.overrides], threads=cfg.threads, max_steps=cfg.max_steps,
                           study=study, dataset=dataset, variant=variant)
        records.append(record)
        if on_record is not None:
            on_record(record)
        return record

    main: dict[tuple[str, str, int], RunRecord] = {}
    for dataset in cfg.datasets:
        for seed in range(cfg.seeds):
            for model in cfg.models:
                main[(dataset, model, seed)] = train("main", dataset, model, seed, "", ())

    if "lmn" in cfg.models:
        base = _model_section(config_file(cfg, cfg.memory_dataset, "lmn"))
        for n_sub in cfg.memory_sizes:
            k = min(int(base.get("k", 32)), n_sub)
            reuse = main.get((cfg.memory_dataset, "lmn", 0))
            if reuse is not None and base.get("n_sub") == n_sub and base.get("k") == k:
                records.append(dataclasses.replace(reuse, study="memory", variant=f"n_sub={n_sub}"))
                continue
            train("memory", cfg.memory_dataset, "lmn", 0, f"n_sub={n_sub}", (f"model.n_sub={n_sub}", f"model.k={k}"))

    if "ads" in cfg.models:
        base = _model_section(config_file(cfg, cfg.chunk_dataset, "ads"))
        for chunks in cfg.chunk_counts:
            label = f"num_chunks={'null' if chunks is None else chunks}"
            reuse = main.get((cfg.chunk_dataset, "ads", 0))
            if reuse is not None and base.get("num_chunks") == chunks:
                records.append(dataclasses.replace(reuse, study="chunks", variant=label))
                continue
            train("chunks", cfg.chunk_dataset, "ads", 0, label, (f"model.{label}",))

    return {
        "config": _jsonable(dataclasses.asdict(cfg)),
        "datasets": info,
        "records": [dataclasses.asdict(r) for r in records],
        "wall_s": time.perf_counter() - t0,
        "torch": torch.__version__,
    }


def _model_section(path: Path) -> dict[str, Any]:
    from recsys.train.run_config import load_run_config

    return dict(load_run_config(path).model)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


# ---- summaries --------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; ``nan`` for fewer than two values).

    Example:
        >>> mean_std([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def summarize_main(records: Sequence[dict[str, Any]], dataset: str, *, baseline: str = "din") -> list[dict[str, Any]]:
    """Per model of the main study on ``dataset``: mean ± std over seeds of the click-head metrics,
    throughput, and RelaImpr vs ``baseline`` computed per seed against the baseline's run of that seed.

    Args:
        records: :class:`RunRecord` dicts (as in ``run_experiments(...)["records"]``).
        dataset: the data set to summarise.
        baseline: the RelaImpr baseline model.

    Returns:
        One dict per model, in first-seen order: ``model``, ``n``, ``{auc,gauc,logloss}_{mean,std}``,
        ``rela_impr_{mean,std}``, ``logloss_rel_{mean,std}`` (% change vs the baseline, negative =
        better), ``samples_per_s_mean``, ``step_ms_mean``, ``domains`` ({domain: (mean, std)}).
    """
    rows = [r for r in records if r["study"] == "main" and r["dataset"] == dataset]
    base = {r["seed"]: r for r in rows if r["model"] == baseline}
    out: list[dict[str, Any]] = []
    for model in dict.fromkeys(r["model"] for r in rows):
        runs = sorted((r for r in rows if r["model"] == model), key=lambda r: r["seed"])

        def m(r: dict[str, Any], name: str) -> float:
            return float(r["metrics"].get(f"test/{_HEAD}/{name}", float("nan")))

        row: dict[str, Any] = {"model": model, "n": len(runs), "seeds": [r["seed"] for r in runs]}
        for name in ("auc", "gauc", "logloss"):
            row[f"{name}_mean"], row[f"{name}_std"] = mean_std([m(r, name) for r in runs])
            row[f"{name}_values"] = [m(r, name) for r in runs]
        paired = [r for r in runs if r["seed"] in base]
        rela = [rela_impr(m(r, "auc"), base_auc=m(base[r["seed"]], "auc")) for r in paired]
        ll_rel = [100.0 * (m(r, "logloss") / m(base[r["seed"]], "logloss") - 1.0) for r in paired]
        row["rela_impr_mean"], row["rela_impr_std"] = mean_std(rela)
        row["rela_impr_values"] = rela
        row["logloss_rel_mean"], row["logloss_rel_std"] = mean_std(ll_rel)
        row["samples_per_s_mean"] = mean_std([r["samples_per_s"] for r in runs])[0]
        row["step_ms_mean"] = mean_std([r["step_ms"] for r in runs])[0]
        prefix = f"test/{_HEAD}/auc/"
        domains = sorted({k[len(prefix):] for r in runs for k in r["metrics"] if k.startswith(prefix)})
        row["domains"] = {d: mean_std([float(r["metrics"].get(prefix + d, math.nan)) for r in runs]) for d in domains}
        out.append(row)
    return out
