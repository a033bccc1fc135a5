"""Target attention: the candidate pools the behaviour sequence.

- :class:`DINAttention`: DIN's activation unit (Zhou et al., KDD 2018, §4.3, Fig. 2): an MLP
  over [q, k, q − k, q ⊙ k] gives each history item a weight; no softmax, so the pooled vector
  keeps the intensity of the user's interest; padded positions get weight 0.
- :class:`MultiHeadTargetAttention`: multi-head target attention with a masked softmax, and ADS's
  position-wise ("diagonal") attention (spec §2.5, eqs. 8–12) in the same module.

Both take the query as (B, D) — one candidate query for every position, the usual target
attention — or as (B, T, D) — query t for position t only. In the second form query t scores
only key t (z'[t] = Q_tᵀ K_t / √d_A, ADS eq. 11): a diagonal, not a T × T attention. The first
form is the second with the candidate tiled over T, which is exactly what ADS's PCRG adds its
generated queries to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recsys.configs import Activation, Backbone, ModelConfig
from recsys.modules.mlp import MLP

__all__ = ["masked_softmax", "DINAttention", "MultiHeadTargetAttention", "build_target_attention"]


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, *, dim: int) -> torch.Tensor:
    """Softmax over ``dim`` with masked-out entries at exactly 0.

    Masked scores are set to the dtype's most negative finite value (not −inf), so a row with no
    real entry (an empty history) gives a uniform softmax that the final ``* mask`` zeroes: all
    zeros, never NaN.

    Args:
        scores: any shape.
        mask: bool, broadcastable to ``scores``; True = keep.
        dim: the dimension to normalise over.
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * mask


class DINAttention(nn.Module):
    """DIN's local activation unit: v_U = Σ_t a(q_t, k_t) · k_t.

    Example:
        >>> att = DINAttention(4, hidden=(8,), activation=Activation.RELU)
        >>> att(torch.randn(2, 4), torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 4])
    """

    def __init__(self, dim: int, *, hidden: Sequence[int], activation: Activation) -> None:
        super().__init__()
        self.unit = MLP(4 * dim, hidden, activation=activation, out_dim=1)
        self.out_dim = dim

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool the keys.

        Args:
            query: (B, D) candidate, or (B, T, D) one query per position (ADS).
            keys: (B, T, D) behaviour sequence; also the values.
            mask: (B, T) bool, True at real positions.

        Returns:
            (B, D) the interest vector.
        """
        B, T, D = keys.shape
        q = query.reshape(B, -1, D)  # (B, 1, D) candidate, or (B, T, D) one query per position
        # The unit's first layer on [q, k, q−k, q⊙k] is W_q q + W_k k + W_d (q − k) + W_p (q⊙k) + b
        # = (W_q + W_d) q + (W_k − W_d) k + W_p (q⊙k) + b: the same function and parameters as the
        # paper's concat, without materialising (B, T, 4D), and the candidate term once per sample.
        first = self.unit.net[0]
        W_q, W_k, W_d, W_p = first.weight.split(D, dim=1)  # (H1, D) each
        h = (q @ (W_q + W_d).T + keys @ (W_k - W_d).T + (q * keys) @ W_p.T + first.bias)  # (B, T, H1)
        w = self.unit.net[1:](h).reshape(B, T) * mask  # (B, T): un-normalised, 0 at padding
        return torch.bmm(w[:, None, :], keys).reshape(B, D)  # (B, 1, T) @ (B, T, D) -> (B, D)


class MultiHeadTargetAttention(nn.Module):
    """Multi-head target attention, full (one query) or position-wise (one query per position).

    Per head h: Q = E_Q W_Q, K = E_S W_K, V = E_S W_V (ADS eqs. 8–10, no biases), scores
    z'[t] = Q_t · K_t / √Dh (eq. 11), z = masked softmax over t, s = Σ_t z[t] V_t (eq. 12); the
    heads are concatenated, with no output projection (as eq. 12).

    Example:
        >>> att = MultiHeadTargetAttention(6, 4, num_heads=2, head_dim=3)
        >>> keys, mask = torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)
        >>> att(torch.randn(2, 6), keys, mask).shape, att(torch.randn(2, 5, 6), keys, mask).shape
        (torch.Size([2, 6]), torch.Size([2, 6]))
    """

    def __init__(self, d_query: int, d_key: int, *, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.w_q = nn.Linear(d_query, num_heads * head_dim, bias=False)
        self.w_k = nn.Linear(d_key, num_heads * head_dim, bias=False)
        self.w_v = nn.Linear(d_key, num_heads * head_dim, bias=False)
        self.out_dim = num_heads * head_dim

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool the keys.

        Args:
            query: (B, D_q) candidate, or (B, T, D_q) one query per position (diagonal scoring).
            keys: (B, T, D_k) behaviour sequence.
            mask: (B, T) bool, True at real positions.

        Returns:
            (B, H·Dh) the concatenated heads.
        """
        B, T, _ = keys.shape
        H, Dh = self.num_heads, self.head_dim
        q = self.w_q(query).reshape(B, -1, H, Dh)  # (B, 1 or T, H, Dh)
        k = self.w_k(keys).reshape(B, T, H, Dh)  # (B, T, H, Dh)
        v = self.w_v(keys).reshape(B, T, H, Dh)  # (B, T, H, Dh)
        scores = (q * k).sum(dim=-1) / math.sqrt(Dh)  # (B, T, H): query t · key t only
        z = masked_softmax(scores, mask[:, :, None], dim=1)  # (B, T, H)
        s = torch.einsum("bth,bthd->bhd", z, v)  # (B, H, Dh)
        return s.reshape(B, H * Dh)  # (B, H·Dh)


def build_target_attention(cfg: ModelConfig, d_query: int, d_key: int) -> DINAttention | MultiHeadTargetAttention:
    """The attention of ``cfg.backbone`` for queries d_query wide over keys d_key wide.

    DIN's unit compares q and k element-wise, so it needs d_query == d_key.
    """
    if cfg.backbone == Backbone.DIN:
        assert d_query == d_key, f"DIN compares q and k element-wise: {d_query} != {d_key}"
        return DINAttention(d_key, hidden=cfg.attention_hidden, activation=cfg.activation)
    return MultiHeadTargetAttention(d_query, d_key, num_heads=cfg.num_heads, head_dim=cfg.head_dim)
