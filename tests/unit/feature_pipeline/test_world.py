"""Tests of the synthetic world: config validation, determinism, log schemas, ground truth and planted signal."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from feature_pipeline.configs import WorldConfig
from feature_pipeline.log_io import iter_partitions, list_partitions, read_table
from feature_pipeline.schemas import ACTIONS, TS_TYPE
from feature_pipeline.world import AGE_BUCKETS, DOMAINS, GENDERS, World, main, synth
from seedrec.errors import ConfigError, DataError, SchemaError

SMALL = WorldConfig(users=1500, items=400, days=3, domains=3, seed=3)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path]:
    out = tmp_path_factory.mktemp("world")
    world = synth(SMALL, out, progress=False)
    return world, out


@pytest.fixture(scope="module")
def impressions(logs: tuple[World, Path]) -> pd.DataFrame:
    return read_table(logs[1], "impressions").to_pandas()


@pytest.fixture(scope="module")
def events(logs: tuple[World, Path]) -> pd.DataFrame:
    return read_table(logs[1], "events").to_pandas()


def _seconds(ts: pd.Series) -> np.ndarray:
    return ts.values.astype("datetime64[s]").astype(np.int64)


def _truth(world: World, imp: pd.DataFrame) -> np.ndarray:
    return world.click_prob(
        imp.user_id.values,
        imp.domain.values,
        _seconds(imp.ts),
        imp.item_id.values[:, None],
        imp.position.values[:, None],
    )[:, 0]


# ---- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"users": 0}, "users"),
        ({"items": 10, "categories": 20}, "items"),
        ({"items": 15, "slate_size": 10, "categories": 5}, "items"),
        ({"days": 0}, "days"),
        ({"domains": 5}, "domains"),
        ({"domains": 0}, "domains"),
        ({"categories": 1}, "categories"),
        ({"latent_dim": 1}, "latent_dim"),
        ({"clusters": 0}, "clusters"),
        ({"users": 5, "clusters": 6}, "clusters"),
        ({"long_term_interests": 0}, "long_term_interests"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"slate_size": 0}, "slate_size"),
        ({"candidates": 5, "slate_size": 10}, "candidates"),
        ({"impressions_per_user_day": 0.0}, "impressions_per_user_day"),
        ({"explore_eps": 1.5}, "explore_eps"),
        ({"organic_per_user_day": -1.0}, "organic_per_user_day"),
        ({"position_decay": -0.1}, "position_decay"),
        ({"start_date": "2024-13-01"}, "start_date"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"`{field}`") as err:
        WorldConfig(**kwargs)
    assert isinstance(err.value, ValueError)
    assert "got" in str(err.value)


def test_config_domain_names() -> None:
    assert WorldConfig(domains=4).domain_names == ("feed", "search", "mall", "live")
    assert WorldConfig(domains=1).domain_names == ("feed",)


# ---- determinism -----------------------------------------------------------------------------


def test_same_seed_same_logs_different_seed_differs(tmp_path: Path) -> None:
    cfg = WorldConfig(users=200, items=100, days=2, domains=2, seed=11)
    for name, c in (("a", cfg), ("b", cfg), ("c", dataclasses.replace(cfg, seed=12))):
        synth(c, tmp_path / name, progress=False)
    for table in ("impressions", "events", "users", "items"):
        assert read_table(tmp_path / "a", table).equals(read_table(tmp_path / "b", table)), table
    a = read_table(tmp_path / "a", "impressions")
    c = read_table(tmp_path / "c", "impressions")
    assert a.num_rows != c.num_rows or not a.equals(c)
    wa, wb = World.load(tmp_path / "a"), World.load(tmp_path / "b")
    np.testing.assert_array_equal(wa.arrays.user_latent, wb.arrays.user_latent)


# ---- logs ------------------------------------------------------------------------------------


def test_logs_schemas_and_partitions(logs: tuple[World, Path], impressions: pd.DataFrame) -> None:
    world, out = logs
    assert list_partitions(out, "impressions") == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert list_partitions(out, "events") == ["2024-01-01", "2024-01-02", "2024-01-03"]
    raw = pq.read_schema(out / "impressions" / "dt=2024-01-01" / "part-0.parquet")
    expected = {
        "request_id": pa.string(),
        "ts": TS_TYPE,
        "user_id": pa.int64(),
        "domain": pa.string(),
        "item_id": pa.int64(),
        "position": pa.int32(),
        "click": pa.int8(),
        "purchase": pa.int8(),
        "hour": pa.int8(),
        "device": pa.string(),
    }
    assert {f.name: f.type for f in raw} == expected
    ev_raw = pq.read_schema(out / "events" / "dt=2024-01-01" / "part-0.parquet")
    assert ev_raw.names == ["ts", "user_id", "item_id", "domain", "action"]
    users = read_table(out, "users").to_pandas()
    items = read_table(out, "items").to_pandas()
    assert list(users.columns) == ["user_id", "age_bucket", "gender", "activity"]
    assert (
        len(users) == SMALL.users
        and set(users.age_bucket) <= set(AGE_BUCKETS)
        and set(users.gender) <= set(GENDERS)
    )
    assert set(users.activity) == {"low", "mid", "high"}
    assert list(items.columns) == ["item_id", "category_id", "price"] and len(items) == SMALL.items
    assert (items.price > 0).all() and items.category_id.nunique() == SMALL.categories
    assert set(impressions.domain) == set(world.domain_names)
    assert impressions.position.between(0, SMALL.slate_size - 1).all()
    # one slate per request: S distinct items
    per_req = impressions.groupby("request_id").item_id.agg(["size", "nunique"])
    assert (per_req["size"] == SMALL.slate_size).all() and (per_req["nunique"] == SMALL.slate_size).all()
    assert (impressions.purchase <= impressions.click).all()


def test_events_follow_impressions(
    logs: tuple[World, Path], impressions: pd.DataFrame, events: pd.DataFrame
) -> None:
    assert set(events.action) <= set(ACTIONS) and {"click", "purchase", "like"} <= set(events.action)
    assert (events.action == "purchase").sum() == impressions.purchase.sum()
    assert (events.action == "click").sum() > impressions.click.sum()  # organic clicks come on top
    clicked = impressions[impressions.click == 1]
    first = events[events.action == "click"].merge(
        clicked, on=["user_id", "item_id"], suffixes=("_ev", "_imp")
    )
    assert (first.ts_ev >= first.ts_imp).mean() > 0.5
    for day, table in iter_partitions(logs[1], "events"):
        days = table.column("ts").to_pandas().dt.strftime("%Y-%m-%d")
        assert (days == day).all()


def test_position_bias_in_logs(impressions: pd.DataFrame) -> None:
    ctr = impressions.groupby("position").click.mean().to_numpy()
    assert ctr[0] > ctr[2] > ctr[5] > ctr[-1]
    assert pd.Series(ctr).corr(pd.Series(np.arange(len(ctr))), method="spearman") < -0.9


def test_domains_differ_in_purchase_rate(impressions: pd.DataFrame) -> None:
    clicks = impressions[impressions.click == 1]
    rate = clicks.groupby("domain").purchase.mean()
    n = clicks.groupby("domain").size()
    se = np.sqrt(rate * (1 - rate) / n)
    assert rate["mall"] - rate["feed"] > 5 * np.hypot(se["mall"], se["feed"])


# ---- ground truth ----------------------------------------------------------------------------


def test_save_load_round_trip(logs: tuple[World, Path], impressions: pd.DataFrame) -> None:
    world, out = logs
    loaded = World.load(out)
    assert loaded.cfg == world.cfg and loaded.params == world.params
    for f in dataclasses.fields(loaded.arrays):
        np.testing.assert_array_equal(
            getattr(loaded.arrays, f.name), getattr(world.arrays, f.name), err_msg=f.name
        )
    sample = impressions.sample(2000, random_state=0)
    np.testing.assert_array_equal(_truth(loaded, sample), _truth(world, sample))


def test_load_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "world.json").write_text('{"format": "other"}')
    with pytest.raises(SchemaError, match="`format`"):
        World.load(tmp_path)


def test_respond_matches_click_prob_in_expectation() -> None:
    world = World.generate(SMALL)
    rng = np.random.default_rng(0)
    users = rng.integers(0, SMALL.users, 6)
    slates = world.policy_slates(users, rng)
    reps = 4000
    u, s = np.repeat(users, reps), np.repeat(slates, reps, axis=0)
    ts = np.full(len(u), 1_704_150_000)
    out = world.respond(u, "search", ts, s, rng)
    assert out["click"].dtype == np.int8 and out["click"].shape == s.shape
    assert (out["purchase"] <= out["click"]).all()
    for name, p in (
        ("click", world.click_prob(users, "search", 1_704_150_000, slates)),
        ("purchase", world.purchase_prob(users, "search", 1_704_150_000, slates)),
    ):
        mean = out[name].reshape(len(users), reps, -1).mean(axis=1)
        tol = 5 * np.sqrt(p * (1 - p) / reps) + 1e-3
        assert (np.abs(mean - p) < tol).all(), name


def test_state_is_a_function_of_user_and_time() -> None:
    world = World.generate(SMALL)
    users = np.arange(300)
    slates = np.tile(np.arange(10), (300, 1))
    a = world.click_prob(users, "feed", 1_704_100_000, slates)
    b = world.click_prob(users, np.full(300, "feed"), np.full(300, 1_704_100_000), slates)
    np.testing.assert_array_equal(a, b)
    c = world.click_prob(users, "feed", 1_704_100_000 + 3 * 86_400, slates)
    assert not np.allclose(a, c)  # focus drifts and long-term interests resurface
    focus = world.focus_category(users[:, None], np.arange(30)[None, :])  # (300, 30)
    assert (focus[:, 1:] != focus[:, :-1]).mean() > 0.2
    active = world.long_term_active(users, np.full(300, 7))
    later = world.long_term_active(users, 7 + world.arrays.user_lt_period[users, 0])
    np.testing.assert_array_equal(active[:, 0], later[:, 0])  # periodic resurfacing
    p = world.purchase_prob(users, "mall", 1_704_100_000, slates, given_click=True)
    assert ((p > 0) & (p < 1)).all()


def test_api_rejects_bad_inputs() -> None:
    world = World.generate(WorldConfig(users=50, items=40, domains=2, categories=5))
    slate = np.array([[0, 1, 2]])
    with pytest.raises(DataError, match="`domain`"):
        world.click_prob(np.array([0]), "mall", 1_704_100_000, slate)
    with pytest.raises(DataError, match="milliseconds"):
        world.click_prob(np.array([0]), "feed", 1_704_100_000_000, slate)
    with pytest.raises(DataError, match="`user_ids`"):
        world.click_prob(np.array([50]), "feed", 1_704_100_000, slate)
    with pytest.raises(DataError, match="`item_ids`"):
        world.click_prob(np.array([0]), "feed", 1_704_100_000, np.array([[40]]))
    ts = np.array(["2024-01-02T10:00:00"], dtype="datetime64[ms]")
    np.testing.assert_array_equal(
        world.click_prob(np.array([0]), np.array([1]), ts, slate),
        world.click_prob(np.array([0]), "search", 1_704_189_600, slate),
    )


# ---- planted signal --------------------------------------------------------------------------


def test_ground_truth_and_history_predict_clicks(
    logs: tuple[World, Path], impressions: pd.DataFrame, events: pd.DataFrame
) -> None:
    world, _ = logs
    assert roc_auc_score(impressions.click, _truth(world, impressions)) > 0.7
    cat = world.arrays.item_category
    ev = events.assign(cat=cat[events.item_id.to_numpy()])
    imp = impressions.assign(cat=cat[impressions.item_id.to_numpy()])
    first = ev.groupby(["user_id", "cat"]).ts.min().rename("first_ts").reset_index()
    m = imp.merge(first, on=["user_id", "cat"], how="left")
    clicked_category_before = (m.first_ts < m.ts).astype(int)
    assert roc_auc_score(m.click, clicked_category_before) > 0.55


def test_domains_change_the_response() -> None:
    assert [d.name for d in DOMAINS] == ["feed", "search", "mall", "live"]
    by_name = {d.name: d for d in DOMAINS}
    assert by_name["search"].short_scale == max(d.short_scale for d in DOMAINS)
    assert by_name["mall"].buy_bias == max(d.buy_bias for d in DOMAINS)


# ---- entry point -----------------------------------------------------------------------------


def test_main_writes_logs(tmp_path: Path) -> None:
    rc = main(
        [
            "--out",
            str(tmp_path),
            "--users",
            "60",
            "--items",
            "50",
            "--days",
            "1",
            "--domains",
            "4",
            "--categories",
            "5",
            "--clusters",
            "3",
            "--seed",
            "5",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert (tmp_path / "world.json").is_file() and (tmp_path / "world_arrays.npz").is_file()
    assert World.load(tmp_path).cfg.domains == 4
    assert read_table(tmp_path, "impressions").num_rows > 0
    assert main(["--out", str(tmp_path / "bad"), "--users", "0", "--no-progress"]) == 2
