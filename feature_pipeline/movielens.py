"""MovieLens-100k → the Seedrec log schema (:mod:`feature_pipeline.schemas`).

Reads the RecBole atomic files ``ml-100k.inter`` / ``.user`` / ``.item`` (tab-separated, ``name:type``
headers) from :func:`seedrec.datasets.dataset_path` and writes the same folders as the synthetic
world, partitioned by the UTC day of the rating::

    impressions/dt=YYYY-MM-DD/part-0.parquet   one row per rating
    events/dt=YYYY-MM-DD/part-0.parquet        positive behaviours
    users/part-0.parquet, items/part-0.parquet

Mapping (the choices are ours; MovieLens has no impressions, slates, prices or domains):

=============== ===================================================================================
column          rule
=============== ===================================================================================
request_id      ``f"ml-{user}-{ts}"`` (ratings a user gave in the same second share a request)
ts              the rating's unix seconds, as ``timestamp[ms, UTC]``
position        0 (no slate)
click           rating >= 4
purchase        rating == 5 (the "strong positive" head)
hour, device    UTC hour of the rating; device ``"unknown"``
domain          the genre group holding most of the item's genres, ties to the group of its first
                genre: ``action`` = Action, Adventure, Thriller, Sci-Fi, War, Crime, Western;
                ``drama`` = Drama, Romance, Film-Noir, Mystery, Documentary; ``light`` = Comedy,
                Children's, Animation, Musical, Fantasy, Horror, unknown
events          one ``click`` per rating >= 4 and one ``like`` per rating == 5, at the rating's ts
                (ratings 1-3 are exposures with negative labels and do not enter histories)
users           user_id, age_bucket (:data:`feature_pipeline.world.AGE_BUCKETS`), gender, occupation
items           item_id, category_id = index of the item's first genre in :data:`GENRES`,
                price = 0.0 (MovieLens has no prices), plus title, year and genres as context
=============== ===================================================================================
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_pipeline.log_io import write_partitioned, write_table
from feature_pipeline.schemas import TS_TYPE
from feature_pipeline.world import AGE_BUCKETS
from seedrec.datasets import dataset_path
from seedrec.errors import DataError

__all__ = ["GENRES", "GENRE_DOMAIN", "DOMAINS", "age_bucket", "ingest_movielens"]

logger = logging.getLogger(__name__)

#: The 19 MovieLens genres in their canonical order; ``category_id`` indexes this tuple.
GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
DOMAINS: tuple[str, ...] = ("action", "drama", "light")
GENRE_DOMAIN: dict[str, str] = {
    **dict.fromkeys(("Action", "Adventure", "Thriller", "Sci-Fi", "War", "Crime", "Western"), "action"),
    **dict.fromkeys(("Drama", "Romance", "Film-Noir", "Mystery", "Documentary"), "drama"),
    **dict.fromkeys(
        ("Comedy", "Children's", "Animation", "Musical", "Fantasy", "Horror", "unknown"), "light"
    ),
}


def age_bucket(age: int) -> str:
    """The :data:`~feature_pipeline.world.AGE_BUCKETS` label of an age in years.

    Example:
        >>> age_bucket(17), age_bucket(24), age_bucket(60)
        ('under18', '18-24', '55+')
    """
    for limit, label in zip((18, 25, 35, 45, 55), AGE_BUCKETS, strict=False):
        if age < limit:
            return label
    return AGE_BUCKETS[-1]


def _read_atomic(path: Path) -> dict[str, list[str]]:
    """Reads a RecBole atomic file into ``{column name without :type: values}``."""
    if not path.is_file():
        raise DataError(f"{path} is missing: expected the MovieLens-100k atomic file there")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":", 1)[0] for h in next(reader)]
        cols: dict[str, list[str]] = {h: [] for h in header}
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{lineno}: {len(row)} fields, expected {len(header)} ({header})")
            for h, v in zip(header, row, strict=True):
                cols[h].append(v)
    return cols


def _item_domain(genres: list[str]) -> str:
    groups = [GENRE_DOMAIN.get(g, "light") for g in genres] or ["light"]
    counts = {d: groups.count(d) for d in DOMAINS}
    best = max(counts.values())
    return groups[0] if counts[groups[0]] == best else next(d for d in DOMAINS if counts[d] == best)


def ingest_movielens(out: Path, *, source: Path | None = None) -> dict[str, Any]:
    """Writes MovieLens-100k as Seedrec logs under ``out``.

    Args:
        out: the log root to write (``impressions/``, ``events/``, ``users/``, ``items/``).
        source: the folder holding ``ml-100k.inter/.user/.item``; default ``dataset_path("movielens-100k")``.

    Returns:
        a summary: rows, users, items, days, positive_rate (click), purchase_rate, events, out.

    Raises:
        DataError: a file is missing or malformed, or a rating names an unknown user or item.
    """
    out = Path(out)
    src = Path(source) if source is not None else dataset_path("movielens-100k")
    inter = _read_atomic(src / "ml-100k.inter")
    users = _read_atomic(src / "ml-100k.user")
    items = _read_atomic(src / "ml-100k.item")

    item_id = np.array(items["item_id"], dtype=np.int64)
    genres = [c.split() for c in items["class"]]
    unknown = sorted({g for gs in genres for g in gs} - set(GENRES))
    if unknown:
        raise DataError(
            f"{src / 'ml-100k.item'}: column `class` has unknown genre(s) {unknown}; known: {GENRES}"
        )
    category = np.array([GENRES.index(gs[0]) if gs else 0 for gs in genres], dtype=np.int64)
    item_domain = {int(i): _item_domain(gs) for i, gs in zip(item_id, genres, strict=True)}
    year = np.array(
        [int(y) if y.isdigit() else 0 for y in items.get("release_year", ["0"] * len(item_id))],
        dtype=np.int32,
    )
    write_table(
        out,
        "items",
        pa.table(
            {
                "item_id": pa.array(item_id),
                "category_id": pa.array(category),
                "price": pa.array(np.zeros(len(item_id), dtype=np.float32)),
                "title": pa.array(items.get("movie_title", [""] * len(item_id))),
                "year": pa.array(year),
                "genres": pa.array([" ".join(gs) for gs in genres]),
            }
        ),
    )

    user_id = np.array(users["user_id"], dtype=np.int64)
    write_table(
        out,
        "users",
        pa.table(
            {
                "user_id": pa.array(user_id),
                "age_bucket": pa.array([age_bucket(int(a)) for a in users["age"]]),
                "gender": pa.array(users["gender"]),
                "occupation": pa.array(users["occupation"]),
            }
        ),
    )

    u = np.array(inter["user_id"], dtype=np.int64)
    i = np.array(inter["item_id"], dtype=np.int64)
    rating = np.array(inter["rating"], dtype=np.float64)
    sec = np.array(inter["timestamp"], dtype=np.float64).astype(np.int64)
    for name, ids, known in (("user_id", u, user_id), ("item_id", i, item_id)):
        missing = np.setdiff1d(ids, known)
        if len(missing):
            raise DataError(
                f"{src / 'ml-100k.inter'}: column `{name}` has {len(missing)} id(s) absent from the side table, e.g. {missing[0]}"
            )
    order = np.lexsort((i, u, sec))
    u, i, rating, sec = u[order], i[order], rating[order], sec[order]
    click = (rating >= 4).astype(np.int8)
    purchase = (rating == 5).astype(np.int8)
    dom_code = np.array([DOMAINS.index(item_domain[int(x)]) for x in i], dtype=np.int32)
    domain = pa.DictionaryArray.from_arrays(pa.array(dom_code), pa.array(list(DOMAINS))).cast(pa.string())
    request_id = pc.binary_join_element_wise(
        "ml-", pc.cast(pa.array(u), pa.string()), "-", pc.cast(pa.array(sec), pa.string()), ""
    )
    ts = pa.array(sec * 1000, type=TS_TYPE)
    imp = pa.table(
        {
            "request_id": request_id,
            "ts": ts,
            "user_id": pa.array(u),
            "domain": domain,
            "item_id": pa.array(i),
            "position": pa.array(np.zeros(len(u), dtype=np.int32)),
            "click": pa.array(click),
            "purchase": pa.array(purchase),
            "hour": pa.array(((sec // 3600) % 24).astype(np.int8)),
            "device": pa.array(["unknown"] * len(u)),
        }
    )
    write_partitioned(out, "impressions", imp)

    pos = np.nonzero(click)[0]
    five = np.nonzero(purchase)[0]
    ev_idx = np.concatenate([pos, five])
    ev_order = np.argsort(ev_idx, kind="stable")  # time order (ratings are sorted), click before like
    idx = pa.array(ev_idx[ev_order])
    action = np.concatenate([np.zeros(len(pos), np.int32), np.ones(len(five), np.int32)])[ev_order]
    ev = pa.table(
        {
            "ts": ts.take(idx),
            "user_id": pa.array(u).take(idx),
            "item_id": pa.array(i).take(idx),
            "domain": domain.take(idx),
            "action": pa.DictionaryArray.from_arrays(pa.array(action), pa.array(["click", "like"])).cast(
                pa.string()
            ),
        }
    )
    write_partitioned(out, "events", ev)

    days = np.unique(sec // 86_400)
    summary: dict[str, Any] = {
        "out": str(out),
        "rows": int(len(u)),
        "users": int(len(np.unique(u))),
        "items": int(len(np.unique(i))),
        "days": int(len(days)),
        "positive_rate": float(click.mean()),
        "purchase_rate": float(purchase.mean()),
        "events": int(ev.num_rows),
    }
    logger.info("wrote MovieLens-100k logs: %s", summary)
    return summary
