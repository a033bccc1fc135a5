"""The decoder LM: every preset's shapes and loss, RoPE, init and parameter groups."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

from research.configs import InitKind, LMConfig
from research.models.lm import LM, PRESETS, RotaryEmbedding


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(name: str) -> LMConfig:
    return replace(PRESETS[name], d_model=32, n_head=2, n_layer=2, block_size=16)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_gives_logits_and_a_finite_loss(name: str) -> None:
    torch.manual_seed(0)
    model = LM(_tiny(name))
    idx = torch.randint(0, 256, (2, 16))
    logits, loss = model(idx, torch.roll(idx, -1, dims=1))
    assert logits.shape == (2, 16, 256)
    assert loss is not None and 4.5 < float(loss.detach()) < 7.0  # ≈ ln 256 at init
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    logits_only, none = model(idx[:, :5])  # shorter sequences work, no targets no loss
    assert logits_only.shape == (2, 5, 256) and none is None


def test_causality() -> None:
    torch.manual_seed(0)
    model = LM(_tiny("dhc_x4")).eval()
    idx = torch.randint(0, 256, (1, 16))
    other = idx.clone()
    other[0, 10:] = (other[0, 10:] + 1) % 256
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0][:, :10], model(other)[0][:, :10])


def test_rope_rotates_pairs_and_preserves_norms() -> None:
    rope = RotaryEmbedding(4, 8, theta=10000.0)
    x = torch.randn(1, 8, 2, 4)
    y = rope(x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[:, 0], x[:, 0])  # position 0 is not rotated
    # pair (0, 2) at position 3 rotates by 3 rad (θ^0 = 1)
    c, s = math.cos(3.0), math.sin(3.0)
    torch.testing.assert_close(y[0, 3, 0, 0], x[0, 3, 0, 0] * c - x[0, 3, 0, 2] * s)


def test_megatron_init_scales_output_projections() -> None:
    torch.manual_seed(0)
    cfg = replace(LMConfig(d_model=256, n_head=4, n_layer=8), init=InitKind.MEGATRON)
    model = LM(cfg)
    up = model.blocks[0].mlp.up.weight.detach()
    out = model.blocks[0].attn.o_proj.weight.detach()
    assert abs(float(up.std()) - cfg.weight_std) < 0.1 * cfg.weight_std
    assert abs(float(out.std()) - cfg.weight_std / 4) < 0.1 * cfg.weight_std / 4  # std / √(2L), L = 8
    assert float(up.abs().max()) <= 3 * cfg.weight_std + 1e-6  # truncated at 3σ


def test_param_groups_cover_every_parameter_once() -> None:
    model = LM(_tiny("sdd"))
    decay, no_decay = model.param_groups(0.1)
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]  # type: ignore[attr-defined]  # lists of params
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert id(model.blocks[0].attn.q_proj.alpha) in {id(p) for p in no_decay["params"]}  # type: ignore[attr-defined]  # SDD α


def test_presets_are_keyed_by_the_papers_names() -> None:
    assert {"prenorm", "postnorm", "hybridnorm", "hybridnorm_star", "sdd", "dhc_x4", "dfc_x4", "oe", "ot"} <= set(PRESETS)
