"""LMN: Large Memory Network (Lu et al., "Large Memory Network for Recommendation", WWW 2025
Companion; arXiv 2502.05558) as reconstructed in ``shared/specs/lmn-ads.md`` §1.3, on a DIN or
MHA backbone. The method section was not available: the [I] choices below are switchable in
:class:`~recsys.configs.LMNConfig`.

A global product-key memory (Lample et al. 2019, §3.1), shared by all users, is read with a
user-aware query and written through a masked Smooth-L1 loss over the behaviour sequence:

    e_u     = [emb(user_id) ; ...]                                   ``user_features``
    query   q(x, u) = W [x ; e_u]   (or W_x x + W_u e_u, or W_x x)    ``query_fusion`` [I]
    read    r(q) = Σ_j softmax(top-k scores)_j V[idx_j]               two-axis top-k, n = n_sub² slots
    write   L_mem = Σ_t m_t SmoothL1(r(q(s_t, u)), g([s_t ; e_u])) / Σ_t m_t
                    (target stop-grad(s_t) with ``memory_target="detached"``, alternative (c))
    predict ŷ = MLP([E_U ; E_I ; E_c ; v_U ; r(q(E_I, u))])           ``memory_read="candidate"``
        or  v_U over s_t + W_r r(q(s_t, u))                           ``memory_read="sequence"``, (a)
    loss    L = BCE + λ · L_mem                                       λ = ``memory_weight``, in aux_losses

One memory lookup per forward carries the candidate queries and all B·T sequence queries, so a
sharded value table sees one input distribution per step (what TorchRec's pipelines expect).
"""

from __future__ import annotations

import torch
from torch import nn

from feature_pipeline.batch import Batch
from feature_pipeline.spec import FeatureSpec
from recsys.configs import Backbone, LMNConfig, MemoryRead, MemoryTarget, QueryFusion
from recsys.models.din import TargetAttentionModel, check_sparse_features, device_scope
from recsys.modules.attention import build_target_attention
from recsys.modules.memory import ProductKeyMemory, masked_smooth_l1
from recsys.outputs import ModelOutput
from seedrec.errors import ConfigError

__all__ = ["UserAwareQuery", "LMN", "PRESETS"]


class UserAwareQuery(nn.Module):
    """The memory query from an item representation x and the user e_u (fusion form [I]).

    Example:
        >>> q = UserAwareQuery(6, 4, 8, fusion=QueryFusion.ADD)
        >>> q(torch.randn(2, 5, 6), torch.randn(2, 5, 4)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, d_item: int, d_user: int, d_key: int, *, fusion: QueryFusion) -> None:
        super().__init__()
        self.fusion = fusion
        self.item = nn.Linear(d_item + d_user if fusion == QueryFusion.CONCAT else d_item, d_key)
        self.user = nn.Linear(d_user, d_key, bias=False) if fusion == QueryFusion.ADD else None

    def forward(self, x: torch.Tensor, e_user: torch.Tensor) -> torch.Tensor:
        """Args: x: (..., d_item); e_user: (..., d_user). Returns: (..., d_k), before the memory's norm."""
        if self.fusion == QueryFusion.CONCAT:
            return self.item(torch.cat([x, e_user], dim=-1))  # (..., d_k)
        if self.user is not None:  # ADD
            return self.item(x) + self.user(e_user)  # (..., d_k)
        return self.item(x)  # (..., d_k) CANDIDATE: the user is ignored, alternative (b)


class LMN(TargetAttentionModel):
    """A DIN or MHA backbone plus a user-shared product-key memory, read and written per step.

    ``forward`` returns ``aux_losses["memory"]`` = λ·L_mem (already weighted) and, for logging,
    ``extras["memory_loss"]`` (unweighted) and ``extras["memory_unique_slots"]`` (distinct slots
    the batch's candidate queries read: a cheap retrieval-collapse gauge).

    Example:
        >>> from feature_pipeline.spec import FeatureKind as FK, TableSpec
        >>> from torchrec import KeyedJaggedTensor as KJT
        >>> t = lambda name, n: TableSpec(name=name, num_embeddings=n, embedding_dim=4, hashed=True)
        >>> F = FeatureSpec.Feature
        >>> spec = FeatureSpec(seq_len=3, tables=(t("user", 5), t("item", 9)), features=(
        ...     F(name="user_id", kind=FK.SPARSE, table="user"), F(name="item_id", kind=FK.SPARSE, table="item"),
        ...     F(name="hist_item_id", kind=FK.SEQUENCE, table="item"), F(name="click", kind=FK.LABEL)))
        >>> model = LMN(LMNConfig(n_sub=8, k=4, d_key=8, d_value=4, attention_hidden=(8,), tower_hidden=(8,)), spec)
        >>> batch = Batch(sparse=KJT.from_lengths_sync(keys=["user_id", "item_id"], values=torch.tensor([1, 2, 3, 4]), lengths=torch.ones(4, dtype=torch.long)),
        ...     sequence=KJT.from_lengths_sync(keys=["hist_item_id"], values=torch.tensor([5, 6, 7]), lengths=torch.tensor([2, 1])),
        ...     dense=torch.zeros(2, 0), labels=torch.zeros(2, 1), domain=torch.zeros(2, dtype=torch.long), user=torch.tensor([1, 2]))
        >>> out = model(batch)
        >>> out.logits.shape, sorted(out.aux_losses)
        (torch.Size([2, 1]), ['memory'])
    """

    def __init__(self, cfg: LMNConfig, spec: FeatureSpec, *, device: torch.device | str | None = None) -> None:
        super().__init__(cfg, spec, device=device)
        check_sparse_features(cfg.user_features, spec, field="user_features")
        self.user_keys = list(cfg.user_features)
        self.memory_read = cfg.memory_read
        self.memory_target = cfg.memory_target
        self.memory_weight = cfg.memory_weight
        self.smooth_l1_beta = cfg.smooth_l1_beta
        d = self.view.dim  # item width: E_Q and every E_S[t]
        d_user = sum(self.embedding.feature_dims[k] for k in self.user_keys)
        if cfg.memory_target == MemoryTarget.DETACHED and cfg.d_value != d:
            raise ConfigError(
                f"`memory_target` = 'detached' regresses r_t onto stop-grad(s_t), so `d_value` must equal the "
                f"item width {d} (the summed widths of {spec.sequence_keys}); got `d_value` = {cfg.d_value}"
            )
        with device_scope(device):
            self.query = UserAwareQuery(d, d_user, cfg.d_key, fusion=cfg.query_fusion)
            self.memory = ProductKeyMemory(
                n_sub=cfg.n_sub, k=cfg.k, d_key=cfg.d_key, d_value=cfg.d_value, query_norm=cfg.query_norm, device=device
            )
            self.target = nn.Linear(d + d_user, cfg.d_value) if cfg.memory_target == MemoryTarget.PROJECTION else None
            self.enhance = nn.Linear(cfg.d_value, d) if cfg.memory_read == MemoryRead.SEQUENCE else None
            self.attention = build_target_attention(cfg, d, d)
            d_read = cfg.d_value if cfg.memory_read == MemoryRead.CANDIDATE else 0
            self.tower = self._tower(self.d_sparse + self.attention.out_dim + d_read)
        self._init_weights()

    def forward(self, batch: Batch) -> ModelOutput:
        """Score a batch and compute the memory loss.

        Args:
            batch: sparse (keys spec.sparse_keys), sequence (jagged, ≤ T), dense (B, F).

        Returns:
            logits (B, n_labels), ``aux_losses["memory"]`` (scalar, λ-weighted), extras.
        """
        emb = self.embedding(batch.sparse, batch.sequence)
        e_q, e_s = self.view(emb)  # (B, d), (B, T, d)
        B, T, d = e_s.shape
        e_u = torch.cat([emb.sparse[k] for k in self.user_keys], dim=-1)  # (B, d_u)
        e_u_seq = e_u[:, None, :].expand(B, T, e_u.shape[-1])  # (B, T, d_u)

        # One read for the B candidate queries and the B·T sequence queries.
        q_cand = self.query(e_q, e_u)  # (B, d_k)
        q_seq = self.query(e_s, e_u_seq)  # (B, T, d_k)
        queries = torch.cat([q_cand, q_seq.reshape(B * T, -1)], dim=0)  # (B + B·T, d_k)
        read = self.memory(queries)
        r_cand = read.values[:B]  # (B, d_v)
        r_seq = read.values[B:].reshape(B, T, -1)  # (B·T, d_v) -> (B, T, d_v)

        # Write: pull each real history item's read towards its target (padding masked out).
        if self.target is not None:
            target = self.target(torch.cat([e_s, e_u_seq], dim=-1))  # (B, T, d_v) g([s_t ; e_u])
        else:
            target = e_s.detach()  # (B, T, d) = (B, T, d_v), alternative (c)
        memory_loss = masked_smooth_l1(r_seq, target, emb.mask, beta=self.smooth_l1_beta)

        groups = self._sparse_groups(emb.sparse)
        if self.enhance is not None:  # alternative (a): attend over the memory-enhanced sequence
            e_s = e_s + self.enhance(r_seq)  # (B, T, d)
        interest = self.attention(e_q, e_s, emb.mask)  # (B, d) DIN or (B, H·Dh) MHA
        if self.memory_read == MemoryRead.CANDIDATE:
            groups.append(r_cand)  # (B, d_v)
        logits = self.tower([*groups, interest], batch.dense)  # (B, n_labels)

        slots = read.indices[:B].reshape(-1).sort().values  # (B·K,) the candidate reads
        unique_slots = (slots[1:] != slots[:-1]).sum() + 1  # distinct slots (sort, not unique: traceable)
        return ModelOutput(
            logits=logits,
            aux_losses={"memory": self.memory_weight * memory_loss},
            extras={"memory_loss": memory_loss.detach(), "memory_unique_slots": unique_slots.detach()},
        )


PRESETS: dict[str, LMNConfig] = {
    "LMN": LMNConfig(),
    "LMN-1M": LMNConfig(n_sub=1024, k=32, d_value=32),
    "LMN-MHA": LMNConfig(backbone=Backbone.MHA),
}
"""Named configs: MSN's 256² memory (§1.6), the million-slot memory (1024², spec §4.2) and MHA."""
