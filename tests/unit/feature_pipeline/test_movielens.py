"""Tests of MovieLens-100k ingestion on the real (cached or fetched) data set."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feature_pipeline.log_io import list_partitions, read_table
from feature_pipeline.movielens import DOMAINS, GENRES, _item_domain, age_bucket, ingest_movielens
from feature_pipeline.schemas import TS_TYPE
from seedrec.datasets import dataset_path
from seedrec.errors import DataError


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("ml")
    return ingest_movielens(out), out


def _ratings() -> np.ndarray:
    with (dataset_path("movielens-100k") / "ml-100k.inter").open() as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    return np.array([float(r[2]) for r in rows])


def test_summary_counts(ingested: tuple[dict[str, Any], Path]) -> None:
    summary, _ = ingested
    assert summary["rows"] == 100_000 and summary["users"] == 943 and summary["items"] == 1682
    ratings = _ratings()
    assert summary["positive_rate"] == pytest.approx((ratings >= 4).mean())
    assert 0.5 < summary["positive_rate"] < 0.6
    assert summary["purchase_rate"] == pytest.approx((ratings == 5).mean())
    assert summary["events"] == (ratings >= 4).sum() + (ratings == 5).sum()


def test_logs_read_back_with_schema(ingested: tuple[dict[str, Any], Path]) -> None:
    summary, out = ingested
    imp = read_table(out, "impressions")
    assert imp.num_rows == 100_000 and imp.schema.field("ts").type == TS_TYPE
    df = imp.to_pandas()
    assert set(df.domain) == set(DOMAINS) and (df.position == 0).all()
    assert df.click.mean() == pytest.approx(summary["positive_rate"])
    assert (df.purchase <= df.click).all()
    assert df.request_id.str.startswith("ml-").all()
    assert len(list_partitions(out, "impressions")) == summary["days"] > 100
    ev = read_table(out, "events").to_pandas()
    assert set(ev.action) == {"click", "like"}
    assert (ev.action == "click").sum() == df.click.sum() and (ev.action == "like").sum() == df.purchase.sum()
    users = read_table(out, "users").to_pandas()
    items = read_table(out, "items").to_pandas()
    assert len(users) == 943 and {"age_bucket", "gender", "occupation"} <= set(users.columns)
    assert len(items) == 1682 and (items.price == 0.0).all()
    assert items.category_id.between(0, len(GENRES) - 1).all()
    first = items.set_index("item_id").loc[1]  # Toy Story: Animation Children's Comedy
    assert GENRES[int(first.category_id)] == "Animation"


def test_rules() -> None:
    assert age_bucket(7) == "under18" and age_bucket(25) == "25-34" and age_bucket(55) == "55+"
    assert _item_domain(["Animation", "Children's", "Comedy"]) == "light"
    assert _item_domain(["Action", "Adventure", "Thriller"]) == "action"
    assert _item_domain(["Drama", "Action"]) == "drama"  # tie: the first genre's group
    assert _item_domain(["Comedy", "Drama", "Romance"]) == "drama"


def test_missing_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ml-100k.inter"):
        ingest_movielens(tmp_path / "out", source=tmp_path)


def test_unknown_user_in_ratings_is_refused(tmp_path: Path) -> None:
    src = dataset_path("movielens-100k")
    for name in ("ml-100k.user", "ml-100k.item"):
        (tmp_path / name).write_text((src / name).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n9999\t1\t5\t881250949\n"
    )
    with pytest.raises(DataError, match="`user_id`"):
        ingest_movielens(tmp_path / "out", source=tmp_path)
