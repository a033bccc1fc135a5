"""Tests of the one transform (feature_pipeline/transform.py): vocabularies and to_batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from feature_pipeline.spec import Feature, FeatureKind, FeatureSpec, TableSpec
from feature_pipeline.transform import FeatureTransform, HashedVocabulary, Vocabulary, splitmix64
from seedrec.errors import DataError, SchemaError


# ---- vocabularies -------------------------------------------------------------------------
def test_int_lookup_and_oov() -> None:
    v = Vocabulary.build(np.array([7, 3, 3, 9, 9, 9]), min_freq=1, name="item")
    assert v.values == [9, 3, 7] and v.counts == [3, 2, 1]  # most frequent first
    assert v.lookup(np.array([9, 3, 7, 8, -1])).tolist() == [1, 2, 3, 0, 0]
    assert v.lookup(pa.array([7, None, 9], pa.int32())).tolist() == [3, 0, 1]  # any int width; null → OOV
    assert v.lookup(pa.chunked_array([[9], [3]])).tolist() == [1, 2]
    assert v.num_rows == 4


def test_string_lookup_and_oov() -> None:
    v = Vocabulary.build(pa.array(["ios", "web", "ios", None]), min_freq=1)
    assert v.dtype == "string" and v.values == ["ios", "web"]
    assert v.lookup(pa.array(["web", "tv", None, "ios"])).tolist() == [2, 0, 0, 1]
    assert v.lookup(pa.array(["web"]).dictionary_encode()).tolist() == [2]
    with pytest.raises(SchemaError, match="strings"):
        v.lookup(np.array([1, 2]))


def test_min_freq_floor() -> None:
    v = Vocabulary.build(np.array([1, 1, 2, 3, 3, 3]), min_freq=2)
    assert v.values == [3, 1]
    assert v.lookup(np.array([2])).tolist() == [0]
    assert Vocabulary.build(np.array([1]), min_freq=2).lookup(np.array([1, 5])).tolist() == [0, 0]  # empty vocab


def test_precounted_build() -> None:
    v = Vocabulary.build(pa.array(["a", "b", "a"]), counts=pa.array([1, 5, 1]), min_freq=2)
    assert v.values == ["b", "a"] and v.counts == [5, 2]


@pytest.mark.parametrize("values", [[5, 1, 9], ["x", "y"]])
def test_json_round_trip(tmp_path: Path, values: list) -> None:
    v = Vocabulary.build(pa.array(values), min_freq=1, name="t")
    w = Vocabulary.load(v.save(tmp_path / "t.json"))
    assert (w.values, w.counts, w.min_freq, w.dtype) == (v.values, v.counts, v.min_freq, v.dtype)
    assert w.lookup(pa.array(values)).tolist() == v.lookup(pa.array(values)).tolist()


def test_empty_vocab_round_trip_keeps_dtype(tmp_path: Path) -> None:
    v = Vocabulary([], dtype="string", name="e")
    assert Vocabulary.load(v.save(tmp_path / "e.json")).dtype == "string"


def test_bad_vocab_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SchemaError, match="bad.json"):
        Vocabulary.load(tmp_path / "bad.json")


def test_hashed_range_and_stability() -> None:
    h = HashedVocabulary(num_rows=101, name="user")
    ids = np.arange(-5000, 5000)
    rows = h.lookup(ids)
    assert rows.min() >= 1 and rows.max() <= 100
    assert len(np.unique(rows)) == 100  # spreads over every row
    assert h.lookup(pa.array([3, None])).tolist() == [int(h.lookup(np.array([3]))[0]), 0]
    # golden values: the hash must never change (packages carry no table for hashed ids)
    assert splitmix64(np.array([0, 1])).tolist() == [16294208416658607535, 10451216379200822465]


# ---- to_batch -----------------------------------------------------------------------------
def tiny_spec(seq_len: int = 3) -> FeatureSpec:
    t = lambda name, n, hashed=False: TableSpec(  # noqa: E731
        name=name, num_embeddings=n, embedding_dim=4, vocab=None if hashed else f"vocab/{name}.json", hashed=hashed
    )
    F, K = Feature, FeatureKind
    return FeatureSpec(
        seq_len=seq_len,
        tables=(t("user", 11, hashed=True), t("item", 10), t("device", 5), t("domain", 3), t("action", 4)),
        features=(
            F(name="user_id", kind=K.SPARSE, table="user"),
            F(name="item_id", kind=K.SPARSE, table="item"),
            F(name="device", kind=K.SPARSE, table="device"),
            F(name="domain", kind=K.DOMAIN, table="domain"),
            F(name="hist_item_id", kind=K.SEQUENCE, table="item"),
            F(name="hist_action", kind=K.SEQUENCE, table="action"),
            F(name="price", kind=K.DENSE),
            F(name="click", kind=K.LABEL),
            F(name="purchase", kind=K.LABEL),
        ),
        domains=("feed", "search"),
        stats={"dense": {"price": {"transform": "log1p", "mean": 0.0, "std": 1.0}}},
    )


def tiny_transform(seq_len: int = 3) -> FeatureTransform:
    return FeatureTransform(
        tiny_spec(seq_len),
        {
            "item": Vocabulary([10, 20, 30]),
            "device": Vocabulary(["ios", "web"]),
            "domain": Vocabulary(["feed", "search"]),
            "action": Vocabulary(["click", "purchase"]),
        },
    )


def sample_table() -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([1, 2, 3], pa.int64()),
            "item_id": pa.array([20, 99, 10], pa.int64()),
            "device": ["web", "ios", None],
            "domain": ["search", "feed", "feed"],
            "hist_item_id": pa.array([[10, 20, 30, 20], [], None], pa.list_(pa.int64())),
            "hist_action": pa.array([["click", "click", "purchase", "like"], [], []], pa.list_(pa.string())),
            "price": pa.array([0.0, np.e - 1, None], pa.float32()),
            "click": pa.array([1, 0, 1], pa.int8()),
            "purchase": pa.array([0, 0, 1], pa.int8()),
            "request_id": ["a", "b", "c"],  # ignored
        }
    )


def test_to_batch_keys_lengths_values() -> None:
    tf = tiny_transform()
    b = tf.to_batch(sample_table())
    spec = tf.spec
    assert b.sparse.keys() == spec.sparse_keys == ["user_id", "item_id", "device", "domain"]
    assert b.sequence.keys() == spec.sequence_keys
    assert b.sparse.lengths().tolist() == [1] * 12
    assert b.sparse["item_id"].values().tolist() == [2, 0, 1]
    assert b.sparse["device"].values().tolist() == [2, 1, 0]
    assert b.sparse["domain"].values().tolist() == [2, 1, 1]
    assert b.domain.tolist() == [1, 0, 0]
    # sequences: last T = 3 kept, oldest first; null list = empty
    assert b.sequence["hist_item_id"].lengths().tolist() == [3, 0, 0]
    assert b.sequence["hist_item_id"].values().tolist() == [2, 3, 2]
    assert b.sequence["hist_action"].values().tolist() == [1, 2, 0]  # `like` is OOV
    users = b.sparse["user_id"].values()
    assert ((users >= 1) & (users <= 10)).all() and b.user.tolist() == [1, 2, 3]  # raw ids, for GAUC
    assert b.dense.shape == (3, 1) and b.dense[:, 0].tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert b.labels.tolist() == [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    assert b.batch_size == 3


def test_to_batch_sliced_record_batch_and_short_t() -> None:
    tf = tiny_transform(seq_len=2)
    rb = sample_table().to_batches()[0].slice(0, 2)
    b = tf.to_batch(rb)
    assert b.sequence["hist_item_id"].lengths().tolist() == [2, 0]
    assert b.sequence["hist_item_id"].values().tolist() == [3, 2]


def test_to_batch_serving_request_missing_columns() -> None:
    tf = tiny_transform()
    req = pa.table({"user_id": pa.array([5, 5]), "item_id": pa.array([10, 30]), "domain": ["feed", "feed"]})
    b = tf.to_batch(req)
    assert b.labels.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert b.sequence.lengths().tolist() == [0, 0, 0, 0]
    assert b.sparse["device"].values().tolist() == [0, 0]


def test_to_batch_unknown_or_missing_domain() -> None:
    tf = tiny_transform()
    with pytest.raises(DataError, match="shop"):
        tf.to_batch(pa.table({"item_id": [10], "domain": ["shop"]}))
    with pytest.raises(DataError, match="`domain`"):
        tf.to_batch(pa.table({"item_id": [10]}))


def test_missing_vocabulary_raises() -> None:
    with pytest.raises(SchemaError, match="`item`"):
        FeatureTransform(tiny_spec(), {"device": Vocabulary(["ios"]), "domain": Vocabulary(["feed"]), "action": Vocabulary(["click"])})
