"""ADS's two generators (Chai et al., "Adaptive Domain Scaling for Personalized Sequential Modeling
in Recommenders", SIGIR 2025; ``shared/specs/lmn-ads.md`` §2.3–2.4; equation numbers as there).

- :class:`PSRG` (Personalized Sequence Representation Generation): from the domain features E_D,
  generate a per-sample d_S × d_S linear layer and apply it to every sequence item (eqs. 2–5).
- :class:`PCRG` (Personalized Candidate Representation Generation): from E_D and the candidate,
  generate one query per position, or per chunk of adjacent positions, and add the tiled
  candidate as a shared base (eqs. 6–7).

Initialisation [I] (the paper gives none): both start as the identity of the plain backbone —
PSRG's generated layer is exactly I with zero bias, PCRG's generated queries are exactly the
tiled candidate — so ADS begins where DIN/MHA begins and learns the domain-specific departures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PSRG", "PCRG"]


class PSRG(nn.Module):
    """E_S-personalized = E_S · W_generatedᵀ + b_generated, with everything generated from E_D.

    W_private = sigmoid(ReLU(E_D W1ᵀ + b1) W2ᵀ + b2)         (eq. 2), reshaped to (d_S, d_S)
    W_generated = η · (W_shared ⊙ W_private)                   (eq. 3)
    b_generated = ReLU(E_D W1'ᵀ + b1') W2'ᵀ + b2'              (eq. 4)

    Example:
        >>> psrg = PSRG(4, 3, hidden_dim=8, eta=2.0)
        >>> seq = torch.randn(2, 5, 4)
        >>> torch.allclose(psrg(seq, torch.randn(2, 3)), seq)  # identity at init
        True
    """

    def __init__(self, d_seq: int, d_domain: int, *, hidden_dim: int, eta: float) -> None:
        super().__init__()
        self.d_seq = d_seq
        self.eta = eta
        self.w_shared = nn.Parameter(torch.empty(d_seq, d_seq))
        self.private = nn.Sequential(  # eq. 2 without its sigmoid; d_h is the bottleneck
            nn.Linear(d_domain, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, d_seq * d_seq)
        )
        self.bias = nn.Sequential(  # eq. 4: no output activation
            nn.Linear(d_domain, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, d_seq)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Zero last layers: W_private = sigmoid(0) = 1/2 and b = 0 for every sample; with
        # W_shared = (2/η)·I the generated layer is then exactly I (a no-op) at the start.
        nn.init.zeros_(self.private[-1].weight)
        nn.init.zeros_(self.private[-1].bias)
        nn.init.zeros_(self.bias[-1].weight)
        nn.init.zeros_(self.bias[-1].bias)
        with torch.no_grad():
            self.w_shared.copy_(torch.eye(self.d_seq, device=self.w_shared.device) * (2.0 / self.eta))

    def forward(self, seq: torch.Tensor, e_domain: torch.Tensor) -> torch.Tensor:
        """Personalise the sequence.

        Args:
            seq: (B, T, d_S) E_S; padded positions are transformed too (attention masks them).
            e_domain: (B, d_D) E_D.

        Returns:
            (B, T, d_S) E_S-personalized.
        """
        B, T, D = seq.shape
        w_private = torch.sigmoid(self.private(e_domain)).reshape(B, D, D)  # (B, d_S, d_S) eq. 2
        w = self.eta * (self.w_shared * w_private)  # (B, d_S, d_S) eq. 3
        b = self.bias(e_domain)  # (B, d_S) eq. 4
        return torch.bmm(seq, w.transpose(1, 2)) + b[:, None, :]  # (B, T, d_S) @ (B, d_S, d_S) -> (B, T, d_S) eq. 5


class PCRG(nn.Module):
    """E_Q-personalized = tile(E_Q, T) + the generated per-position (or per-chunk) queries.

    E_Q-private = ReLU([E_D ; E_Q] W_q1ᵀ + b_q1) W_q2ᵀ + b_q2 ∈ R^{G·d_Q}    (eq. 6)
    E_Q-personalized = Reshape(E_Q-private) + tile(E_Q, T) ∈ R^{T×d_Q}     (eq. 7)

    With G = T (``num_chunks=None``) every position has its own query. With G < T, position t
    (0 = oldest slot, T − 1 = most recent) takes chunk ⌊t·G/T⌋'s query: G runs of adjacent
    positions, each ⌊T/G⌋ or ⌈T/G⌉ long (all T/G when G divides T).

    Example:
        >>> pcrg = PCRG(4, 3, hidden_dim=8, seq_len=6, num_chunks=2)
        >>> pcrg(torch.randn(2, 4), torch.randn(2, 3)).shape
        torch.Size([2, 6, 4])
    """

    def __init__(
        self,
        d_query: int,
        d_domain: int,
        *,
        hidden_dim: int,
        seq_len: int,
        num_chunks: int | None = None,
    ) -> None:
        super().__init__()
        assert num_chunks is None or 1 <= num_chunks <= seq_len, f"num_chunks={num_chunks} with T={seq_len}"
        self.seq_len = seq_len
        self.num_chunks = num_chunks if num_chunks is not None else seq_len
        self.d_query = d_query
        # Eq. 6, the Multi-Query Gen-Net; the bottleneck d_h ≪ G·d_Q keeps it cheap. The output
        # layer W_q2, b_q2 is held directly (not as a child Linear) so that DMP, which resets only
        # modules owning meta parameters, runs this module's reset_parameters.
        self.hidden = nn.Linear(d_domain + d_query, hidden_dim)  # W_q1, b_q1
        self.w_q2 = nn.Parameter(torch.empty(self.num_chunks * d_query, hidden_dim))
        self.b_q2 = nn.Parameter(torch.empty(self.num_chunks * d_query))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Zero output layer: the generated queries start at 0, i.e. at the plain tiled candidate.
        nn.init.zeros_(self.w_q2)
        nn.init.zeros_(self.b_q2)

    def generate(self, candidate: torch.Tensor, e_domain: torch.Tensor) -> torch.Tensor:
        """E_Q-private (eq. 6). Args: candidate (B, d_Q); e_domain (B, d_D). Returns: (B, G·d_Q)."""
        h = torch.relu(self.hidden(torch.cat([e_domain, candidate], dim=-1)))  # (B, d_h) [E_D ; E_Q]
        return F.linear(h, self.w_q2, self.b_q2)  # (B, d_h) @ (d_h, G·d_Q) -> (B, G·d_Q)

    def forward(self, candidate: torch.Tensor, e_domain: torch.Tensor) -> torch.Tensor:
        """Generate the queries.

        Args:
            candidate: (B, d_Q) E_Q, the target item's embedding.
            e_domain: (B, d_D) E_D.

        Returns:
            (B, T, d_Q) E_Q-personalized, query t for sequence position t.
        """
        B, Dq = candidate.shape
        T, G = self.seq_len, self.num_chunks
        private = self.generate(candidate, e_domain).reshape(B, G, Dq)  # (B, G·d_Q) -> (B, G, d_Q) eq. 6
        chunk = torch.arange(T, device=candidate.device) * G // T  # (T,) position -> its chunk
        private = private.index_select(1, chunk)  # (B, T, d_Q): each chunk's query over its positions
        return private + candidate[:, None, :]  # (B, T, d_Q) eq. 7, tile(E_Q, T) as the shared base
