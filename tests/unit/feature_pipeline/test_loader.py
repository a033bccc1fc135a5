"""Tests of the sample loader (feature_pipeline/loader.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_pipeline import log_io
from feature_pipeline.batch import Batch
from feature_pipeline.build_config import BuildConfig
from feature_pipeline.loader import SampleLoader
from feature_pipeline.samples import build_samples
from feature_pipeline.schemas import TS_TYPE
from feature_pipeline.transform import FeatureTransform
from seedrec.errors import ConfigError, DataError


class RecordingTransform(FeatureTransform):
    """The real transform, also reading `request_id` so tests can see which rows each batch held."""

    def __init__(self, base: FeatureTransform) -> None:
        super().__init__(base.spec, base.vocabs)
        self.seen: list[list[str]] = []

    @property
    def columns(self) -> list[str]:
        return [*super().columns, "request_id"]

    def to_batch(self, table: pa.Table | pa.RecordBatch) -> Batch:
        self.seen.append(table.column("request_id").to_pylist())
        return super().to_batch(table)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(1)
    t0, day = 1_704_067_200_000, 86_400_000  # 2024-01-01
    n_ev, n_imp, days = 600, 1500, 4
    ev = pa.table(
        {
            "ts": pa.array(t0 + rng.integers(0, days * day, n_ev), TS_TYPE),
            "user_id": pa.array(rng.integers(0, 20, n_ev)),
            "item_id": pa.array(rng.integers(0, 30, n_ev)),
            "domain": pa.array(rng.choice(["feed", "search"], n_ev)),
            "action": pa.array(rng.choice(["click", "purchase"], n_ev)),
        }
    )
    imp = pa.table(
        {
            "request_id": pa.array([f"q{i}" for i in range(n_imp)]),
            "ts": pa.array(t0 + rng.integers(0, days * day, n_imp), TS_TYPE),
            "user_id": pa.array(rng.integers(0, 20, n_imp)),
            "domain": pa.array(rng.choice(["feed", "search"], n_imp)),
            "item_id": pa.array(rng.integers(0, 30, n_imp)),
            "position": pa.array(rng.integers(0, 5, n_imp).astype(np.int32)),
            "click": pa.array(rng.integers(0, 2, n_imp).astype(np.int8)),
            "purchase": pa.array(rng.integers(0, 2, n_imp).astype(np.int8)),
            "device": pa.array(rng.choice(["ios", "web"], n_imp)),
        }
    )
    logs = root / "logs"
    log_io.write_partitioned(logs, "events", ev)
    log_io.write_partitioned(logs, "impressions", imp)
    log_io.write_table(logs, "items", pa.table({"item_id": np.arange(30), "category_id": np.arange(30) % 4, "price": np.ones(30)}))
    out = root / "samples"
    build_samples(logs, out, BuildConfig(seq_len=4, min_freq=1, row_group_size=97, progress=False))
    return out


def split_ids(samples: Path, split: str) -> list[str]:
    files = sorted((samples / split).glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f, columns=["request_id"]).column("request_id").to_pylist()]


def run_epoch(samples: Path, split: str = "train", *, epoch: int = 0, **kw: object) -> tuple[list[list[str]], list[Batch]]:
    tf = RecordingTransform(FeatureTransform.from_spec_dir(samples))
    loader = SampleLoader(samples, split, transform=tf, **kw)  # type: ignore[arg-type]  # test kwargs
    loader.set_epoch(epoch)
    batches = list(loader)
    assert len(batches) == len(loader)
    return tf.seen, batches


def test_covers_every_row_once_in_order(samples: Path) -> None:
    seen, batches = run_epoch(samples, batch_size=64)
    ids = split_ids(samples, "train")
    assert [r for b in seen for r in b] == ids
    assert all(len(b) == 64 for b in seen[:-1]) and 0 < len(seen[-1]) <= 64
    spec = FeatureTransform.from_spec_dir(samples).spec
    for b in batches:
        assert b.sparse.keys() == spec.sparse_keys and b.sequence.keys() == spec.sequence_keys
        assert b.sparse.lengths().eq(1).all() and b.sequence.lengths().le(spec.seq_len).all()
    assert sum(b.batch_size for b in batches) == len(ids)


def test_shuffle_is_a_deterministic_permutation(samples: Path) -> None:
    ids = split_ids(samples, "train")
    kw = {"batch_size": 50, "shuffle": True, "seed": 3, "shuffle_buffer": 300}
    a = [r for b in run_epoch(samples, **kw)[0] for r in b]
    b = [r for b in run_epoch(samples, **kw)[0] for r in b]
    c = [r for b in run_epoch(samples, epoch=1, **kw)[0] for r in b]
    assert Counter(a) == Counter(ids) == Counter(c)
    assert a == b and a != ids and a != c


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_disjoint_with_equal_batch_counts(samples: Path, shuffle: bool, drop_last: bool) -> None:
    ids = split_ids(samples, "train")
    W, B = 3, 40
    per_rank = [
        run_epoch(samples, batch_size=B, shuffle=shuffle, drop_last=drop_last, rank=r, world_size=W, shuffle_buffer=200)[0]
        for r in range(W)
    ]
    counts = {len(s) for s in per_rank}
    assert len(counts) == 1  # every rank yields the same number of batches
    rows = [[r for b in s for r in b] for s in per_rank]
    flat = [r for rr in rows for r in rr]
    assert len(flat) == len(set(flat))  # disjoint
    assert set(flat) <= set(ids)
    expected = (len(ids) // W) // B * B * W if drop_last else len(ids) - W  # at most one row dropped per rank
    assert len(flat) >= expected
    if drop_last:
        assert all(len(b) == B for s in per_rank for b in s)


def test_sizes_and_errors(samples: Path) -> None:
    loader = SampleLoader(samples, "valid", batch_size=10)
    assert loader.num_rows == len(split_ids(samples, "valid"))
    assert len(loader) == -(-loader.num_rows // 10)
    assert len(SampleLoader(samples, "valid", batch_size=10, drop_last=True)) == loader.num_rows // 10
    with pytest.raises(ConfigError, match="`rank`"):
        SampleLoader(samples, "train", batch_size=8, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="`batch_size`"):
        SampleLoader(samples, "train", batch_size=0)
    with pytest.raises(DataError, match="nope"):
        SampleLoader(samples, "nope", batch_size=8)
