"""Over-Encoding (hashed hierarchical n-gram input embeddings) and Over-Decoding (next-j token heads).

Paper: Huang et al., "Over-Tokenized Transformer: Vocabulary is Generally Worth Scaling",
arXiv 2501.16975 (ICML 2025), Eq. 1-5, App. A (OE pseudo-code) and App. C Alg. 2 (OD).
Spec: ``shared/specs/llm-blocks.md`` §5.2.

Over-Encoding (App. A, normative)::

    x^{(-1)} = x_t ;  x^{(-i)} = Σ_{j=1..i} x_{t-j+1} · V^{j-1}      (positions before 0 read token 0)
    table (i, j), idx = (i-2)·k + j, i = 2..n, j = 0..k-1:  m + 2·idx rows, width D/(k(n-1))
    OE(x) = ( E_wte(x_t) + Σ_{i,j} W_idx E_idx[x^{(-i)} mod (m + 2·idx)] ) / (1 + k(n-1))

The 1-gram table is the model's (tied) token embedding; the extra parameters are ``m·D`` (up to
the ``+2·idx`` rows) plus the projections. The ``+2·idx`` moduli make the slices collide
differently (the paper: otherwise slicing would change nothing); ``m`` should be coprime with V.

Over-Decoding (App. C): heads ``j = 2..n`` on the last hidden state predict token ``t + j``,
``L = CE(h W_teᵀ, x_{t+1}) + Σ_j λ_j CE(h E_jᵀ, x_{t+j})``. The paper's experiments use MTP-DS
(DeepSeek-V3 sequential heads with an extra block); we implement App. C's head-only form.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OverDecoding", "OverEncoding", "ngram_ids"]

logger = logging.getLogger(__name__)


def ngram_ids(idx: torch.Tensor, order: int, vocab_size: int) -> torch.Tensor:
    """The hierarchical n-gram id ``x^{(-order)}`` of every position (Eq. 1-2, zero padding).

    Args:
        idx: token ids, (B, T).
        order: ``n`` ≥ 1 (1 returns the ids).
        vocab_size: ``V``, the base ``p`` of the positional code.

    Returns:
        int64 ids in ``[0, V^order)``, (B, T).

    Example:
        >>> ngram_ids(torch.tensor([[3, 1, 2]]), 2, 10)  # [3 + 0·10, 1 + 3·10, 2 + 1·10]
        tensor([[ 3, 31, 12]])
    """
    idx = idx.long()
    out = idx.clone()
    for j in range(1, order):
        shifted = F.pad(idx, (j, 0))[..., : idx.shape[-1]]  # x_{t-j}, zeros before the start: (B, T)
        out = out + shifted * vocab_size**j
    return out


class OverEncoding(nn.Module):
    """Adds ``k(n-1)`` hashed n-gram embedding slices to the 1-gram embedding (App. A).

    Args:
        vocab_size: ``V``.
        dim: model width ``D``; divisible by ``k(n-1)``.
        n: the largest n-gram order.
        m: the base table size.
        k: slices per order.

    Example:
        >>> oe = OverEncoding(10, 8, n=3, m=7, k=2)
        >>> oe.moduli
        [7, 9, 11, 13]
        >>> idx = torch.tensor([[1, 2, 3]])
        >>> oe(idx, torch.zeros(1, 3, 8)).shape  # (B, T, D)
        torch.Size([1, 3, 8])
    """

    def __init__(self, vocab_size: int, dim: int, *, n: int, m: int, k: int) -> None:
        super().__init__()
        tables = k * (n - 1)
        if dim % tables:
            raise ValueError(f"`dim` ({dim}) must be divisible by k*(n-1) = {tables}")
        self.vocab_size, self.dim, self.n, self.m, self.k = vocab_size, dim, n, m, k
        width = dim // tables
        self.moduli: list[int] = [m + 2 * i for i in range(tables)]  # m + 2·idx
        self.tables = nn.ModuleList(nn.Embedding(mod, width) for mod in self.moduli)
        self.projs = nn.ModuleList(nn.Linear(width, dim, bias=False) for _ in range(tables))
        self.scale = 1.0 / (1 + tables)  # 1 / (1 + k(n-1))
        for mod in self.moduli:
            if math.gcd(mod, vocab_size) != 1:
                logger.warning("n-gram modulus %d shares a factor with V=%d; the paper finds m = c·V hurts (Table 4)", mod, vocab_size)

    def forward(self, idx: torch.Tensor, unigram: torch.Tensor) -> torch.Tensor:
        """OE(x), Eq. 5.

        Args:
            idx: token ids, (B, T).
            unigram: the 1-gram embedding ``E_wte(x_t)``, (B, T, D).

        Returns:
            (B, T, D).
        """
        x = unigram
        for i in range(2, self.n + 1):
            gram = ngram_ids(idx, i, self.vocab_size)  # x^{(-i)}: (B, T)
            for j in range(self.k):
                t = (i - 2) * self.k + j
                x = x + self.projs[t](self.tables[t](gram % self.moduli[t]))  # (B, T, D)
        return x * self.scale

    def extra_repr(self) -> str:
        return f"V={self.vocab_size}, D={self.dim}, n={self.n}, m={self.m}, k={self.k}"


class OverDecoding(nn.Module):
    """Next-``j`` token heads, ``j = 2..n``, on the final hidden state (App. C, Alg. 2).

    Args:
        dim: width ``D``.
        vocab_size: ``V``.
        n: the furthest predicted offset.
        weight: ``λ_j`` of every extra head.

    Example:
        >>> od = OverDecoding(8, 10, n=3)
        >>> losses = od.losses(torch.randn(2, 5, 8), torch.randint(0, 10, (2, 5)))
        >>> sorted(losses)
        ['od_2', 'od_3']
    """

    def __init__(self, dim: int, vocab_size: int, *, n: int, weight: float = 0.1) -> None:
        super().__init__()
        self.n, self.weight = n, weight
        self.heads = nn.ModuleList(nn.Linear(dim, vocab_size, bias=False) for _ in range(2, n + 1))  # E_j

    def losses(self, h: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted cross-entropies of the extra heads.

        Args:
            h: final hidden states (after ``ln_f``), (B, T, D).
            targets: next-token targets ``x_{t+1}``, (B, T); ``x_{t+j}`` is ``targets[:, t+j-1]``.

        Returns:
            ``{"od_j": CE}`` for ``j = 2..n`` (heads with no target left are skipped).
        """
        T = h.shape[1]
        out: dict[str, torch.Tensor] = {}
        for j, head in zip(range(2, self.n + 1), self.heads):
            if T - (j - 1) <= 0:
                continue
            logits = head(h[:, : T - (j - 1)])  # (B, T-j+1, V)
            out[f"od_{j}"] = F.cross_entropy(logits.flatten(0, 1), targets[:, j - 1 :].flatten())
        return out
