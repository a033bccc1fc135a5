"""RMSNorm and the norm placements Pre-Norm, Post-Norm, HybridNorm and HybridNorm*.

Paper: Zhuo et al., "HybridNorm: Towards Stable and Efficient Transformer Training via Hybrid
Normalization", arXiv 2503.04598 (NeurIPS 2025). Spec: ``shared/specs/llm-blocks.md`` §2.2-2.3.

A block has two sub-layers F (attention, then FFN). Each placement wraps them as follows
(Eq. 6-7 and the Pre/Post definitions of §2.2)::

    placement      attention sub-layer                FFN sub-layer                  QKV-norm
    pre            X + F(Norm(X))                     Y + F(Norm(Y))                 no
    post           Norm(X + F(X))                     Norm(Y + F(Y))                 no
    hybrid         X + F_QKV(X)                       Norm(Y) + F(Norm(Y))           yes
    hybrid_star    block 0: X + F_QKV(Norm(X)), Y + F(Norm(Y)); other blocks: hybrid

``F_QKV`` is attention with a per-head RMSNorm on q, k and v before RoPE (lives in the model's
attention). Every placement ends with a final ``ln_f`` before the tied head, as both official
codebases do; for Post-Norm it re-normalises an already normalised stream (harmless).

Norm is RMSNorm with an affine weight (App. B.5: LayerNorm is equivalent up to constants). Not
implemented: the 7B run's extra norm on the attention output (off in the released configs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from research.configs import NormPlacement, SublayerForm

__all__ = ["BlockForms", "RMSNorm", "Sublayer", "block_forms", "rms_norm"]


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``x / sqrt(mean(x², -1) + eps) ⊙ weight`` over the last dimension, computed in fp32."""
    dtype = x.dtype
    x32 = x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    return y.to(dtype)


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learnable per-feature weight (initialised to 1).

    Args:
        dim: size of the normalised (last) dimension.
        eps: added to the mean square.

    Example:
        >>> norm = RMSNorm(4)
        >>> norm(torch.tensor([[2.0, -2.0, 2.0, -2.0]])).round(decimals=4).tolist()
        [[1.0, -1.0, 1.0, -1.0]]
    """

    def __init__(self, dim: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., dim) -> (..., dim)."""
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


@dataclass(frozen=True)
class BlockForms:
    """How block ``l`` wraps its two sub-layers, and whether its attention normalises q, k, v."""

    attn: SublayerForm
    ffn: SublayerForm
    qkv_norm: bool


def block_forms(placement: NormPlacement, layer_idx: int) -> BlockForms:
    """The sub-layer forms of block ``layer_idx`` under ``placement`` (the table in the module docstring)."""
    if placement is NormPlacement.PRE:
        return BlockForms(SublayerForm.PRE, SublayerForm.PRE, qkv_norm=False)
    if placement is NormPlacement.POST:
        return BlockForms(SublayerForm.POST, SublayerForm.POST, qkv_norm=False)
    if placement is NormPlacement.HYBRID_STAR and layer_idx == 0:
        # Eq. 7: Y⁰ = MHA_QKV(Norm(X⁰)) + X⁰;  X¹ = FFN(Norm(Y⁰)) + Y⁰
        return BlockForms(SublayerForm.PRE, SublayerForm.PRE, qkv_norm=True)
    # Eq. 6: Y = MHA_QKV(X) + X;  X' = FFN(Norm(Y)) + Norm(Y)
    return BlockForms(SublayerForm.PLAIN, SublayerForm.NORM_RESIDUAL, qkv_norm=True)


class Sublayer(nn.Module):
    """Wraps a sub-layer ``F`` with its norm and residual according to ``form``.

    ``forward(x, fn)`` returns the residual stream after the sub-layer; ``branch(x, fn)`` returns
    only ``F(Norm(x))`` (the Pre-Norm branch that hyper-/frac-connections mix themselves).

    Args:
        form: one of :class:`~research.configs.SublayerForm`.
        dim: width ``D``.
        eps: RMSNorm epsilon.

    Example:
        >>> sub = Sublayer(SublayerForm.NORM_RESIDUAL, 4)
        >>> x = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
        >>> sub(x, lambda z: torch.zeros_like(z)).round(decimals=4).tolist()  # Norm(x) + 0
        [[1.0, -1.0, 1.0, -1.0]]
    """

    def __init__(self, form: SublayerForm, dim: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.form = form
        self.norm: nn.Module = nn.Identity() if form is SublayerForm.PLAIN else RMSNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        if self.form is SublayerForm.PRE:
            return x + fn(self.norm(x))  # X + F(Norm(X))
        if self.form is SublayerForm.POST:
            return self.norm(x + fn(x))  # Norm(X + F(X))
        if self.form is SublayerForm.NORM_RESIDUAL:
            z = self.norm(x)
            return z + fn(z)  # Norm(Y) + F(Norm(Y))
        return x + fn(x)  # X + F(X)

    def branch(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``F(Norm(x))``: the layer T of a hyper-/frac-connection, "including its pre-norm" (§4.2)."""
        return fn(self.norm(x))
