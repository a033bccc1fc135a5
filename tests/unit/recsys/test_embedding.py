"""SparseArch / CandidateSequenceView: tables, shared rows, right-aligned padding, meta, fx."""

from __future__ import annotations

import pytest
import torch
import torchrec.fx
from torchrec import EmbeddingBagCollection, EmbeddingCollection, KeyedJaggedTensor

from feature_pipeline.spec import FeatureKind, FeatureSpec, TableSpec
from recsys.configs import EmbeddingLayerConfig
from recsys.modules.embedding import CandidateSequenceView, SparseArch, right_align
from seedrec.errors import ConfigError

T = 4
# Widths chosen so the sequence tables fall into three width groups (8, 4, 2).
DIMS = {"user": 6, "item": 8, "category": 4, "domain": 4, "action": 2, "hour": 3, "device": 3,
        "age_bucket": 2, "gender": 2, "activity": 2}
ROWS = {"user": 20, "item": 30, "category": 6, "domain": 4, "action": 3, "hour": 25, "device": 4,
        "age_bucket": 7, "gender": 3, "activity": 4}


@pytest.fixture
def spec() -> FeatureSpec:
    F = FeatureSpec.Feature
    sparse = [("user_id", "user"), ("item_id", "item"), ("category_id", "category"), ("hour", "hour"),
              ("device", "device"), ("age_bucket", "age_bucket"), ("gender", "gender"), ("activity", "activity")]
    seq = [("hist_item_id", "item"), ("hist_category_id", "category"), ("hist_domain", "domain"), ("hist_action", "action")]
    return FeatureSpec(
        seq_len=T,
        tables=tuple(TableSpec(name=n, num_embeddings=ROWS[n], embedding_dim=DIMS[n], hashed=True) for n in DIMS),
        features=(
            *(F(name=n, kind=FeatureKind.SPARSE, table=t) for n, t in sparse),
            F(name="domain", kind=FeatureKind.DOMAIN, table="domain"),
            *(F(name=n, kind=FeatureKind.SEQUENCE, table=t) for n, t in seq),
            F(name="price", kind=FeatureKind.DENSE),
            F(name="click", kind=FeatureKind.LABEL),
        ),
        domains=("a", "b", "c"),
    )


def _kjts(spec: FeatureSpec, lengths: list[int], seed: int = 0) -> tuple[KeyedJaggedTensor, KeyedJaggedTensor]:
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    sparse_vals = [torch.randint(1, ROWS[spec.feature(k).table], (B,), generator=g) for k in spec.sparse_keys]
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=spec.sparse_keys, values=torch.cat(sparse_vals), lengths=torch.ones(len(sparse_vals) * B, dtype=torch.long)
    )
    L = torch.tensor(lengths)
    seq_vals = [torch.randint(1, ROWS[spec.feature(k).table], (int(L.sum()),), generator=g) for k in spec.sequence_keys]
    sequence = KeyedJaggedTensor.from_lengths_sync(
        keys=spec.sequence_keys, values=torch.cat(seq_vals), lengths=L.repeat(len(seq_vals))
    )
    return sparse, sequence


def test_tables_and_feature_names(spec: FeatureSpec) -> None:
    arch = SparseArch(spec)
    ec_tables = {
        c.name: c.feature_names for ec in arch.sequence_collections.values() for c in ec.embedding_configs()
    }
    assert ec_tables == {
        "item": ["item_id", "hist_item_id"],
        "category": ["category_id", "hist_category_id"],
        "domain": ["domain", "hist_domain"],
        "action": ["hist_action"],
    }
    assert sorted(arch.sequence_collections) == ["dim2", "dim4", "dim8"]  # one EC per width
    assert isinstance(arch.pooled_collection, EmbeddingBagCollection)
    assert {c.name: c.feature_names for c in arch.pooled_collection.embedding_bag_configs()} == {
        "user": ["user_id"], "hour": ["hour"], "device": ["device"], "age_bucket": ["age_bucket"],
        "gender": ["gender"], "activity": ["activity"],
    }
    assert arch.feature_dims["hist_item_id"] == 8 and arch.feature_dims["domain"] == 4


def test_shapes_mask_and_right_alignment(spec: FeatureSpec) -> None:
    arch = SparseArch(spec)
    lengths = [2, 0, 4, 1]
    sparse, sequence = _kjts(spec, lengths)
    out = arch(sparse, sequence)
    B = len(lengths)
    assert list(out.sparse) == spec.sparse_keys
    for k in spec.sparse_keys:
        assert out.sparse[k].shape == (B, DIMS[spec.feature(k).table])
    for k in spec.sequence_keys:
        assert out.sequence[k].shape == (B, T, DIMS[spec.feature(k).table])
    assert out.mask.tolist() == [[False, False, True, True], [False] * 4, [True] * 4, [False, False, False, True]]
    assert out.lengths.tolist() == lengths
    # Content: the oldest-first jagged list lands at positions T−L .. T−1, padding is zeros.
    weight = arch.sequence_collections["dim8"].embeddings["item"].weight
    ids = sequence["hist_item_id"].to_dense()
    for b, L in enumerate(lengths):
        torch.testing.assert_close(out.sequence["hist_item_id"][b, T - L :], weight[ids[b]], rtol=0, atol=0)
        assert out.sequence["hist_item_id"][b, : T - L].abs().sum() == 0


def test_candidate_and_history_share_rows(spec: FeatureSpec) -> None:
    arch = SparseArch(spec)
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=spec.sparse_keys, values=torch.full((len(spec.sparse_keys) * 2,), 2), lengths=torch.ones(18, dtype=torch.long)
    )
    sequence = KeyedJaggedTensor.from_lengths_sync(
        keys=spec.sequence_keys, values=torch.full((4 * 3,), 2), lengths=torch.tensor([1, 2] * 4)
    )
    out = arch(sparse, sequence)
    for cand, hist in (("item_id", "hist_item_id"), ("category_id", "hist_category_id"), ("domain", "hist_domain")):
        assert torch.equal(out.sparse[cand][0], out.sequence[hist][0, -1])


def test_gradients_reach_the_rows(spec: FeatureSpec) -> None:
    arch = SparseArch(spec)
    sparse, sequence = _kjts(spec, [3, 1])
    out = arch(sparse, sequence)
    (sum(v.sum() for v in out.sparse.values()) + sum(v.sum() for v in out.sequence.values())).backward()
    item_grad = arch.sequence_collections["dim8"].embeddings["item"].weight.grad
    used = torch.cat([sparse["item_id"].values(), sequence["hist_item_id"].values()]).unique()
    assert (item_grad[used].abs().sum(1) > 0).all()
    assert item_grad.abs().sum() == item_grad[used].abs().sum()


def test_candidate_sequence_view(spec: FeatureSpec) -> None:
    arch = SparseArch(spec)
    view = CandidateSequenceView.from_spec(spec, arch)
    assert view.partners == {"hist_item_id": "item_id", "hist_category_id": "category_id", "hist_domain": "domain"}
    assert view.slot_spans == {"hist_action": (0, 2)}  # no candidate-side action: a learned slot
    assert view.slots.shape == (2,)
    out = arch(*_kjts(spec, [2, 4, 0]))
    e_q, e_s = view(out)
    assert view.dim == 8 + 4 + 4 + 2
    assert e_q.shape == (3, view.dim) and e_s.shape == (3, T, view.dim)
    assert torch.equal(e_q[:, :8], out.sparse["item_id"])


def test_builds_on_meta(spec: FeatureSpec) -> None:
    arch = SparseArch(spec, device="meta")
    assert {p.device.type for p in arch.parameters()} == {"meta"}
    assert all(isinstance(m, EmbeddingCollection) for m in arch.sequence_collections.values())


def test_dim_overrides(spec: FeatureSpec) -> None:
    arch = SparseArch(spec, EmbeddingLayerConfig(dim=5, dim_overrides={"user": 7}))
    assert arch.feature_dims["item_id"] == 5 and arch.feature_dims["user_id"] == 7
    assert list(arch.sequence_collections) == ["dim5"]
    with pytest.raises(ConfigError, match="`embedding.dim_overrides`.*'nope'"):
        SparseArch(spec, EmbeddingLayerConfig(dim_overrides={"nope": 4}))
    with pytest.raises(ConfigError, match="`dim`"):
        EmbeddingLayerConfig(dim=0)
    with pytest.raises(ConfigError, match="`dim_overrides`"):
        EmbeddingLayerConfig(dim_overrides={"item": -1})


def test_right_align() -> None:
    padded = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])[:, :, None]
    out = right_align(padded, torch.tensor([2, 1, 0]))
    assert out[:, :, 0].tolist() == [[0.0, 1.0, 2.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0]]


def test_fx_traceable(spec: FeatureSpec) -> None:
    """No data-dependent Python control flow: TorchRec's tracer (used by its pipelines) gets through."""
    arch = SparseArch(spec)
    traced = torchrec.fx.symbolic_trace(arch)
    sparse, sequence = _kjts(spec, [1, 3])
    assert torch.equal(traced(sparse, sequence).sequence["hist_item_id"], arch(sparse, sequence).sequence["hist_item_id"])
