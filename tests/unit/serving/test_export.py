"""Export: a DCP checkpoint (any key prefix) → an unsharded model → a package; no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file

from feature_pipeline.spec import FeatureSpec
from recsys.configs import DINConfig
from recsys.models.registry import build_model
from seedrec.errors import DataError
from serving.export import export_checkpoint, load_checkpoint_weights
from serving.package import verify_files

CFG = DINConfig(attention_hidden=(8,), tower_hidden=(8,))


@pytest.mark.parametrize("prefix", ["model.", "model._dmp_wrapped_module.", "module."])
def test_checkpoint_keys_are_mapped_by_prefix(samples: Path, tmp_path: Path, prefix: str) -> None:
    spec = FeatureSpec.load(samples)
    torch.manual_seed(1)
    trained = build_model(CFG, spec, device="cpu")
    dcp.save({prefix + k: v for k, v in trained.state_dict().items()}, checkpoint_id=str(tmp_path / "ckpt"))
    torch.manual_seed(2)
    fresh = build_model(CFG, spec, device="cpu")
    load_checkpoint_weights(tmp_path / "ckpt", fresh)
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0)


def test_a_checkpoint_of_another_model_is_refused(samples: Path, tmp_path: Path) -> None:
    dcp.save({"model.other.weight": torch.zeros(2)}, checkpoint_id=str(tmp_path / "ckpt"))
    with pytest.raises(DataError, match="no tensor for model keys"):
        load_checkpoint_weights(tmp_path / "ckpt", build_model(CFG, FeatureSpec.load(samples), device="cpu"))


def test_export_writes_a_verified_package(samples: Path, tmp_path: Path) -> None:
    spec = FeatureSpec.load(samples)
    model = build_model(CFG, spec, device="cpu")
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step_00000007"
    dcp.save({"model": dict(model.state_dict())}, checkpoint_id=str(ckpt))
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 7}))
    (run / "config.json").write_text(json.dumps({"task": {"kind": "ranking", "data_dir": str(samples)},
                                                 "model": {"kind": "din", "attention_hidden": [8], "tower_hidden": [8]}}))
    (run / "metrics.json").write_text(json.dumps({"metrics": {"test/click/auc": 0.61}, "steps": 7, "history": [1, 2]}))
    pkg = export_checkpoint(run, tmp_path / "repo")
    assert pkg == tmp_path / "repo" / "din" / "1"
    m = verify_files(pkg)
    assert m.kind == "din" and m.model_config["attention_hidden"] == [8] and m.source["step"] == 7
    assert m.metrics == {"test/click/auc": 0.61, "run/steps": 7}
    assert sorted(p.suffix for p in pkg.rglob("*") if p.is_file()) == [".json"] * (len(m.files)) + [".safetensors"]
    state = load_file(str(pkg / "model.safetensors"))
    assert set(state) == set(model.state_dict())
    assert export_checkpoint(ckpt, tmp_path / "repo", version="v2").name == "v2"  # a checkpoint folder works too
