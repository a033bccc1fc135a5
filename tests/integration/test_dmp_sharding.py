"""2-process TorchRec DMP on CPU (gloo on loopback, torch.multiprocessing spawn) with the real LMN:
(a) the plan spreads tables over both ranks, (b) the sharded forward equals the unsharded model's on
the same weights, (c) a 2-process Trainer run writes its metrics and sharded checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from recsys.train.cli import launch_training
from recsys.train.distributed import run_local_workers
from recsys.train.run_config import run_config_from_dict

pytestmark = pytest.mark.integration

MODEL: dict[str, Any] = {
    "kind": "lmn", "embedding": {"dim": 4}, "n_sub": 8, "k": 2, "d_key": 4, "d_value": 4,
    "attention_hidden": [8], "tower_hidden": [8],
}
# Forced placements: EC tables row-wise (both ranks hold rows), EBC tables table-wise (spread out).
SHARDING = {"lmn_memory": "row_wise", "item": "row_wise", "user": "table_wise", "hour": "table_wise",
            "device": "table_wise", "age_bucket": "table_wise", "gender": "table_wise", "activity": "table_wise"}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from feature_pipeline.build_config import BuildConfig
    from feature_pipeline.configs import WorldConfig
    from feature_pipeline.samples import build_samples
    from feature_pipeline.world import synth

    root = tmp_path_factory.mktemp("dmp")
    synth(WorldConfig(users=60, items=40, days=4, domains=2, categories=5, clusters=2, impressions_per_user_day=4.0),
          root / "logs", progress=False)
    build_samples(root / "logs", root / "samples", BuildConfig(seq_len=4, min_freq=1, row_group_size=256, progress=False))
    return root / "samples"


def _forward_worker(samples: str, out: str) -> None:
    """One rank: plan + shard the LMN, copy the unsharded weights in, compare forwards."""
    from recsys.configs import model_config_from_dict
    from recsys.tasks.ranking import RankingTask, RankingTaskConfig
    from recsys.train.configs import EmbeddingOptimizer
    from recsys.train.distributed import (
        init_distributed,
        load_full_state_dict,
        shutdown_distributed,
        wrap_model,
    )

    ctx = init_distributed(device="cpu", timeout_s=60)
    try:
        task = RankingTask(RankingTaskConfig(data_dir=samples, batch_size=32), model_config_from_dict(MODEL))
        torch.manual_seed(0)
        reference = task.build_model(device=torch.device("cpu")).eval()  # the same on both ranks
        wrapped = wrap_model(lambda d: task.build_model(device=d), ctx=ctx, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999),
                             embedding_optimizer=EmbeddingOptimizer.ROWWISE_ADAGRAD, embedding_lr=0.05, per_table=SHARDING)
        placements = {
            f"{path}.{name}": {"type": ps.sharding_type, "ranks": sorted(set(ps.ranks or []))}
            for path, module_plan in wrapped.plan.plan.items()
            for name, ps in module_plan.items()
        }
        # Dense replicas must start identical on every rank (DDP broadcast, plus the re-initialised
        # ParameterDict of LMN's CandidateSequenceView, which DMP cannot initialise from meta).
        dense_sums = {n: float(p.detach().double().sum()) for n, p in wrapped.dense_optimizer.params.items()}
        load_full_state_dict(wrapped.model, reference.state_dict())
        wrapped.model.eval()
        diffs = []
        with torch.no_grad():
            for batch in list(task.batches("valid", rank=ctx.rank, world_size=ctx.world_size, epoch=0))[:2]:
                got, want = wrapped.model(batch), reference(batch)
                diffs.append(float((got.logits - want.logits).abs().max()))
                for k in want.aux_losses:
                    diffs.append(float((got.aux_losses[k] - want.aux_losses[k]).abs()))
        Path(out, f"rank{ctx.rank}.json").write_text(json.dumps({"placements": placements, "diffs": diffs, "dense": dense_sums}))
    finally:
        shutdown_distributed(ctx)


def test_plan_spreads_tables_and_sharded_forward_equals_unsharded(samples: Path, tmp_path: Path) -> None:
    run_local_workers(_forward_worker, (str(samples), str(tmp_path)), workers=2)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["placements"] == r1["placements"]  # collective_plan: one plan for all ranks
    assert r0["dense"] == r1["dense"] and any("slots" in k for k in r0["dense"])
    by_table = {k.rsplit(".", 1)[-1]: v for k, v in r0["placements"].items()}  # "<module path>.<table>"
    # (a) row-wise EC tables live on both ranks; the table-wise EBC tables are spread over both ranks.
    assert by_table["lmn_memory"] == {"type": "row_wise", "ranks": [0, 1]}
    assert by_table["item"] == {"type": "row_wise", "ranks": [0, 1]}
    ebc = [v for t, v in by_table.items() if t in ("user", "hour", "device", "age_bucket", "gender", "activity")]
    assert all(v["type"] == "table_wise" and len(v["ranks"]) == 1 for v in ebc)
    assert {v["ranks"][0] for v in ebc} == {0, 1}
    # (b) the sharded LMN computes what the unsharded one does on the same weights.
    assert r0["diffs"] and r1["diffs"]
    assert max(r0["diffs"] + r1["diffs"]) < 1e-5


def test_two_process_training_writes_metrics(samples: Path, tmp_path: Path) -> None:
    run = run_config_from_dict({
        "task": {"kind": "ranking", "data_dir": str(samples), "batch_size": 32},
        "model": MODEL,
        "train": {"max_steps": 4, "warmup_steps": 1, "log_every": 2, "checkpoint_every": 2, "final_splits": ["test"],
                  "out_dir": str(tmp_path / "run"), "progress_bar": False, "tensorboard": False, "dist_timeout_s": 60,
                  "sharding": {"lmn_memory": "row_wise"}},
    })
    metrics = launch_training(run, workers=2)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4 and summary["samples"] == 4 * 2 * 32
    assert summary["metrics"] == pytest.approx(metrics, nan_ok=True)
    assert 0.0 <= metrics["test/click/auc"] <= 1.0 and not math.isnan(metrics["test/click/logloss"])
    latest = tmp_path / "run" / "checkpoints" / "step_00000004"
    assert sorted(p.name for p in latest.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert sorted(p.name for p in (latest / "rng").iterdir()) == ["rank_00000.json", "rank_00001.json"]
