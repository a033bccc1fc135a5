"""DIN: Deep Interest Network (Zhou et al., "Deep Interest Network for Click-Through Rate
Prediction", KDD 2018; ``shared/specs/lmn-ads.md`` §3.3), and multi-head target attention.

    E_Q = [item_id ; category_id ; domain ; a]          the candidate (B, d); a: learned "action" slot
    E_S = [hist_item_id ; hist_category_id ; ...]_t     the behaviours (B, T, d), right-aligned
    v_U = Σ_t a(E_Q, E_S[t]) · E_S[t]                   DIN §4.3, a = MLP([q, k, q−k, q⊙k]), no softmax
       or MHA(E_Q, E_S)                                 ``backbone="mha"``: masked softmax per head
    ŷ = MLP([every sparse embedding ; BN(dense) ; v_U])  one logit per label head

The helpers here (spec checks, the base :class:`TargetAttentionModel`) are shared by ADS and LMN,
which change how E_Q / E_S are formed and what joins the tower.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingCollection

from feature_pipeline.batch import Batch
from feature_pipeline.spec import FeatureSpec
from recsys.configs import Backbone, DINConfig, ModelConfig
from recsys.modules.attention import build_target_attention
from recsys.modules.embedding import CandidateSequenceView, SparseArch
from recsys.modules.mlp import Tower, reset_dense_parameters
from recsys.outputs import ModelOutput
from seedrec.errors import ConfigError

__all__ = ["DIN", "TargetAttentionModel", "check_spec", "check_sparse_features", "device_scope", "PRESETS"]


# ---- helpers ------------------------------------------------------------------------------------
def check_spec(spec: FeatureSpec) -> None:
    """Refuse a spec a target-attention model cannot use.

    Raises:
        ConfigError: no sequence feature (nothing to attend over) or no label (no head).
    """
    if not spec.sequence_keys:
        raise ConfigError("the feature spec has no `sequence` feature; target attention needs a behaviour sequence")
    if not spec.label_names:
        raise ConfigError("the feature spec has no `label` feature; the model needs at least one head")


def check_sparse_features(names: tuple[str, ...], spec: FeatureSpec, *, field: str) -> None:
    """Refuse config feature names that are not sparse (or domain) features of ``spec``.

    Raises:
        ConfigError: naming ``field``, the unknown names and the available ones.
    """
    unknown = [n for n in names if n not in spec.sparse_keys]
    if unknown:
        raise ConfigError(
            f"`{field}` names {unknown}, which are not sparse features of the spec; choose from {spec.sparse_keys}"
        )


@contextlib.contextmanager
def device_scope(device: torch.device | str | None) -> Iterator[None]:
    """Create the dense modules' parameters on ``device`` (``meta`` for DMP to materialise)."""
    if device is None:
        yield
    else:
        with torch.device(device):
            yield


# ---- the model ----------------------------------------------------------------------------------
class TargetAttentionModel(nn.Module):
    """What DIN, ADS and LMN share: the embedding layer, the E_Q/E_S view, the spec's keys.

    Subclasses build their attention and tower and call :meth:`_init_weights` last.
    """

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        check_spec(spec)
        self.cfg = cfg
        self.label_names: list[str] = spec.label_names
        self.sparse_keys: list[str] = spec.sparse_keys
        self.seq_len = spec.seq_len
        self.n_dense = len(spec.dense_names)
        with device_scope(device):
            self.embedding = SparseArch(spec, cfg.embedding, device=device)
            self.view = CandidateSequenceView.from_spec(spec, self.embedding, device=device)
        self.d_sparse = sum(self.embedding.feature_dims[k] for k in self.sparse_keys)

    def _init_weights(self) -> None:
        """All dense init: PyTorch defaults for Linear/norm layers (what DMP gives a meta module too),
        then each block's own ``reset_parameters`` (children first, so a block's paper-specific
        init wins). The embedding tables keep their TorchRec config init."""
        reset_dense_parameters(self, skip=(EmbeddingCollection, EmbeddingBagCollection))

    def _tower(self, in_dim: int) -> Tower:
        """The prediction tower over ``in_dim`` features + the dense block → one logit per head."""
        cfg = self.cfg
        return Tower(in_dim, n_dense=self.n_dense, hidden=cfg.tower_hidden, n_heads=len(self.label_names),
                     activation=cfg.activation, dropout=cfg.dropout)

    def _sparse_groups(self, sparse: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [sparse[k] for k in self.sparse_keys]  # (B, D_f) each, spec order


class DIN(TargetAttentionModel):
    """DIN, or multi-head target attention (``cfg.backbone``), over the spec's behaviour sequence.

    Example:
        >>> from feature_pipeline.spec import FeatureKind as FK, TableSpec
        >>> from torchrec import KeyedJaggedTensor as KJT
        >>> spec = FeatureSpec(seq_len=3, tables=(TableSpec(name="item", num_embeddings=9, embedding_dim=4, hashed=True),),
        ...     features=(FeatureSpec.Feature(name="item_id", kind=FK.SPARSE, table="item"),
        ...               FeatureSpec.Feature(name="hist_item_id", kind=FK.SEQUENCE, table="item"),
        ...               FeatureSpec.Feature(name="click", kind=FK.LABEL)))
        >>> model = DIN(DINConfig(attention_hidden=(8,), tower_hidden=(8,)), spec)
        >>> batch = Batch(sparse=KJT.from_lengths_sync(keys=["item_id"], values=torch.tensor([1, 2]), lengths=torch.tensor([1, 1])),
        ...     sequence=KJT.from_lengths_sync(keys=["hist_item_id"], values=torch.tensor([5, 6, 7]), lengths=torch.tensor([2, 1])),
        ...     dense=torch.zeros(2, 0), labels=torch.zeros(2, 1), domain=torch.zeros(2, dtype=torch.long), user=torch.zeros(2, dtype=torch.long))
        >>> model(batch).logits.shape
        torch.Size([2, 1])
    """

    def __init__(self, cfg: DINConfig, spec: FeatureSpec, *, device: torch.device | str | None = None) -> None:
        super().__init__(cfg, spec, device=device)
        d = self.view.dim
        with device_scope(device):
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
        e_q, e_s = self.view(emb)  # (B, d), (B, T, d)
        interest = self.attention(e_q, e_s, emb.mask)  # (B, d) DIN or (B, H·Dh) MHA
        logits = self.tower([*self._sparse_groups(emb.sparse), interest], batch.dense)  # (B, n_labels)
        return ModelOutput(logits=logits)


PRESETS: dict[str, DINConfig] = {
    "DIN": DINConfig(),
    "DIN-MHA": DINConfig(backbone=Backbone.MHA),
}
"""Named configs: the paper's DIN (units (80, 40), tower (200, 80), PReLU) and its MHA variant."""
