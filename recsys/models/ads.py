"""ADS: Adaptive Domain Scaling (Chai et al., "Adaptive Domain Scaling for Personalized Sequential
Modeling in Recommenders", SIGIR 2025; ``shared/specs/lmn-ads.md`` §2, equation numbers as there),
plugged into a DIN or MHA target-attention backbone.

    E_D = [emb(domain) ; emb(age_bucket) ; emb(activity)]      explicit + implicit indicators (§2.2)
    E_S' = PSRG(E_S, E_D)                                       (B, T, d_S), eqs. 2–5
    Q    = PCRG(E_Q, E_D)                                       (B, T, d_Q), eqs. 6–7
    s    = Σ_t z[t] V_t,  z = softmax_t(Q_t W_Q · E_S'_t W_K)   MHA: position-wise, eqs. 8–12
      or = Σ_t a(Q_t, E_S'_t) · E_S'_t                          DIN: query t into DIN's own unit
    ŷ    = MLP([s ; E_U ; E_I ; E_O])                            eq. 13

E_S and E_Q share the embedding tables (§2.1's diagnosis is exactly that they do); d_S = d_Q = d,
the concatenated width of the sequence features (see ``CandidateSequenceView``).
"""

from __future__ import annotations

import torch

from feature_pipeline.batch import Batch
from feature_pipeline.spec import FeatureKind, FeatureSpec
from recsys.configs import ADSConfig, Backbone
from recsys.models.din import TargetAttentionModel, check_sparse_features, device_scope
from recsys.modules.ads import PCRG, PSRG
from recsys.modules.attention import build_target_attention
from recsys.outputs import ModelOutput
from seedrec.errors import ConfigError

__all__ = ["ADS", "domain_feature_keys", "PRESETS"]


def domain_feature_keys(cfg: ADSConfig, spec: FeatureSpec) -> list[str]:
    """The sparse keys whose embeddings form E_D: the explicit domain feature, then the implicit ones.

    Raises:
        ConfigError: an unknown name in ``domain_features``, or ``explicit_domain`` with no
            ``domain``-kind feature in the spec.
    """
    check_sparse_features(cfg.domain_features, spec, field="domain_features")
    keys: list[str] = []
    if cfg.explicit_domain:
        explicit = spec.of_kind(FeatureKind.DOMAIN)
        if not explicit:
            raise ConfigError(
                "`explicit_domain` = True but the feature spec has no `domain`-kind feature; "
                "set `explicit_domain` = False and list implicit `domain_features`"
            )
        keys.append(explicit[0].name)
    keys += [k for k in cfg.domain_features if k not in keys]  # a listed explicit feature counts once
    return keys


class ADS(TargetAttentionModel):
    """A DIN or MHA backbone whose sequence (PSRG) and queries (PCRG) are generated from E_D.

    Example:
        >>> from feature_pipeline.spec import TableSpec
        >>> from torchrec import KeyedJaggedTensor as KJT
        >>> t = lambda name, n: TableSpec(name=name, num_embeddings=n, embedding_dim=4, hashed=True)
        >>> F = FeatureSpec.Feature
        >>> spec = FeatureSpec(seq_len=4, tables=(t("item", 9), t("domain", 3)), features=(
        ...     F(name="item_id", kind=FeatureKind.SPARSE, table="item"), F(name="domain", kind=FeatureKind.DOMAIN, table="domain"),
        ...     F(name="hist_item_id", kind=FeatureKind.SEQUENCE, table="item"), F(name="click", kind=FeatureKind.LABEL)))
        >>> model = ADS(ADSConfig(domain_features=(), num_chunks=2, hidden_dim=8, attention_hidden=(8,), tower_hidden=(8,)), spec)
        >>> batch = Batch(sparse=KJT.from_lengths_sync(keys=["item_id", "domain"], values=torch.tensor([1, 2, 0, 1]), lengths=torch.ones(4, dtype=torch.long)),
        ...     sequence=KJT.from_lengths_sync(keys=["hist_item_id"], values=torch.tensor([5, 6, 7]), lengths=torch.tensor([2, 1])),
        ...     dense=torch.zeros(2, 0), labels=torch.zeros(2, 1), domain=torch.tensor([0, 1]), user=torch.zeros(2, dtype=torch.long))
        >>> model(batch).logits.shape
        torch.Size([2, 1])
    """

    def __init__(self, cfg: ADSConfig, spec: FeatureSpec, *, device: torch.device | str | None = None) -> None:
        super().__init__(cfg, spec, device=device)
        self.domain_keys = domain_feature_keys(cfg, spec)
        if cfg.num_chunks is not None and cfg.num_chunks > spec.seq_len:
            raise ConfigError(
                f"`num_chunks` = {cfg.num_chunks} exceeds the sequence length T = {spec.seq_len}; "
                f"use at most {spec.seq_len} chunks (or None for one query per position)"
            )
        d = self.view.dim  # d_S = d_Q
        d_domain = sum(self.embedding.feature_dims[k] for k in self.domain_keys)  # d_D
        with device_scope(device):
            self.psrg = PSRG(d, d_domain, hidden_dim=cfg.hidden_dim, eta=cfg.eta) if cfg.psrg else None
            self.pcrg = (
                PCRG(d, d_domain, hidden_dim=cfg.hidden_dim, seq_len=spec.seq_len, num_chunks=cfg.num_chunks)
                if cfg.pcrg
                else None
            )
            self.attention = build_target_attention(cfg, d, d)
            self.tower = self._tower(self.d_sparse + self.attention.out_dim)
        self._init_weights()

    def forward(self, batch: Batch) -> ModelOutput:
        """Score a batch.

        Args:
            batch: sparse (keys spec.sparse_keys), sequence (jagged, ≤ T), dense (B, F).

        Returns:
            logits (B, n_labels).
        """
        emb = self.embedding(batch.sparse, batch.sequence)
        e_q, e_s = self.view(emb)  # (B, d_Q), (B, T, d_S)
        e_d = torch.cat([emb.sparse[k] for k in self.domain_keys], dim=-1)  # (B, d_D)
        if self.psrg is not None:
            e_s = self.psrg(e_s, e_d)  # (B, T, d_S) E_S-personalized
        query = self.pcrg(e_q, e_d) if self.pcrg is not None else e_q  # (B, T, d_Q) or (B, d_Q) tiled by the attention
        interest = self.attention(query, e_s, emb.mask)  # (B, d) DIN or (B, H·Dh) MHA
        logits = self.tower([*self._sparse_groups(emb.sparse), interest], batch.dense)  # (B, n_labels)
        return ModelOutput(logits=logits)


PRESETS: dict[str, ADSConfig] = {
    "ADS-DIN": ADSConfig(backbone=Backbone.DIN),
    "ADS-MHA": ADSConfig(backbone=Backbone.MHA),
    "ADS-MHA-chunk10": ADSConfig(backbone=Backbone.MHA, num_chunks=10),
}
"""Named configs: ADS on each backbone (unchunked, the paper's best) and a chunked variant."""
