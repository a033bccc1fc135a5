"""SDD linear layers: y = α ⊙ RMSNorm(Wx) by hand, its invariances, and the two variants' plans (spec §3)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from research.configs import LMConfig, SDDVariant
from research.models.lm import LM
from research.nn.norms import RMSNorm
from research.nn.sdd import SDDLinear, context_norm, make_projection, sdd_alpha_init, sdd_plan


def _by_hand(x: torch.Tensor, w: torch.Tensor, alpha: torch.Tensor, eps: float) -> torch.Tensor:
    z = x @ w.T
    return alpha * z / torch.sqrt((z * z).mean(-1, keepdim=True) + eps)


def test_forward_equals_alpha_times_rmsnorm_of_wx() -> None:
    torch.manual_seed(0)
    lin = SDDLinear(6, 5, eps=1e-6)
    with torch.no_grad():
        lin.alpha.copy_(torch.randn(5))
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(lin(x), _by_hand(x, lin.weight, lin.alpha, 1e-6))


def test_grouped_norm_with_shared_alpha_is_per_head() -> None:
    torch.manual_seed(0)
    lin = SDDLinear(6, 8, groups=4, shared_alpha=True, eps=1e-6)
    with torch.no_grad():
        lin.alpha.copy_(torch.randn(2))
    x = torch.randn(3, 6)
    heads = [(x @ lin.weight[2 * h : 2 * h + 2].T) for h in range(4)]
    expected = torch.cat([lin.alpha * z / torch.sqrt((z * z).mean(-1, keepdim=True) + 1e-6) for z in heads], dim=-1)
    torch.testing.assert_close(lin(x), expected)


def test_scale_invariance_decouples_scale_from_direction() -> None:
    torch.manual_seed(0)
    lin = SDDLinear(8, 4)
    x = torch.randn(5, 8)
    y = lin(x)
    with torch.no_grad():
        lin.weight.mul_(7.5)
    torch.testing.assert_close(lin(x), y, atol=1e-4, rtol=1e-4)  # SDD(cV, x) == SDD(V, x)


def test_output_rms_equals_alpha_at_init() -> None:
    lin = SDDLinear(16, 32)
    with torch.no_grad():
        lin.alpha.fill_(0.25)
    y = lin(torch.randn(64, 16))
    torch.testing.assert_close(y.pow(2).mean(-1).sqrt(), torch.full((64,), 0.25), atol=1e-4, rtol=1e-4)


def test_gradient_norm_is_preserved_at_init() -> None:
    """‖∂L/∂x‖ ≈ ‖∂L/∂y‖ for Gaussian inputs at init (SDD §3.2), within a loose tolerance."""
    torch.manual_seed(0)
    d = 256
    lin = SDDLinear(d, d)
    x = torch.randn(64, d, requires_grad=True)
    g = torch.randn(64, d)
    lin(x).backward(g)
    ratio = x.grad.norm() / g.norm()
    assert 0.3 < float(ratio) < 3.0


@pytest.mark.parametrize(
    ("variant", "role", "plan"),
    [
        (SDDVariant.PAPER, "q", (True, 1, False)),
        (SDDVariant.PAPER, "v", (True, 1, False)),
        (SDDVariant.PAPER, "up", (True, 2, False)),  # up and gate normalised apart
        (SDDVariant.CODE, "q", (True, 4, True)),  # per head, α shared by heads
        (SDDVariant.CODE, "v", (False, 1, False)),  # no v-norm in the code
        (SDDVariant.CODE, "up", (True, 1, False)),  # fused [up; gate]
        (SDDVariant.CODE, "down", (True, 1, False)),
    ],
)
def test_plans_per_variant(variant: SDDVariant, role: str, plan: tuple[bool, int, bool]) -> None:
    p = sdd_plan(variant, role, n_head=4, swiglu=True)  # type: ignore[arg-type]  # role is a ProjectionRole
    assert (p.normalised, p.groups, p.shared_alpha) == plan


def test_projection_factory_and_context_norm() -> None:
    code = LMConfig(linear="sdd", sdd_variant="code", d_model=32, n_head=4)
    assert isinstance(make_projection(32, 32, role="v", config=code), nn.Linear)
    assert isinstance(make_projection(32, 32, role="q", config=code), SDDLinear)
    assert isinstance(context_norm(code), RMSNorm)
    paper = LMConfig(linear="sdd", d_model=32, n_head=4)
    assert isinstance(make_projection(32, 32, role="v", config=paper), SDDLinear)
    assert isinstance(context_norm(paper), nn.Identity)
    assert isinstance(make_projection(32, 32, role="q", config=LMConfig(d_model=32, n_head=4)), nn.Linear)


@pytest.mark.parametrize(("variant", "out_alpha"), [("paper", 1 / math.sqrt(4)), ("code", 1 / math.sqrt(8))])
def test_alpha_init_in_the_model(variant: str, out_alpha: float) -> None:
    model = LM(LMConfig(vocab_size=32, block_size=8, n_layer=4, n_head=2, d_model=16, norm="post", linear="sdd", sdd_variant=variant))
    for block in model.blocks:
        torch.testing.assert_close(block.attn.o_proj.alpha, torch.full_like(block.attn.o_proj.alpha, out_alpha))
        torch.testing.assert_close(block.mlp.down.alpha, torch.full_like(block.mlp.down.alpha, out_alpha))
        assert torch.all(block.attn.q_proj.alpha == 1.0) and torch.all(block.mlp.up.alpha == 1.0)
    assert sdd_alpha_init(SDDVariant.PAPER, "q", 4) == 1.0


def test_sdd_weights_use_the_papers_std() -> None:
    torch.manual_seed(0)
    model = LM(LMConfig(vocab_size=32, block_size=8, n_layer=2, n_head=2, d_model=256, linear="sdd"))
    std = float(model.blocks[0].mlp.up.weight.detach().std())
    assert abs(std - 1 / math.sqrt(2.5 * 256)) < 0.003
