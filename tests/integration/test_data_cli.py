"""The acceptance path of the foundation, as a user runs it: `seedrec data synth` then `data build`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from feature_pipeline.loader import SampleLoader
from feature_pipeline.spec import FeatureSpec

pytestmark = pytest.mark.integration


def _seedrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seedrec.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    logs, samples = root / "w", root / "s"
    r = _seedrec("data", "synth", "--out", str(logs), "--users", "2000", "--items", "500", "--days", "4", "--seed", "1")
    assert r.returncode == 0, r.stderr
    r = _seedrec("data", "build", "--logs", str(logs), "--out", str(samples), "--seq-len", "20")
    assert r.returncode == 0, r.stderr
    return logs, samples


def test_every_history_event_is_strictly_before_its_impression(built: tuple[Path, Path]) -> None:
    _, samples = built
    n_rows = n_hist = 0
    for split in ("train", "valid", "test"):
        for f in sorted((samples / split).glob("*.parquet")):
            t = pq.read_table(f, columns=["ts", "hist_ts", "hist_item_id"])
            lens = pc.list_value_length(t.column("hist_ts")).to_numpy(zero_copy_only=False)
            assert (lens <= 20).all()
            ts = np.repeat(t.column("ts").cast("int64").to_numpy(), lens)
            hist = pc.list_flatten(t.column("hist_ts")).cast("int64").to_numpy()
            assert (hist < ts).all(), f"{f}: a history event is not strictly before its impression"
            n_rows += t.num_rows
            n_hist += len(hist)
    assert n_rows > 100_000 and n_hist > 500_000  # the check ran over the real output


def test_loader_batches_match_feature_spec(built: tuple[Path, Path]) -> None:
    _, samples = built
    spec = FeatureSpec.load(samples)
    batch = next(iter(SampleLoader(samples, "valid", batch_size=256)))  # day 1 of train starts with empty histories
    assert batch.sparse.keys() == spec.sparse_keys
    assert batch.sequence.keys() == spec.sequence_keys
    assert (batch.sparse.lengths() == 1).all()
    seq_lens = batch.sequence.lengths().view(len(spec.sequence_keys), 256)
    assert int(seq_lens.max()) <= spec.seq_len and int(seq_lens.sum()) > 0
    for key in spec.sequence_keys:  # all history columns describe the same events
        assert (batch.sequence[key].lengths() == batch.sequence["hist_item_id"].lengths()).all()
    for f in spec.features:
        if f.table is not None:
            rows = batch.sparse[f.name].values() if f.name in spec.sparse_keys else batch.sequence[f.name].values()
            assert rows.numel() == 0 or int(rows.max()) < spec.table(f.table).num_embeddings
    assert batch.dense.shape == (256, len(spec.dense_names))
    assert batch.labels.shape == (256, len(spec.label_names))


def test_file_without_user_id_is_refused_in_one_line(built: tuple[Path, Path], tmp_path: Path) -> None:
    logs, samples = built
    bad = tmp_path / "bad"
    shutil.copytree(logs, bad)
    victim = sorted((bad / "impressions").rglob("*.parquet"))[1]
    pq.write_table(pq.read_table(victim).drop_columns(["user_id"]), victim)
    before = sorted(p.name for p in (samples / "train").iterdir())
    r = _seedrec("data", "build", "--logs", str(bad), "--out", str(samples), "--seq-len", "20")
    assert r.returncode != 0
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and str(victim) in err[0] and "`user_id`" in err[0]
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in (samples / "train").iterdir()) == before  # the previous build is intact
