"""Hyper-Connections (n residual streams) and Frac-Connections (m hidden-state fractions).

Papers: Zhu et al., "Hyper-Connections", arXiv 2409.19606 (ICLR 2025), Eq. 1-14 and App. J
Alg. 2/3; Zhu et al., "Frac-Connections: Fractional Extension of Hyper-Connections", arXiv
2503.14125, Eq. 8-15 and App. A Alg. 2. Spec: ``shared/specs/llm-blocks.md`` §4.2 and §4.4.
Numerical peer for HC (not FC, §4.6): PyPI ``hyper-connections`` (lucidrains), see the tests.

One module wraps one sub-layer ``T`` (attention or FFN, *including its pre-norm*)::

    HC  (H: n×D streams)      HC = [[0, B], [A_m, A_r]] ∈ R^{(n+1)×(n+1)}
        h₀ = A_mᵀ H   ;   Ĥ = Bᵀ T(h₀) + A_rᵀ H                                    (Eq. 2-5)
    FC  (H = reshape(h, (m, D/m)))      FC = [[0, B], [Y, A]] ∈ R^{(m+1)×2m}
        h₀ = reshape(Yᵀ H, D) ;   Ĥ = Bᵀ reshape(T(h₀), (m, D/m)) + Aᵀ H      (Eq. 8, Alg. 1)

Both store ``static_alpha`` = [A_m | A_r] (n×(n+1)) or [Y | A] (m×2m) and ``static_beta`` = B, so
``mix = alphaᵀ H`` gives the branch input(s) and the carried residual in one contraction (Alg. 2).
Dynamic versions add ``s_α tanh(H̄ W_α)`` and ``s_β tanh(H̄ W_β)`` with ``H̄ = norm(H)`` per stream
or fraction (Eq. 10-13 / 11-14); ``W`` start at 0 and ``s_α = s_β = 0.01`` are learnable scalars.

Init (Eq. 14 / 15): HC ``B = 1``, ``A_m = e_{k mod n}`` with ``k`` the module's index (attention of
block l is ``2l``, its FFN ``2l+1``, as lucidrains' per-module ``layer_index``), ``A_r = I``; FC
``B = 1``, ``Y = A = I``. Both equal a Pre-Norm residual at init. Static parts take no weight
decay, dynamic ``W`` do (:data:`NO_WEIGHT_DECAY`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from research.configs import ConnectionNorm
from research.nn.norms import RMSNorm

__all__ = ["FracConnection", "HyperConnection", "NO_WEIGHT_DECAY", "expand_streams", "reduce_streams"]

#: Parameter names of connection modules that take no weight decay (HC §4 "Implementation").
NO_WEIGHT_DECAY: frozenset[str] = frozenset({"static_alpha", "static_beta", "dynamic_alpha_scale", "dynamic_beta_scale"})

_DYNAMIC_SCALE_INIT = 0.01  # s_α = s_β = 0.01 (HC Alg. 2, FC Alg. 2)


def _connection_norm(kind: ConnectionNorm, dim: int, eps: float) -> nn.Module:
    return nn.LayerNorm(dim, eps=eps) if kind is ConnectionNorm.LAYERNORM else RMSNorm(dim, eps=eps)


def expand_streams(h: torch.Tensor, n: int) -> torch.Tensor:
    """``H⁰ = (h⁰ … h⁰)ᵀ``: (B, T, D) -> (B, T, n, D) (n copies of the embedding)."""
    return h.unsqueeze(-2).expand(*h.shape[:-1], n, h.shape[-1]).contiguous()  # (B, T, n, D)


def reduce_streams(hs: torch.Tensor) -> torch.Tensor:
    """The sum of the rows of ``H^L``: (B, T, n, D) -> (B, T, D)."""
    return hs.sum(dim=-2)  # (B, T, D)


class HyperConnection(nn.Module):
    """One hyper-connection of expansion rate ``n`` around a sub-layer (HC Alg. 2).

    Args:
        dim: width ``D``.
        rate: expansion rate ``n``.
        layer_id: the module index ``k``; ``A_m`` starts as ``e_{k mod n}``.
        dynamic: DHC (Eq. 10-13) rather than SHC.
        norm: the norm ``H̄ = norm(H)`` of DHC (LayerNorm in the paper).
        eps: that norm's epsilon.

    Example:
        >>> hc = HyperConnection(8, 2, layer_id=0)
        >>> H = torch.randn(1, 3, 2, 8)
        >>> hc(H, lambda h: torch.zeros_like(h)).shape  # (B, T, n, D)
        torch.Size([1, 3, 2, 8])
    """

    def __init__(
        self,
        dim: int,
        rate: int,
        *,
        layer_id: int,
        dynamic: bool = True,
        norm: ConnectionNorm = ConnectionNorm.LAYERNORM,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.dim, self.rate, self.layer_id, self.dynamic = dim, rate, layer_id, dynamic
        n = rate
        self.static_beta = nn.Parameter(torch.empty(n))  # B ∈ R^{1×n}
        self.static_alpha = nn.Parameter(torch.empty(n, n + 1))  # [A_m | A_r] ∈ R^{n×(n+1)}
        if dynamic:
            self.norm = _connection_norm(norm, dim, eps)
            self.dynamic_alpha_fn = nn.Parameter(torch.empty(dim, n + 1))  # [W_m | W_r]
            self.dynamic_alpha_scale = nn.Parameter(torch.empty(()))  # s_α
            self.dynamic_beta_fn = nn.Parameter(torch.empty(dim))  # W_β
            self.dynamic_beta_scale = nn.Parameter(torch.empty(()))  # s_β
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Eq. 14: ``B = 1``, ``A_m = e_{k mod n}``, ``A_r = I_n``, ``W = 0``, ``s = 0.01``."""
        n = self.rate
        self.static_beta.fill_(1.0)
        self.static_alpha.zero_()
        self.static_alpha[self.layer_id % n, 0] = 1.0
        self.static_alpha[:, 1:] = torch.eye(n)
        if self.dynamic:
            self.dynamic_alpha_fn.zero_()
            self.dynamic_beta_fn.zero_()
            self.dynamic_alpha_scale.fill_(_DYNAMIC_SCALE_INIT)
            self.dynamic_beta_scale.fill_(_DYNAMIC_SCALE_INIT)

    def width_connection(self, hs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixes the streams: ``mix = alphaᵀ H``.

        Args:
            hs: the streams ``H``, (B, T, n, D).

        Returns:
            ``mix`` (B, T, n+1, D): row 0 is the branch input ``h₀ = A_mᵀ H``, rows 1..n are
            ``H' = A_rᵀ H``; and ``beta`` (B, T, n) (dynamic) or (n,) (static).
        """
        if self.dynamic:
            normed = self.norm(hs)  # H̄: (B, T, n, D)
            alpha = self.dynamic_alpha_scale * torch.tanh(normed @ self.dynamic_alpha_fn) + self.static_alpha  # (B, T, n, n+1)
            beta = self.dynamic_beta_scale * torch.tanh(normed @ self.dynamic_beta_fn) + self.static_beta  # (B, T, n)
        else:
            alpha, beta = self.static_alpha, self.static_beta  # (n, n+1), (n,)
        mix = torch.einsum("...st,...sd->...td", alpha, hs)  # (B, T, n+1, D)
        return mix, beta

    def depth_connection(self, mix: torch.Tensor, out: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """``Ĥ = Bᵀ T(h₀) + H'``: out (B, T, D), mix (B, T, n+1, D) -> (B, T, n, D)."""
        return beta.unsqueeze(-1) * out.unsqueeze(-2) + mix[..., 1:, :]  # (B, T, n, D)

    def forward(self, hs: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """hs: (B, T, n, D) -> (B, T, n, D); ``branch`` maps (B, T, D) -> (B, T, D)."""
        mix, beta = self.width_connection(hs)
        out = branch(mix[..., 0, :])  # T(h₀): (B, T, D)
        return self.depth_connection(mix, out, beta)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rate={self.rate}, layer_id={self.layer_id}, dynamic={self.dynamic}"


class FracConnection(nn.Module):
    """One frac-connection of frac rate ``m`` around a sub-layer (FC Alg. 2).

    The hidden state keeps its width ``D``; it is viewed as ``m`` fractions of width ``D/m``.

    Args:
        dim: width ``D``; divisible by ``rate``.
        rate: frac rate ``m``.
        dynamic: DFC (Eq. 11-14) rather than SFC.
        norm: the norm of DFC over each fraction (LayerNorm(D/m) in Alg. 2).
        eps: that norm's epsilon.

    Example:
        >>> fc = FracConnection(8, 4)
        >>> h = torch.randn(2, 3, 8)
        >>> torch.equal(fc(h, lambda x: torch.zeros_like(x)), h)  # identity residual at init
        True
    """

    def __init__(
        self,
        dim: int,
        rate: int,
        *,
        dynamic: bool = True,
        norm: ConnectionNorm = ConnectionNorm.LAYERNORM,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if dim % rate:
            raise ValueError(f"`dim` ({dim}) must be divisible by `rate` ({rate})")
        self.dim, self.rate, self.dynamic = dim, rate, dynamic
        m, df = rate, dim // rate
        self.static_beta = nn.Parameter(torch.empty(m))  # B ∈ R^{1×m}
        self.static_alpha = nn.Parameter(torch.empty(m, 2 * m))  # [Y | A] ∈ R^{m×2m}
        if dynamic:
            self.norm = _connection_norm(norm, df, eps)
            self.dynamic_alpha_fn = nn.Parameter(torch.empty(df, 2 * m))  # [W_γ | W_α]
            self.dynamic_alpha_scale = nn.Parameter(torch.empty(()))  # s_α
            self.dynamic_beta_fn = nn.Parameter(torch.empty(df))  # W_β
            self.dynamic_beta_scale = nn.Parameter(torch.empty(()))  # s_β
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Eq. 15: ``B = 1``, ``Y = A = I_m``, ``W = 0``, ``s = 0.01``."""
        m = self.rate
        self.static_beta.fill_(1.0)
        self.static_alpha.copy_(torch.cat([torch.eye(m), torch.eye(m)], dim=1))
        if self.dynamic:
            self.dynamic_alpha_fn.zero_()
            self.dynamic_beta_fn.zero_()
            self.dynamic_alpha_scale.fill_(_DYNAMIC_SCALE_INIT)
            self.dynamic_beta_scale.fill_(_DYNAMIC_SCALE_INIT)

    def width_connection(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixes the fractions: ``mix = alphaᵀ H`` with ``H = reshape(h, (m, D/m))``.

        Args:
            h: the hidden state, (B, T, D).

        Returns:
            ``mix`` (B, T, 2m, D/m): rows 0..m-1 are ``Yᵀ H`` (the branch input), rows m..2m-1
            are ``Aᵀ H``; and ``beta`` (B, T, m) (dynamic) or (m,) (static).
        """
        fracs = h.unflatten(-1, (self.rate, self.dim // self.rate))  # H: (B, T, m, D/m)
        if self.dynamic:
            normed = self.norm(fracs)  # H̄: (B, T, m, D/m)
            alpha = self.dynamic_alpha_scale * torch.tanh(normed @ self.dynamic_alpha_fn) + self.static_alpha  # (B, T, m, 2m)
            beta = self.dynamic_beta_scale * torch.tanh(normed @ self.dynamic_beta_fn) + self.static_beta  # (B, T, m)
        else:
            alpha, beta = self.static_alpha, self.static_beta  # (m, 2m), (m,)
        # Alg. 2 computes the mix in fp32.
        mix = torch.einsum("...st,...sd->...td", alpha.float(), fracs.float()).to(h.dtype)  # (B, T, 2m, D/m)
        return mix, beta

    def depth_connection(self, mix: torch.Tensor, out: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """``Ĥ = Bᵀ reshape(T(h₀)) + Aᵀ H``: out (B, T, D), mix (B, T, 2m, D/m) -> (B, T, D)."""
        out_fracs = out.unflatten(-1, (self.rate, self.dim // self.rate))  # (B, T, m, D/m)
        new = beta.unsqueeze(-1) * out_fracs + mix[..., self.rate :, :]  # (B, T, m, D/m)
        return new.flatten(-2)  # (B, T, D)

    def forward(self, h: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """h: (B, T, D) -> (B, T, D); ``branch`` maps (B, T, D) -> (B, T, D)."""
        mix, beta = self.width_connection(h)
        out = branch(mix[..., : self.rate, :].flatten(-2))  # T(h₀), h₀ = reshape(Yᵀ H, D): (B, T, D)
        return self.depth_connection(mix, out, beta)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rate={self.rate}, dynamic={self.dynamic}"
