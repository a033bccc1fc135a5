"""Tests of the experiment runner and report (recsys/experiments/): configs, summaries, one tiny run.

The smoke test builds a 150-user world and trains DIN, ADS and LMN for 2 steps each through the
real ``run_training`` path, with both sweeps reduced to the main runs' own settings (so they reuse
those runs), then writes the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.experiments.compare import render_markdown, verdict, write_report
from recsys.experiments.configs import ExperimentConfig, MovieLensDataConfig, SyntheticDataConfig
from recsys.experiments.runner import mean_std, run_experiments, summarize_main
from seedrec.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def _record(model: str, seed: int, auc: float, logloss: float) -> dict[str, object]:
    return {"study": "main", "dataset": "synthetic", "model": model, "seed": seed, "variant": "",
            "metrics": {"test/click/auc": auc, "test/click/gauc": auc, "test/click/logloss": logloss,
                        "test/click/auc/feed": auc},
            "samples_per_s": 100.0, "step_ms": 10.0, "train_time_s": 1.0, "wall_s": 1.0, "steps": 1,
            "batch_size": 8, "run_dir": "", "model_config": {}}


# ---- configs ----------------------------------------------------------------------------------------
def test_unknown_dataset_raises() -> None:
    with pytest.raises(ConfigError, match="`datasets`"):
        ExperimentConfig(datasets=("criteo",))


def test_unknown_model_raises() -> None:
    with pytest.raises(ConfigError, match="`models`"):
        ExperimentConfig(models=("din", "dien"))


def test_missing_baseline_raises() -> None:
    with pytest.raises(ConfigError, match="RelaImpr baseline"):
        ExperimentConfig(models=("ads", "lmn"))


def test_bad_seeds_raises() -> None:
    with pytest.raises(ConfigError, match="`seeds`"):
        ExperimentConfig(seeds=0)


def test_bad_sweep_values_raise() -> None:
    with pytest.raises(ConfigError, match="`memory_sizes`"):
        ExperimentConfig(memory_sizes=(0,))
    with pytest.raises(ConfigError, match="`chunk_counts`"):
        ExperimentConfig(chunk_counts=(2, -1))
    with pytest.raises(ConfigError, match="`memory_dataset`"):
        ExperimentConfig(memory_dataset="criteo")


def test_data_configs_raise() -> None:
    with pytest.raises(ConfigError, match="no training day"):
        SyntheticDataConfig(days=2)
    with pytest.raises(ConfigError, match="`valid_days`"):
        MovieLensDataConfig(valid_days=-1)


# ---- summaries --------------------------------------------------------------------------------------
def test_summarize_main_pairs_rela_impr_by_seed() -> None:
    records = [_record("din", 0, 0.60, 0.30), _record("din", 1, 0.70, 0.30),
               _record("ads", 0, 0.61, 0.27), _record("ads", 1, 0.72, 0.33)]
    rows = {r["model"]: r for r in summarize_main(records, "synthetic")}
    # seed 0: (0.11 / 0.10 − 1)·100 = 10; seed 1: (0.22 / 0.20 − 1)·100 = 10
    assert rows["ads"]["rela_impr_values"] == pytest.approx([10.0, 10.0])
    assert rows["ads"]["logloss_rel_mean"] == pytest.approx(0.0)
    assert rows["din"]["auc_mean"] == pytest.approx(0.65)
    assert rows["din"]["domains"]["feed"][0] == pytest.approx(0.65)


def test_mean_std_and_verdict() -> None:
    assert mean_std([1.0, 3.0]) == pytest.approx((2.0, 2**0.5))
    assert verdict([-0.2, 0.1, 0.05]).startswith("worse, not significant")
    assert verdict([0.01, 0.02], higher_is_better=False).startswith("worse")


# ---- a tiny end-to-end run ----------------------------------------------------------------------------
def test_run_experiments_smoke(tmp_path: Path) -> None:
    cfg = ExperimentConfig(
        datasets=("synthetic",),
        seeds=1,
        config_dir=str(REPO / "configs"),
        work_dir=str(tmp_path / "work"),
        synthetic=SyntheticDataConfig(users=150, items=60, days=3),
        memory_sizes=(64,),  # configs/lmn.yaml's n_sub: reuses the main LMN run
        memory_dataset="synthetic",
        chunk_counts=(None,),  # configs/ads.yaml's num_chunks: reuses the main ADS run
        chunk_dataset="synthetic",
        max_steps=2,
        overrides=("task.batch_size=64", "task.eval_batch_size=512"),
    )
    seen: list[str] = []
    results = run_experiments(cfg, on_record=lambda r: seen.append(r.model))
    assert seen == ["din", "ads", "lmn"]  # the sweeps reused the main runs: no extra training
    studies = sorted((r["study"], r["model"]) for r in results["records"])
    assert studies == [("chunks", "ads"), ("main", "ads"), ("main", "din"), ("main", "lmn"), ("memory", "lmn")]
    main = [r for r in results["records"] if r["study"] == "main"]
    assert all(r["steps"] == 2 and 0.0 <= r["metrics"]["test/click/auc"] <= 1.0 for r in main)
    assert 0.5 < results["datasets"]["synthetic"]["oracle"]["position_blind_auc"] <= 1.0

    md = write_report({**results, "argv": "test"}, tmp_path / "out")
    text = md.read_text()
    assert "| DIN |" in text and "RelaImpr" in text and "LMN memory scaling" in text
    assert (tmp_path / "out" / "lmn_memory_scaling.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "recsys.json").read_text())["records"]
    assert render_markdown(results, plots={}).startswith("# Offline results")
