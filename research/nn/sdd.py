"""Scale-Distribution Decoupling (SDD): every projection becomes ``y = α ⊙ RMSNorm(V x)``.

Paper: "Scale-Distribution Decoupling: Enabling Stable and Effective Training of Large Language
Models", arXiv 2502.15499. Official code: github.com/kaihemo/SDD (``dense/olmo/model.py``).
Spec: ``shared/specs/llm-blocks.md`` §3.2 (paper) and §3.3 (code).

``norm(z) = z / sqrt(mean(z²) + eps)`` (RMS, the paper's ‖z‖ = sqrt(Σz²/n)); α is the RMSNorm's
affine weight, so the README's drop-in (Linear then ``nn.RMSNorm(eps=1e-6)``) is exactly this.

Which projections are normalised, and α's init (``L`` = number of blocks)::

    role   paper (§3.2)                          code (§3.3, variant "code")
    q      SDD over D,  α = 1                    SDD per head over Dh, α (Dh,) shared by heads
    k      SDD over D,  α = 1                    SDD per head over Dh, α (Dh,) shared by heads
    v      SDD over D,  α = 1                    plain Linear (no v-norm)
    o      SDD over D,  α = 1/√L                 RMSNorm(D) on the context first, then SDD, α = 1/√(2L)
    up     SDD, up and gate normalised apart     SDD over the fused [up; gate] (2·hidden), α = 1
    down   SDD over D,  α = 1/√L                 SDD over D, α = 1/√(2L)

Both variants use the same weight std ``1/√(2.5 D)`` (the paper's); the run.sh value 10× smaller
is available through ``LMConfig.init_std``. The paper uses SDD with Post-Norm; the code's block
(``x = norm(x); x = x + F(x)``) equals Post-Norm plus a norm on the embedding, which we do not add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from research.configs import LinearKind, LMConfig, MLPKind, SDDVariant
from research.nn.norms import RMSNorm, rms_norm

__all__ = ["ProjectionRole", "SDDLinear", "SDDPlan", "context_norm", "make_projection", "sdd_alpha_init", "sdd_plan"]

#: The projections of a block: attention q, k, v, o and the FFN's up(+gate) and down.
ProjectionRole = Literal["q", "k", "v", "o", "up", "down"]


class SDDLinear(nn.Module):
    """``y = α ⊙ RMSNorm(V x)``, the norm taken over ``groups`` equal chunks of the output.

    Args:
        d_in: input width.
        d_out: output width; divisible by ``groups``.
        groups: chunks normalised separately (1: the whole output; ``H``: per head; 2: up and gate).
        shared_alpha: one α of size ``d_out / groups`` shared by every chunk (the code's per-head
            q/k norm); else α has size ``d_out``.
        eps: RMSNorm epsilon.

    Example:
        >>> lin = SDDLinear(8, 4)
        >>> y = lin(torch.randn(3, 8))
        >>> torch.allclose(y.pow(2).mean(-1), torch.ones(3), atol=1e-4)  # RMS = |α| = 1
        True
    """

    def __init__(self, d_in: int, d_out: int, *, groups: int = 1, shared_alpha: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        if d_out % groups:
            raise ValueError(f"`d_out` ({d_out}) must be divisible by `groups` ({groups})")
        self.d_in, self.d_out, self.groups, self.shared_alpha, self.eps = d_in, d_out, groups, shared_alpha, eps
        self.weight = nn.Parameter(torch.empty(d_out, d_in))  # V
        self.alpha = nn.Parameter(torch.ones(d_out // groups if shared_alpha else d_out))  # α
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """V ~ N(0, 1/(2.5 d_in)), α = 1 (the model's ``_init_weights`` then applies the paper's init)."""
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(2.5 * self.d_in))
        self.alpha.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., d_in) -> (..., d_out)."""
        z = F.linear(x, self.weight)  # (..., d_out)
        z = z.unflatten(-1, (self.groups, self.d_out // self.groups))  # (..., G, d_out/G)
        alpha = self.alpha if self.shared_alpha else self.alpha.view(self.groups, -1)  # (d_out/G,) or (G, d_out/G)
        return rms_norm(z, alpha, self.eps).flatten(-2)  # (..., d_out)

    def extra_repr(self) -> str:
        return f"{self.d_in}, {self.d_out}, groups={self.groups}, shared_alpha={self.shared_alpha}, eps={self.eps}"


@dataclass(frozen=True)
class SDDPlan:
    """How one projection is built under SDD: normalised or not, its chunks and α's sharing."""

    normalised: bool
    groups: int = 1
    shared_alpha: bool = False


def sdd_plan(variant: SDDVariant, role: ProjectionRole, *, n_head: int, swiglu: bool) -> SDDPlan:
    """The SDD treatment of ``role`` under ``variant`` (the table in the module docstring)."""
    if variant is SDDVariant.PAPER:
        return SDDPlan(True, groups=2 if (role == "up" and swiglu) else 1)
    if role in ("q", "k"):
        return SDDPlan(True, groups=n_head, shared_alpha=True)
    if role == "v":
        return SDDPlan(False)
    return SDDPlan(True)


def sdd_alpha_init(variant: SDDVariant, role: ProjectionRole, n_layer: int) -> float:
    """α's initial value: 1/√L (paper) or 1/√(2L) (code) on the o and down projections, 1 elsewhere."""
    if role not in ("o", "down"):
        return 1.0
    return 1.0 / math.sqrt(n_layer if variant is SDDVariant.PAPER else 2 * n_layer)


def make_projection(d_in: int, d_out: int, *, role: ProjectionRole, config: LMConfig) -> nn.Module:
    """A bias-free ``nn.Linear`` or an :class:`SDDLinear` for ``role``, as ``config.linear`` selects."""
    if config.linear is LinearKind.DENSE:
        return nn.Linear(d_in, d_out, bias=False)
    plan = sdd_plan(config.sdd_variant, role, n_head=config.n_head, swiglu=config.mlp is MLPKind.SWIGLU)
    if not plan.normalised:
        return nn.Linear(d_in, d_out, bias=False)
    return SDDLinear(d_in, d_out, groups=plan.groups, shared_alpha=plan.shared_alpha, eps=config.sdd_eps)


def context_norm(config: LMConfig) -> nn.Module:
    """The code variant's ``context_norm``: RMSNorm(D) on the attention context before ``o``; else identity."""
    if config.linear is LinearKind.SDD and config.sdd_variant is SDDVariant.CODE:
        return RMSNorm(config.d_model, eps=config.sdd_eps)
    return nn.Identity()
