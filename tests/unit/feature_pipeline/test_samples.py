"""Tests of the point-in-time sample builder (feature_pipeline/samples.py, build_config.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_pipeline import log_io
from feature_pipeline.build_config import BuildConfig
from feature_pipeline.samples import HIST_COLUMNS, EventPool, build_samples, split_days
from feature_pipeline.schemas import TS_TYPE
from feature_pipeline.spec import FeatureKind, FeatureSpec
from feature_pipeline.transform import FeatureTransform
from seedrec.errors import ConfigError, DataError, SchemaError


def ms(s: str) -> int:
    return int(datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp() * 1000)


# ---- a hand-made log where the answer is known ------------------------------------------------
# events: (ts, user, item, domain, action)
EVENTS = [
    ("2024-01-01T10:00", 1, 10, "feed", "click"),
    ("2024-01-01T12:00", 1, 11, "feed", "purchase"),
    ("2024-01-02T08:00", 1, 12, "search", "click"),
    ("2024-01-02T09:00", 1, 13, "feed", "click"),  # same ts as impression r3: must be excluded from r3
    ("2024-01-02T10:00", 2, 10, "feed", "like"),
    ("2024-01-03T10:00", 2, 14, "feed", "click"),
]
# impressions: (request_id, ts, user, domain, item, position, click, purchase, hour, device)
IMPRESSIONS = [
    ("r1", "2024-01-01T09:00", 1, "feed", 10, 0, 1, 0, 9, "ios"),  # no history yet
    ("r2", "2024-01-01T11:00", 1, "feed", 11, 1, 1, 1, 11, "ios"),  # [10]
    ("r3", "2024-01-02T09:00", 1, "search", 12, 0, 0, 0, 9, "web"),  # [10, 11, 12] (13 has equal ts)
    ("r4", "2024-01-02T09:30", 2, "feed", 10, 0, 1, 0, 9, "android"),  # []
    ("r5", "2024-01-03T11:00", 2, "feed", 14, 2, 0, 0, 11, "android"),  # [10, 14]
    ("r6", "2024-01-04T08:00", 1, "feed", 99, 0, 0, 0, 8, "ios"),  # [10, 11, 12, 13]; item 99 only in test
    ("r7", "2024-01-04T08:30", 3, "live", 10, 1, 0, 0, 8, "web"),  # domain `live` only in test
]
ITEMS = {"item_id": [10, 11, 12, 13, 14, 99], "category_id": [100, 100, 101, 101, 102, 103], "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
USERS = {"user_id": [1, 2, 3], "age_bucket": ["18-24", "25-34", "18-24"], "gender": ["f", "m", "f"]}


def write_logs(root: Path, events: list[tuple] = EVENTS, impressions: list[tuple] = IMPRESSIONS) -> Path:
    ev = pa.table(
        {
            "ts": pa.array([ms(e[0]) for e in events], TS_TYPE),
            "user_id": pa.array([e[1] for e in events], pa.int64()),
            "item_id": pa.array([e[2] for e in events], pa.int64()),
            "domain": [e[3] for e in events],
            "action": [e[4] for e in events],
        }
    )
    imp = pa.table(
        {
            "request_id": [r[0] for r in impressions],
            "ts": pa.array([ms(r[1]) for r in impressions], TS_TYPE),
            "user_id": pa.array([r[2] for r in impressions], pa.int64()),
            "domain": [r[3] for r in impressions],
            "item_id": pa.array([r[4] for r in impressions], pa.int64()),
            "position": pa.array([r[5] for r in impressions], pa.int32()),
            "click": pa.array([r[6] for r in impressions], pa.int8()),
            "purchase": pa.array([r[7] for r in impressions], pa.int8()),
            "hour": pa.array([r[8] for r in impressions], pa.int8()),
            "device": [r[9] for r in impressions],
        }
    )
    log_io.write_partitioned(root, "events", ev)
    log_io.write_partitioned(root, "impressions", imp)
    log_io.write_table(root, "items", pa.table(ITEMS))
    log_io.write_table(root, "users", pa.table(USERS))
    return root


def read_split(out: Path, split: str) -> pa.Table:
    files = sorted((out / split).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def by_request(t: pa.Table) -> dict[str, dict]:
    return {r["request_id"]: r for r in t.to_pylist()}


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, FeatureSpec]:
    logs = write_logs(tmp_path / "logs")
    out = tmp_path / "samples"
    spec = build_samples(logs, out, BuildConfig(seq_len=4, min_freq=1, progress=False))
    return out, spec


# ---- exact histories ----------------------------------------------------------------------
def test_exact_histories_strictly_before(built: tuple[Path, FeatureSpec]) -> None:
    out, _ = built
    rows = {**by_request(read_split(out, "train")), **by_request(read_split(out, "valid")), **by_request(read_split(out, "test"))}
    assert rows["r1"]["hist_item_id"] == []
    assert rows["r2"]["hist_item_id"] == [10]
    assert rows["r3"]["hist_item_id"] == [10, 11, 12]  # item 13 at the same ts is not before
    assert rows["r3"]["hist_action"] == ["click", "purchase", "click"]
    assert rows["r3"]["hist_domain"] == ["feed", "feed", "search"]
    assert rows["r3"]["hist_category_id"] == [100, 100, 101]
    assert [int(t.timestamp() * 1000) for t in rows["r3"]["hist_ts"]] == [ms(EVENTS[i][0]) for i in range(3)]
    assert rows["r4"]["hist_item_id"] == []
    assert rows["r5"]["hist_item_id"] == [10, 14]  # carried from day 2 into day 3
    assert rows["r6"]["hist_item_id"] == [10, 11, 12, 13]  # carried across three days
    assert rows["r7"]["hist_item_id"] == []
    # side tables joined, raw ids kept
    assert rows["r3"]["category_id"] == 101 and rows["r3"]["price"] == pytest.approx(3.0)
    assert rows["r4"]["age_bucket"] == "25-34" and rows["r4"]["gender"] == "m" and rows["r4"]["device"] == "android"


def test_truncates_to_last_t(tmp_path: Path) -> None:
    logs = write_logs(tmp_path / "logs")
    build_samples(logs, tmp_path / "s", BuildConfig(seq_len=2, min_freq=1, progress=False))
    rows = by_request(read_split(tmp_path / "s", "test"))
    assert rows["r6"]["hist_item_id"] == [12, 13]  # the most recent two, oldest first


def test_history_actions_filter(tmp_path: Path) -> None:
    logs = write_logs(tmp_path / "logs")
    build_samples(logs, tmp_path / "s", BuildConfig(seq_len=4, min_freq=1, history_actions=("click",), progress=False))
    rows = by_request(read_split(tmp_path / "s", "test"))
    assert rows["r6"]["hist_item_id"] == [10, 12, 13]


def test_columns(built: tuple[Path, FeatureSpec]) -> None:
    out, _ = built
    t = read_split(out, "train")
    assert t.column_names == [
        "request_id", "ts", "user_id", "item_id", "category_id", "domain", "position", "price",
        "hour", "device", "age_bucket", "gender", "click", "purchase", *HIST_COLUMNS,
    ]  # fmt: skip
    assert t.schema.field("hist_ts").type == pa.list_(TS_TYPE)
    assert t.schema.field("hist_item_id").type == pa.list_(pa.int64())


# ---- splits and vocabularies --------------------------------------------------------------
def test_splits_by_day(built: tuple[Path, FeatureSpec]) -> None:
    out, spec = built
    assert sorted(p.name for p in (out / "train").iterdir()) == ["part-2024-01-01.parquet", "part-2024-01-02.parquet"]
    assert [p.name for p in (out / "valid").iterdir()] == ["part-2024-01-03.parquet"]
    assert [p.name for p in (out / "test").iterdir()] == ["part-2024-01-04.parquet"]
    assert spec.splits == {"train": "train", "valid": "valid", "test": "test"}
    assert [spec.stats[s]["rows"] for s in ("train", "valid", "test")] == [4, 1, 2]
    assert spec.stats["train"]["click_rate"] == pytest.approx(3 / 4)
    assert FeatureSpec.load(out) == spec


def test_split_days_and_too_few_days(tmp_path: Path) -> None:
    days = ["d1", "d2", "d3", "d4", "d5"]
    assert split_days(days, BuildConfig(valid_days=2, test_days=1)) == {"train": ["d1", "d2"], "valid": ["d3", "d4"], "test": ["d5"]}
    logs = write_logs(tmp_path / "logs")
    with pytest.raises(DataError, match="`valid_days`"):
        build_samples(logs, tmp_path / "s", BuildConfig(valid_days=2, test_days=2, progress=False))


def test_vocab_from_train_only(built: tuple[Path, FeatureSpec]) -> None:
    out, spec = built
    item_vocab = json.loads((out / "vocab" / "item.json").read_text())
    assert set(item_vocab) >= {"values", "counts", "min_freq"}
    assert 99 not in item_vocab["values"] and 14 not in item_vocab["values"]  # valid/test-only items
    assert 10 in item_vocab["values"]
    # domains are a closed set: `live` (test only) is in the vocabulary and in spec.domains
    assert spec.domains == ("feed", "live", "search")
    tf = FeatureTransform.from_spec_dir(out)
    batch = tf.to_batch(read_split(out, "test"))
    items = batch.sparse["item_id"].values().tolist()
    assert items[0] == 0  # item 99 → OOV through the transform
    assert items[1] == tf.vocabs["item"].lookup(np.array([10]))[0] > 0
    assert batch.domain.tolist() == [spec.domains.index("feed"), spec.domains.index("live")]
    assert batch.sparse["domain"].values().tolist() == [spec.domains.index("feed") + 1, spec.domains.index("live") + 1]


def test_feature_spec(built: tuple[Path, FeatureSpec]) -> None:
    _, spec = built
    assert spec.sparse_keys == ["user_id", "item_id", "category_id", "hour", "device", "age_bucket", "gender", "domain"]
    assert spec.sequence_keys == ["hist_item_id", "hist_category_id", "hist_domain", "hist_action"]
    assert spec.dense_names == ["price"] and spec.label_names == ["click", "purchase"]
    assert spec.feature("hist_item_id").table == spec.feature("item_id").table == "item"
    assert spec.feature("domain").kind is FeatureKind.DOMAIN
    assert spec.stats["dense"]["price"]["transform"] == "log1p"


def test_user_hash_buckets(tmp_path: Path) -> None:
    logs = write_logs(tmp_path / "logs")
    spec = build_samples(logs, tmp_path / "s", BuildConfig(user_hash_buckets=7, min_freq=1, progress=False))
    assert spec.table("user").hashed and spec.table("user").num_embeddings == 8
    assert not (tmp_path / "s" / "vocab" / "user.json").exists()
    b = FeatureTransform.from_spec_dir(tmp_path / "s").to_batch(read_split(tmp_path / "s", "train"))
    assert ((b.user >= 1) & (b.user <= 7)).all()


def test_missing_user_id_raises_schema_error(tmp_path: Path) -> None:
    logs = write_logs(tmp_path / "logs")
    bad = pq.read_table(logs / "impressions" / "dt=2024-01-02" / "part-0.parquet").drop_columns(["user_id"])
    pq.write_table(bad, logs / "impressions" / "dt=2024-01-02" / "part-0.parquet")
    with pytest.raises(SchemaError, match="user_id"):
        build_samples(logs, tmp_path / "s", BuildConfig(progress=False))


def test_empty_split_raises_data_error(tmp_path: Path) -> None:
    logs = write_logs(tmp_path / "logs")
    path = logs / "impressions" / "dt=2024-01-03" / "part-0.parquet"
    pq.write_table(pq.read_table(path).slice(0, 0), path)
    with pytest.raises(DataError, match="split `valid`"):
        build_samples(logs, tmp_path / "s", BuildConfig(progress=False))


# ---- leakage and equality with brute force on random logs ---------------------------------
def random_logs(root: Path, *, users: int = 30, items: int = 40, days: int = 4, seed: int = 0) -> Path:
    """Random logs with coarse (minute) timestamps, so equal event/impression times are common."""
    rng = np.random.default_rng(seed)
    t0 = ms("2024-03-01T00:00")
    day_ms = 86_400_000

    def times(n: int) -> np.ndarray:
        return t0 + rng.integers(0, days, n) * day_ms + rng.integers(0, 24 * 60, n) * 60_000

    n_ev, n_imp = 60 * days * users // 10, 80 * days * users // 10
    ev_ts, ev_user = times(n_ev), rng.integers(0, users, n_ev)
    dup = np.flatnonzero(rng.random(n_ev) < 0.25)[1:]  # a quarter of events tie with another event of the same user
    ev_ts[dup], ev_user[dup] = ev_ts[dup - 1], ev_user[dup - 1]
    ev = pa.table(
        {
            "ts": pa.array(ev_ts, TS_TYPE),
            "user_id": pa.array(ev_user),
            "item_id": pa.array(rng.integers(0, items, n_ev)),
            "domain": pa.array(rng.choice(["feed", "search"], n_ev)),
            "action": pa.array(rng.choice(["click", "purchase", "like"], n_ev)),
        }
    )
    # half the impressions copy an event's (user, ts): equal times must be excluded from histories
    copy = rng.integers(0, n_ev, n_imp - n_imp // 2)
    imp_ts = np.r_[times(n_imp // 2), ev.column("ts").cast(pa.int64()).to_numpy()[copy]]
    imp_user = np.r_[rng.integers(0, users, n_imp // 2), ev.column("user_id").to_numpy()[copy]]
    imp = pa.table(
        {
            "request_id": pa.array([f"q{i}" for i in range(n_imp)]),
            "ts": pa.array(imp_ts, TS_TYPE),
            "user_id": pa.array(imp_user),
            "domain": pa.array(rng.choice(["feed", "search"], n_imp)),
            "item_id": pa.array(rng.integers(0, items, n_imp)),
            "position": pa.array(rng.integers(0, 10, n_imp).astype(np.int32)),
            "click": pa.array(rng.integers(0, 2, n_imp).astype(np.int8)),
            "purchase": pa.array(rng.integers(0, 2, n_imp).astype(np.int8)),
        }
    )
    log_io.write_partitioned(root, "events", ev)
    log_io.write_partitioned(root, "impressions", imp)
    log_io.write_table(root, "items", pa.table({"item_id": np.arange(items), "category_id": np.arange(items) % 7, "price": np.ones(items)}))
    return root


def test_no_leakage_and_matches_brute_force(tmp_path: Path) -> None:
    logs = random_logs(tmp_path / "logs")
    T = 5
    out = tmp_path / "s"
    build_samples(logs, out, BuildConfig(seq_len=T, progress=False))
    samples = pa.concat_tables([read_split(out, s) for s in ("train", "valid", "test")])
    # leakage check on every row of the real output
    ts = samples.column("ts").cast(pa.int64()).to_numpy()
    hist_ts = samples.column("hist_ts").to_pylist()
    n_nonempty = 0
    for t, h in zip(ts, hist_ts, strict=True):
        hv = [int(x.timestamp() * 1000) for x in h]
        assert all(x < t for x in hv)
        assert hv == sorted(hv) and len(hv) <= T
        n_nonempty += bool(hv)
    assert n_nonempty > len(ts) // 2
    # brute force: the last T events of the user with ts < impression ts (stable on ties)
    ev_t = log_io.read_table(logs, "events")
    ev = pd.DataFrame({"user_id": ev_t.column("user_id").to_numpy(), "t": ev_t.column("ts").cast(pa.int64()).to_numpy(), "item_id": ev_t.column("item_id").to_numpy()})
    ev = ev.reset_index(names="order").sort_values(["user_id", "t", "order"], kind="stable")
    groups = {u: g for u, g in ev.groupby("user_id")}
    users = samples.column("user_id").to_pylist()
    hist_items = samples.column("hist_item_id").to_pylist()
    for u, t, h in zip(users, ts, hist_items, strict=True):
        g = groups.get(u)
        expect = [] if g is None else g[g["t"] < t]["item_id"].tolist()[-T:]
        assert h == expect


def test_event_pool_trim_and_ties() -> None:
    ev = pa.table(
        {
            "user_id": pa.array([5, 5, 5, 6], pa.int64()),
            "ts": pa.array([3, 1, 1, 1], TS_TYPE),
            "item_id": pa.array([30, 10, 11, 60], pa.int64()),
            "category_id": pa.array([0, 0, 0, 0], pa.int64()),
            "domain": ["a"] * 4,
            "action": ["click"] * 4,
        }
    )
    pool = EventPool.from_events(ev)
    assert pool.table.column("item_id").to_pylist() == [10, 11, 30, 60]  # ties keep input order
    assert pool.trim(2).table.column("item_id").to_pylist() == [11, 30, 60]
    h = pool.histories(np.array([5, 5, 6, 7]), np.array([1, 2, 2, 2]), seq_len=2)
    assert h.column("hist_item_id").to_pylist() == [[], [10, 11], [60], []]


def test_event_pool_key_overflow_fallbacks() -> None:
    """Huge user ids and time spans take the lexsort / time-rank paths with the same answers."""
    users = np.array([2**62, -(2**62), 2**62, 2**62], np.int64)
    ts = np.array([2**60, 0, 5, 2**60], np.int64)
    ev = pa.table(
        {
            "user_id": pa.array(users),
            "ts": pa.array(ts, TS_TYPE),
            "item_id": pa.array([1, 2, 3, 4], pa.int64()),
            "category_id": pa.array([0] * 4, pa.int64()),
            "domain": ["a"] * 4,
            "action": ["click"] * 4,
        }
    )
    pool = EventPool.from_events(ev)
    assert pool.table.column("item_id").to_pylist() == [2, 3, 1, 4]
    h = pool.histories(np.array([2**62, 2**62, -(2**62), 2**62]), np.array([2**60, 2**60 + 1, 1, 5]), seq_len=3)
    assert h.column("hist_item_id").to_pylist() == [[3], [3, 1, 4], [2], []]


# ---- config validation --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq_len", 0),
        ("min_freq", 0),
        ("table_min_freq", {"item": 0}),
        ("valid_days", -1),
        ("test_days", -1),
        ("embedding_dim", 0),
        ("table_dims", {"item": 0}),
        ("user_hash_buckets", -1),
        ("history_actions", ()),
        ("history_actions", "click"),
        ("row_group_size", 0),
        ("progress", "yes"),
    ],
)
def test_build_config_errors(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"`{field}"):
        BuildConfig(**{field: value})  # type: ignore[arg-type]  # deliberately wrong values
