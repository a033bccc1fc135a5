"""Product-key memory (Lample et al., "Large Memory Layers with Product Keys", NeurIPS 2019;
``shared/specs/lmn-ads.md`` §3.1), the memory block of LMN (§1.3), and LMN's masked Smooth-L1
memory loss.

Borrowed: the retrieval of ``facebookresearch/XLM`` ``src/model/memory/memory.py``
(``HashingMemoryProduct``: two sub-key sets, top-k per axis, top-k over the k² sums, softmax)
and its uniform sub-key init.

Unlike XLM, the value table is a TorchRec :class:`~torchrec.EmbeddingCollection` (table
``lmn_memory``, n × d_v) read **un-pooled**: it returns the k rows of every query and the
softmax-weighted sum happens here, in dense code. A sharded *weighted* EmbeddingBagCollection
would return no gradient to the per-sample weights (``shared/specs/stack-facts.md``), so keys
and the query net would not learn through the read; with the un-pooled read both the selected
value rows and the query/keys get gradients, and the value table gets row-sparse gradients only
(an SGD or row-wise optimizer changes only the k·N selected rows).

Shape letters: N queries, K top-k, M = n memory slots (√M = n_sub per axis), d_k key width,
d_v value width.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

from recsys.configs import QueryNorm

__all__ = [
    "MEMORY_TABLE",
    "MEMORY_FEATURE",
    "pkm_topk",
    "pkm_topk_bruteforce",
    "MemoryReadout",
    "ProductKeyMemory",
    "masked_smooth_l1",
]

MEMORY_TABLE = "lmn_memory"
"""Name of the value table (the memory service and the exporter look it up by this name)."""
MEMORY_FEATURE = "lmn_memory_slot"
"""The KJT key that carries the selected slot ids into the value table."""


def pkm_topk(query: torch.Tensor, keys1: torch.Tensor, keys2: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of the n = √n² product keys for each query, in O((√n + k²)·d_k).

    Product key (a, b) = [K1[a] ; K2[b]] scores q·key = q1·K1[a] + q2·K2[b], so the k best pairs
    only use a among the top-k of q1·K1 and b among the top-k of q2·K2: k² candidates, of which
    the top k are exact (Lample et al. §3.2). Slot id = a·√n + b.

    Args:
        query: (N, d_k).
        keys1: (√n, d_k/2) sub-keys of the first axis.
        keys2: (√n, d_k/2) sub-keys of the second axis.
        k: slots per query, ≤ √n.

    Returns:
        scores (N, K), best first, differentiable in query and keys; slot ids (N, K) int64.

    Example:
        >>> q, k1, k2 = torch.randn(3, 8), torch.randn(5, 4), torch.randn(5, 4)
        >>> s, i = pkm_topk(q, k1, k2, 2)
        >>> torch.equal(i, pkm_topk_bruteforce(q, k1, k2, 2)[1])
        True
    """
    N, _ = query.shape
    n_sub, half = keys1.shape
    q1, q2 = query[:, :half], query[:, half:]  # (N, d_k/2) each
    s1 = q1 @ keys1.t()  # (N, d_k/2) @ (d_k/2, √n) -> (N, √n)
    s2 = q2 @ keys2.t()  # (N, d_k/2) @ (d_k/2, √n) -> (N, √n)
    top1, idx1 = s1.topk(k, dim=-1)  # (N, K)
    top2, idx2 = s2.topk(k, dim=-1)  # (N, K)
    cand = (top1[:, :, None] + top2[:, None, :]).reshape(N, k * k)  # (N, K, K) -> (N, K²)
    scores, best = cand.topk(k, dim=-1)  # (N, K)
    a = idx1.gather(1, best // k)  # (N, K) row of the grid
    b = idx2.gather(1, best % k)  # (N, K) column of the grid
    return scores, a * n_sub + b  # (N, K), (N, K)


def pkm_topk_bruteforce(
    query: torch.Tensor, keys1: torch.Tensor, keys2: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`pkm_topk`: score all n product keys, then take the top k (tests only)."""
    N, _ = query.shape
    n_sub, half = keys1.shape
    s1 = query[:, :half] @ keys1.t()  # (N, √n)
    s2 = query[:, half:] @ keys2.t()  # (N, √n)
    full = (s1[:, :, None] + s2[:, None, :]).reshape(N, n_sub * n_sub)  # (N, √n, √n) -> (N, M), id a·√n + b
    return full.topk(k, dim=-1)  # (N, K), (N, K)


class MemoryReadout(NamedTuple):
    """A memory read.

    Attributes:
        values: (N, d_v) Σ_j w_j V[idx_j].
        indices: (N, K) the slots read.
        weights: (N, K) their softmax weights.
    """

    values: torch.Tensor
    indices: torch.Tensor
    weights: torch.Tensor


class ProductKeyMemory(nn.Module):
    """read(q) = Σ_j softmax(top-k scores)_j · V[idx_j] over n = ``n_sub``² value slots.

    The sub-keys K1, K2 and the query norm are dense parameters; the values V are the TorchRec
    table ``lmn_memory`` (feature ``lmn_memory_slot``), initialised uniform with std d_v^-1/2 as
    XLM's N(0, d_v^-1/2) (uniform because sharded TorchRec tables only take a uniform range).

    Example:
        >>> mem = ProductKeyMemory(n_sub=8, k=4, d_key=6, d_value=5, query_norm=QueryNorm.LAYERNORM)
        >>> out = mem(torch.randn(3, 6))
        >>> out.values.shape, out.indices.shape, bool((out.indices < 64).all())
        (torch.Size([3, 5]), torch.Size([3, 4]), True)
    """

    def __init__(
        self,
        *,
        n_sub: int,
        k: int,
        d_key: int,
        d_value: int,
        query_norm: QueryNorm,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        assert d_key % 2 == 0 and 1 <= k <= n_sub, f"d_key={d_key}, k={k}, n_sub={n_sub}"
        self.n_sub, self.k, self.d_key, self.d_value = n_sub, k, d_key, d_value
        self.keys1 = nn.Parameter(torch.empty(n_sub, d_key // 2, device=device))
        self.keys2 = nn.Parameter(torch.empty(n_sub, d_key // 2, device=device))
        self.query_norm: nn.Module
        if query_norm == QueryNorm.LAYERNORM:
            self.query_norm = nn.LayerNorm(d_key, device=device)
        elif query_norm == QueryNorm.BATCHNORM:
            self.query_norm = nn.BatchNorm1d(d_key, device=device)
        else:
            self.query_norm = nn.Identity()
        bound = math.sqrt(3.0 / d_value)  # uniform(±b) has std b/√3 = d_v^-1/2
        self.values = EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name=MEMORY_TABLE,
                    num_embeddings=n_sub * n_sub,
                    embedding_dim=d_value,
                    feature_names=[MEMORY_FEATURE],
                    weight_init_min=-bound,
                    weight_init_max=bound,
                )
            ],
            device=torch.device(device) if device is not None else None,
        )
        self.reset_parameters()

    @property
    def num_slots(self) -> int:
        """n, the number of value rows."""
        return self.n_sub * self.n_sub

    def reset_parameters(self) -> None:
        # XLM `get_uniform_keys`: uniform(±1/√dim) per sub-key (the values init from their config).
        bound = 1.0 / math.sqrt(self.d_key // 2)
        nn.init.uniform_(self.keys1, -bound, bound)
        nn.init.uniform_(self.keys2, -bound, bound)

    def forward(self, query: torch.Tensor) -> MemoryReadout:
        """Read the memory.

        Args:
            query: (N, d_k), before the query norm.

        Returns:
            The weighted read (N, d_v), the slots (N, K) and their weights (N, K).
        """
        N, _ = query.shape
        K, Dv = self.k, self.d_value
        q = self.query_norm(query)  # (N, d_k)
        scores, idx = pkm_topk(q, self.keys1, self.keys2, K)  # (N, K), (N, K)
        w = torch.softmax(scores, dim=-1)  # (N, K) XLM `mem_score_softmax`
        slots = KeyedJaggedTensor(
            keys=[MEMORY_FEATURE],
            values=idx.reshape(N * K),  # (N·K,)
            lengths=torch.full_like(idx[:, 0], K),  # (N,) every query reads K rows
        )
        rows = self.values(slots)[MEMORY_FEATURE].values().reshape(N, K, Dv)  # (N·K, d_v) -> (N, K, d_v)
        read = torch.bmm(w[:, None, :], rows).reshape(N, Dv)  # (N, 1, K) @ (N, K, d_v) -> (N, d_v)
        return MemoryReadout(values=read, indices=idx, weights=w)


def masked_smooth_l1(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, beta: float = 1.0
) -> torch.Tensor:
    """LMN's memory loss: Smooth-L1 averaged over d_v, then over the real positions only.

    L = Σ_t m_t · mean_d SmoothL1(pred_t, target_t) / Σ_t m_t (0 when no position is real).
    Padded positions are dropped with ``where`` rather than multiplied by 0, so whatever they hold
    (even inf or NaN) changes neither the loss nor any gradient.

    Args:
        pred: (B, T, d_v) the reads r_t.
        target: (B, T, d_v).
        mask: (B, T) bool, True at real positions.
        beta: the Smooth-L1 transition point.

    Returns:
        A scalar.

    Example:
        >>> mask = torch.tensor([[False, True]])
        >>> masked_smooth_l1(torch.tensor([[[float("nan")], [1.0]]]), torch.zeros(1, 2, 1), mask)
        tensor(0.5000)
    """
    safe_pred = torch.where(mask[:, :, None], pred, target)  # (B, T, d_v): padded → zero error
    per_item = F.smooth_l1_loss(safe_pred, target, reduction="none", beta=beta).mean(dim=-1)  # (B, T)
    per_item = torch.where(mask, per_item, torch.zeros_like(per_item))  # (B, T)
    return per_item.sum() / mask.sum().clamp_min(1).to(per_item.dtype)
