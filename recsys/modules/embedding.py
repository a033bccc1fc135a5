"""The embedding layer of the target-attention models: TorchRec tables built from a feature spec.

Every table a sequence feature uses lives in an un-pooled :class:`torchrec.EmbeddingCollection`;
the sparse features on those same tables (``item_id``, ``category_id``, ``domain``) are looked up by
that same collection, so the candidate and its history share rows (DIN §4, ADS §2.1). Every other
sparse feature goes through one sum-pooled :class:`torchrec.EmbeddingBagCollection`. TorchRec's
``EmbeddingCollection`` needs one width for all its tables, so sequence tables are grouped by
width, one collection per width.

Sequences arrive jagged, oldest first, 0..T items per sample (``feature_pipeline.batch``). They
leave **right-aligned**: the most recent item sits at position T − 1 and padding is on the left,
so a position index means the same recency for every sample (which ADS's per-position queries and
chunks rely on). Example, T = 3, ``hist_item_id`` = [[5, 6], [7]]::

    jagged        padded (B, T, D)        mask (B, T)
    0 | 5 6       0 | pad  e5   e6        0 | F T T
    1 | 7         1 | pad  pad  e7        1 | F F T

All sequence features of a sample are parallel lists of the same events, so one mask (from the
first sequence feature's lengths) serves them all. ``forward`` does not validate its inputs and
has no data-dependent Python control flow, so DMP can shard both collections (the sharded modules
return the same ``Dict[str, JaggedTensor]`` / ``KeyedTensor`` that all access goes through).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    EmbeddingCollection,
    EmbeddingConfig,
    JaggedTensor,
    KeyedJaggedTensor,
)

from feature_pipeline.spec import FeatureKind, FeatureSpec
from recsys.configs import EmbeddingLayerConfig
from seedrec.errors import ConfigError

__all__ = ["EmbeddedFeatures", "SparseArch", "CandidateSequenceView", "table_dims", "right_align"]


def table_dims(spec: FeatureSpec, cfg: EmbeddingLayerConfig) -> dict[str, int]:
    """Width of every table of ``spec`` after the config's ``dim`` and ``dim_overrides``.

    Raises:
        ConfigError: ``dim_overrides`` names a table the spec does not have.
    """
    names = [t.name for t in spec.tables]
    unknown = sorted(set(cfg.dim_overrides) - set(names))
    if unknown:
        raise ConfigError(f"`embedding.dim_overrides` names unknown table(s) {unknown}; the spec has {names}")
    dims = {t.name: cfg.dim if cfg.dim is not None else t.embedding_dim for t in spec.tables}
    dims.update(cfg.dim_overrides)
    return dims


def right_align(padded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Move each row's L leading items to the end: (B, T, D) left-aligned → right-aligned.

    Row b is rotated by L_b: position t reads left-aligned position (t + L_b) mod T, which is item
    t − (T − L_b) for t ≥ T − L_b and padding before. ``lengths`` must be ≤ T.
    """
    B, T, D = padded.shape
    src = (torch.arange(T, device=padded.device)[None, :] + lengths[:, None]) % T  # (B, T)
    return torch.gather(padded, 1, src[:, :, None].expand(B, T, D))  # (B, T, D)


@dataclass
class EmbeddedFeatures:
    """The embedding layer's output.

    Attributes:
        sparse: feature name → (B, D_f), for every key of ``spec.sparse_keys`` (domain included).
        sequence: feature name → (B, T, D_f), right-aligned, zeros at padding.
        mask: (B, T) bool, True at real (non-padded) positions.
        lengths: (B,) int64, the number of real positions per sample.
    """

    sparse: dict[str, torch.Tensor]
    sequence: dict[str, torch.Tensor]
    mask: torch.Tensor
    lengths: torch.Tensor


class SparseArch(nn.Module):
    """Looks up every sparse and sequence feature of a :class:`FeatureSpec` in TorchRec tables.

    Tables are named as in the spec and keep its ``num_embeddings``; widths come from the spec
    unless ``cfg`` overrides them. Initialisation is TorchRec's default (uniform ±√(1/rows)), which
    sharded tables apply too.

    Example:
        >>> from feature_pipeline.spec import FeatureKind, FeatureSpec, TableSpec
        >>> spec = FeatureSpec(seq_len=3, tables=(
        ...     TableSpec(name="item", num_embeddings=10, embedding_dim=4, hashed=True),
        ...     TableSpec(name="hour", num_embeddings=25, embedding_dim=2, hashed=True)), features=(
        ...     FeatureSpec.Feature(name="item_id", kind=FeatureKind.SPARSE, table="item"),
        ...     FeatureSpec.Feature(name="hour", kind=FeatureKind.SPARSE, table="hour"),
        ...     FeatureSpec.Feature(name="hist_item_id", kind=FeatureKind.SEQUENCE, table="item")))
        >>> arch = SparseArch(spec)
        >>> sparse = KeyedJaggedTensor.from_lengths_sync(keys=["item_id", "hour"],
        ...     values=torch.tensor([1, 2, 7, 8]), lengths=torch.tensor([1, 1, 1, 1]))
        >>> seq = KeyedJaggedTensor.from_lengths_sync(keys=["hist_item_id"],
        ...     values=torch.tensor([5, 6, 7]), lengths=torch.tensor([2, 1]))
        >>> out = arch(sparse, seq)
        >>> out.sparse["hour"].shape, out.sequence["hist_item_id"].shape, out.mask.tolist()
        (torch.Size([2, 2]), torch.Size([2, 3, 4]), [[False, True, True], [False, False, True]])
    """

    def __init__(
        self,
        spec: FeatureSpec,
        cfg: EmbeddingLayerConfig | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        cfg = cfg or EmbeddingLayerConfig()
        device = torch.device(device) if device is not None else None
        dims = table_dims(spec, cfg)
        self.seq_len = spec.seq_len
        self.sparse_keys: list[str] = spec.sparse_keys
        self.sequence_keys: list[str] = spec.sequence_keys
        table_of = {f.name: f.table for f in spec.features if f.table is not None}

        # Tables of sequence features, grouped by width (one EmbeddingCollection per width).
        seq_tables: list[str] = []
        for name in self.sequence_keys:
            if table_of[name] not in seq_tables:
                seq_tables.append(table_of[name])
        groups: dict[int, list[str]] = {}
        for t in seq_tables:
            groups.setdefault(dims[t], []).append(t)

        self.sequence_collections = nn.ModuleDict()
        # Static KJT plans per group: which sparse and which sequence keys it reads.
        self._group_sparse_idx: dict[str, list[int]] = {}
        self._group_seq_idx: dict[str, list[int]] = {}
        self._group_keys: dict[str, list[str]] = {}
        for dim, tables in groups.items():
            group = f"dim{dim}"
            sparse_idx = [i for i, k in enumerate(self.sparse_keys) if table_of[k] in tables]
            seq_idx = [i for i, k in enumerate(self.sequence_keys) if table_of[k] in tables]
            configs = [
                EmbeddingConfig(
                    name=t,
                    num_embeddings=spec.table(t).num_embeddings,
                    embedding_dim=dim,
                    feature_names=[self.sparse_keys[i] for i in sparse_idx if table_of[self.sparse_keys[i]] == t]
                    + [self.sequence_keys[i] for i in seq_idx if table_of[self.sequence_keys[i]] == t],
                )
                for t in tables
            ]
            self.sequence_collections[group] = EmbeddingCollection(tables=configs, device=device)
            self._group_sparse_idx[group] = sparse_idx
            self._group_seq_idx[group] = seq_idx
            self._group_keys[group] = [self.sparse_keys[i] for i in sparse_idx] + [self.sequence_keys[i] for i in seq_idx]

        # Every other sparse feature: one sum-pooled bag collection.
        self._pooled_idx = [i for i, k in enumerate(self.sparse_keys) if table_of[k] not in seq_tables]
        pooled_tables: list[str] = []
        for i in self._pooled_idx:
            if table_of[self.sparse_keys[i]] not in pooled_tables:
                pooled_tables.append(table_of[self.sparse_keys[i]])
        self.pooled_collection: EmbeddingBagCollection | None = None
        if pooled_tables:
            self.pooled_collection = EmbeddingBagCollection(
                tables=[
                    EmbeddingBagConfig(
                        name=t,
                        num_embeddings=spec.table(t).num_embeddings,
                        embedding_dim=dims[t],
                        feature_names=[self.sparse_keys[i] for i in self._pooled_idx if table_of[self.sparse_keys[i]] == t],
                    )
                    for t in pooled_tables
                ],
                device=device,
            )

        self.feature_dims: dict[str, int] = {k: dims[table_of[k]] for k in self.sparse_keys + self.sequence_keys}
        """Width of every sparse and sequence feature's embedding."""
        self.feature_tables: dict[str, str] = {k: table_of[k] for k in self.sparse_keys + self.sequence_keys}
        """Table of every sparse and sequence feature."""

    def forward(self, sparse: KeyedJaggedTensor, sequence: KeyedJaggedTensor) -> EmbeddedFeatures:
        """Look up every feature.

        Args:
            sparse: keys ``spec.sparse_keys``, every length 1.
            sequence: keys ``spec.sequence_keys``, lengths 0..T, oldest first, parallel across keys.

        Returns:
            Sparse embeddings (B, D_f), right-aligned sequences (B, T, D_f), the (B, T) mask and lengths.
        """
        T = self.seq_len
        jts: dict[str, JaggedTensor] = {}
        for group, collection in self.sequence_collections.items():
            seq_part = sequence.permute(self._group_seq_idx[group])
            if self._group_sparse_idx[group]:
                sparse_part = sparse.permute(self._group_sparse_idx[group])
                features = KeyedJaggedTensor(
                    keys=self._group_keys[group],
                    values=torch.cat([sparse_part.values(), seq_part.values()]),  # (ΣL,)
                    lengths=torch.cat([sparse_part.lengths(), seq_part.lengths()]),  # (F·B,)
                )
            else:
                features = seq_part
            looked_up = collection(features)
            for key in self._group_keys[group]:
                jts[key] = looked_up[key]  # index, not iterate: the output may be a traced proxy

        out_sparse: dict[str, torch.Tensor] = {}
        if self.pooled_collection is not None:
            pooled = self.pooled_collection(sparse.permute(self._pooled_idx))  # KeyedTensor
            for i in self._pooled_idx:
                out_sparse[self.sparse_keys[i]] = pooled[self.sparse_keys[i]]  # (B, D)
        for key in self.sparse_keys:
            if key not in out_sparse:
                out_sparse[key] = jts[key].to_padded_dense(desired_length=1)[:, 0]  # (B, 1, D) -> (B, D)
        out_sparse = {key: out_sparse[key] for key in self.sparse_keys}  # spec order

        if self.sequence_keys:
            lengths = jts[self.sequence_keys[0]].lengths().clamp(max=T)  # (B,)
        else:  # a spec without sequences: every position is padding
            lengths = torch.zeros(sparse.stride(), dtype=torch.long, device=sparse.values().device)  # (B,)
        out_seq = {
            key: right_align(jts[key].to_padded_dense(desired_length=T), lengths)  # (B, T, D)
            for key in self.sequence_keys
        }
        positions = torch.arange(T, device=lengths.device)  # (T,)
        mask = positions[None, :] >= (T - lengths)[:, None]  # (B, T)
        return EmbeddedFeatures(sparse=out_sparse, sequence=out_seq, mask=mask, lengths=lengths)


class CandidateSequenceView(nn.Module):
    """The candidate E_Q (B, d) and the behaviour sequence E_S (B, T, d) target attention compares.

    E_S concatenates every sequence feature per position (``hist_item_id``, ``hist_category_id``,
    ``hist_domain``, ``hist_action``). E_Q concatenates, in the same order, the sparse feature that
    shares each one's table (``item_id``, ``category_id``, ``domain``), so q − k and q ⊙ k line up
    (DIN's activation unit). A sequence feature with no such partner (``hist_action``: the candidate
    has no action yet) gets a learned candidate-side vector, i.e. "the action being predicted".
    Both are d = Σ widths of the sequence features wide.

    Example:
        >>> view = CandidateSequenceView(["hist_item_id", "hist_action"], {"hist_item_id": "item_id"},
        ...     {"item_id": 4, "hist_item_id": 4, "hist_action": 2})
        >>> emb = EmbeddedFeatures(sparse={"item_id": torch.randn(2, 4)},
        ...     sequence={"hist_item_id": torch.randn(2, 3, 4), "hist_action": torch.randn(2, 3, 2)},
        ...     mask=torch.ones(2, 3, dtype=torch.bool), lengths=torch.tensor([3, 3]))
        >>> e_q, e_s = view(emb)
        >>> view.dim, e_q.shape, e_s.shape
        (6, torch.Size([2, 6]), torch.Size([2, 3, 6]))
    """

    def __init__(
        self,
        sequence_keys: list[str],
        partners: dict[str, str],
        feature_dims: dict[str, int],
        *,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.sequence_keys = list(sequence_keys)
        self.partners = dict(partners)
        # One flat parameter owned by this module (not a ParameterDict child): DMP materialises a
        # meta module's own parameters and then calls that module's reset_parameters.
        self.slot_spans: dict[str, tuple[int, int]] = {}
        start = 0
        for k in self.sequence_keys:
            if k not in self.partners:
                self.slot_spans[k] = (start, start + feature_dims[k])
                start += feature_dims[k]
        self.slots = nn.Parameter(torch.empty(start, device=device))
        self.dim = sum(feature_dims[k] for k in self.sequence_keys)
        self.reset_parameters()

    @classmethod
    def from_spec(cls, spec: FeatureSpec, arch: SparseArch, *, device: torch.device | str | None = None) -> CandidateSequenceView:
        """Pair each sequence feature with the first sparse (then domain) feature on its table."""
        order = [f.name for f in spec.of_kind(FeatureKind.SPARSE)] + [f.name for f in spec.of_kind(FeatureKind.DOMAIN)]
        partners: dict[str, str] = {}
        for k in arch.sequence_keys:
            for s in order:
                if arch.feature_tables[s] == arch.feature_tables[k]:
                    partners[k] = s
                    break
        return cls(arch.sequence_keys, partners, arch.feature_dims, device=device)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.slots, std=0.01)  # [I] small, like a fresh embedding row

    def _slot(self, key: str) -> torch.Tensor:
        start, end = self.slot_spans[key]
        return self.slots[start:end]  # (D_k,)

    def forward(self, emb: EmbeddedFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: emb: the embedding layer's output. Returns: E_Q (B, d) and E_S (B, T, d)."""
        B = emb.mask.shape[0]
        e_q = torch.cat(
            [
                emb.sparse[self.partners[k]] if k in self.partners else self._slot(k).expand(B, -1)  # (B, D_k)
                for k in self.sequence_keys
            ],
            dim=-1,
        )  # (B, d)
        e_s = torch.cat([emb.sequence[k] for k in self.sequence_keys], dim=-1)  # (B, T, d)
        return e_q, e_s
