"""The synthetic world: users, items and domains with a planted, recoverable behaviour model.

A :class:`World` is drawn from a :class:`~feature_pipeline.configs.WorldConfig`, simulates logged
behaviour in the log schema of :mod:`feature_pipeline.schemas`, and answers "what would this user
have done?" for the A/B harness (:meth:`World.respond`), with the exact ground-truth probabilities
(:meth:`World.click_prob`, :meth:`World.purchase_prob`). Everything needed to recompute them is
saved in ``world.json`` + ``world_arrays.npz``.

Generative model
----------------
``U`` users, ``I`` items, ``C`` categories, ``G`` clusters, ``D`` latent width, ``K`` domains,
``S`` slate size, ``σ`` the logistic function; ``d = day(t)`` is the day index of time ``t``
(seconds) counted from ``start_date`` (any integer, also outside the logged days), ``h = hour(t)``.

Catalogue::

    c_k   = normalise(N(0, I_D))                     category centre, k < C
    cat_i ~ Zipf(0.6) over categories                (every category has an item)
    v_i   = c_{cat_i} + 0.5 ε_i / √D                  item latent
    z_pop_i = standardised log popularity,  log pop_i ~ N(0, 1)
    log price_i = m_{cat_i} + 0.5 ε,  m_k ~ N(3, 0.7); z_price_i its standardised log

Users::

    π_g  ~ Dirichlet(0.3 · 1_C)                       cluster interests over categories
    μ_g  = normalise(Σ_k π_gk c_k + 0.3 ε / √D)        cluster centre
    g_u  ~ Uniform(G),  w_u = μ_{g_u} + 0.5 ε_u / √D   static taste (similar users share it)
    L_u  = n long-term categories l_uj ~ ½ π_{g_u} + ½ Uniform(C) (distinct), each resurfacing
           with period p_uj ∈ [3, 8] days:  a_uj(d) = 1[(d + φ_uj) mod p_uj = 0]
    f_u(d) focus category, re-drawn every e_u ∈ {1, 2, 3} days by a hash of (seed, u, epoch):
           from π_{g_u} with probability ½, else uniform;  short-term latent s_u(d) = c_{f_u(d)}
    activity_u ∈ {low, mid, high}: requests per day ×(0.43, 1.06, 2.77) and the domain mix
    b_u, β_u ~ N(0, 0.3²) user click / purchase biases; age_bucket, gender ~ per-cluster Dirichlet

Click of item ``i`` at position ``r`` in domain ``k`` (parameters per domain, see ``DOMAINS``)::

    ℓ = b^k + b_u + α^k w_u·v_i + γ^k s_u(d)·v_i + λ^k Σ_j 1[cat_i = l_uj](ζ_0 + ζ_1 a_uj(d))
        + ω z_pop_i + 0.15 cos(2π (h − 21) / 24)
    p_click = σ(ℓ) · (1 + r)^(−η)                     position bias: examination probability

Purchase::

    p_purchase|click = σ(b_buy^k + β_u + ρ^k w_u·v_i + ρ_s s_u(d)·v_i − κ^k z_price_i)
    p_purchase = p_click · p_purchase|click

``search`` weighs the short-term interest most (γ), ``mall`` has the highest purchase propensity and
price sensitivity (b_buy, κ). The logging policy (a mediocre production model) retrieves
``candidates`` items (half by popularity, half from categories it believes the user likes), scores
them with ``ω_p z_pop + ŵ_u·v_i + 0.5 Gumbel`` where ``ŵ_u = w_u + 0.8 ε / √D`` is a noisy estimate of
the static taste (it knows nothing of focus or long-term resurfacing), shows the top ``S`` and
replaces each slot with a uniform random item with probability ``explore_eps``. Organic behaviours
(``click`` and ``like`` events that are not impressions) come from active long-term categories,
the day's focus category and the cluster's interests, so histories carry the planted signal.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from feature_pipeline.configs import WorldConfig
from feature_pipeline.log_io import write_partitioned, write_table
from feature_pipeline.schemas import TS_TYPE
from seedrec.errors import DataError, SchemaError, SeedrecError
from seedrec.logs import setup_logging

__all__ = [
    "AGE_BUCKETS",
    "GENDERS",
    "ACTIVITIES",
    "DEVICES",
    "DOMAINS",
    "DomainParams",
    "WorldParams",
    "WorldArrays",
    "World",
    "synth",
    "main",
]

logger = logging.getLogger(__name__)

AGE_BUCKETS: tuple[str, ...] = ("under18", "18-24", "25-34", "35-44", "45-54", "55+")
GENDERS: tuple[str, ...] = ("F", "M", "U")
ACTIVITIES: tuple[str, ...] = ("low", "mid", "high")
DEVICES: tuple[str, ...] = ("ios", "android", "web")
_FORMAT = "seedrec.world/v1"
_ARRAYS_FILE = "world_arrays.npz"
_DAY_S = 86_400
_CHUNK = 16_384  # requests per vectorised chunk: bounds the (B, M, D) gathers to ~64 MB


@dataclass(frozen=True, kw_only=True)
class DomainParams:
    """How one domain turns interest into clicks and purchases (see the module docstring)."""

    name: str
    click_bias: float  # b^k
    static_scale: float  # α^k, on w_u·v_i
    short_scale: float  # γ^k, on s_u(d)·v_i
    long_scale: float  # λ^k, on the long-term boost
    buy_bias: float  # b_buy^k
    buy_affinity: float  # ρ^k, on w_u·v_i
    price_sensitivity: float  # κ^k, on z_price
    mix: tuple[float, float, float]  # share of this domain in the requests of (low, mid, high) users


#: The four domains; a world with ``domains=K`` uses the first K (mixes renormalised).
DOMAINS: tuple[DomainParams, ...] = (
    DomainParams(
        name="feed",
        click_bias=-3.1,
        static_scale=2.0,
        short_scale=2.4,
        long_scale=1.0,
        buy_bias=-3.0,
        buy_affinity=0.8,
        price_sensitivity=0.2,
        mix=(0.70, 0.50, 0.35),
    ),
    DomainParams(
        name="search",
        click_bias=-2.8,
        static_scale=1.2,
        short_scale=4.5,
        long_scale=0.6,
        buy_bias=-2.0,
        buy_affinity=0.8,
        price_sensitivity=0.5,
        mix=(0.20, 0.25, 0.25),
    ),
    DomainParams(
        name="mall",
        click_bias=-3.3,
        static_scale=1.5,
        short_scale=1.8,
        long_scale=1.0,
        buy_bias=-0.6,
        buy_affinity=1.0,
        price_sensitivity=1.2,
        mix=(0.07, 0.15, 0.22),
    ),
    DomainParams(
        name="live",
        click_bias=-3.5,
        static_scale=1.8,
        short_scale=3.0,
        long_scale=1.4,
        buy_bias=-1.6,
        buy_affinity=0.8,
        price_sensitivity=0.6,
        mix=(0.03, 0.10, 0.18),
    ),
)


@dataclass(frozen=True, kw_only=True)
class WorldParams:
    """The scalar parameters of a world; saved in ``world.json`` so a loaded world never depends on code defaults."""

    domains: tuple[DomainParams, ...]
    hash_key: int  # keys the counter-based hash of the focus category
    lt_base: float = 0.4  # ζ_0
    lt_active: float = 1.8  # ζ_1
    pop_weight: float = 0.3  # ω
    hour_amplitude: float = 0.15
    hour_peak: float = 21.0
    focus_cluster_prob: float = 0.5
    short_buy_weight: float = 0.5  # ρ_s
    position_decay: float = 0.6  # η
    activity_share: tuple[float, float, float] = (0.5, 0.35, 0.15)
    activity_multiplier: tuple[float, float, float] = (0.4 / 0.94, 1.0 / 0.94, 2.6 / 0.94)
    policy_pop_weight: float = 0.8
    policy_noise: float = 0.5
    policy_temperature: float = 4.0
    organic_click_share: float = 0.6


@dataclass(frozen=True, kw_only=True)
class WorldArrays:
    """The array parameters of a world (shapes in the comments); saved in ``world_arrays.npz``."""

    category_centre: np.ndarray  # (C, D) float32, c_k
    category_log_price: np.ndarray  # (C,) float64, m_k
    cluster_pref: np.ndarray  # (G, C) float64, π_g
    cluster_centre: np.ndarray  # (G, D) float32, μ_g
    cluster_age: np.ndarray  # (G, len(AGE_BUCKETS)) float64
    cluster_gender: np.ndarray  # (G, len(GENDERS)) float64
    item_category: np.ndarray  # (I,) int32
    item_latent: np.ndarray  # (I, D) float32, v_i
    item_popularity: np.ndarray  # (I,) float64, sums to 1
    item_price: np.ndarray  # (I,) float32
    user_cluster: np.ndarray  # (U,) int32, g_u
    user_latent: np.ndarray  # (U, D) float32, w_u
    user_estimate: np.ndarray  # (U, D) float32, ŵ_u (the logging policy's belief)
    user_bias: np.ndarray  # (U,) float32, b_u
    user_buy_bias: np.ndarray  # (U,) float32, β_u
    user_activity: np.ndarray  # (U,) int8 into ACTIVITIES
    user_age: np.ndarray  # (U,) int8 into AGE_BUCKETS
    user_gender: np.ndarray  # (U,) int8 into GENDERS
    user_device: np.ndarray  # (U,) int8 into DEVICES (primary device; context only, no effect)
    user_long_term: np.ndarray  # (U, n) int32, l_uj
    user_lt_period: np.ndarray  # (U, n) int32, p_uj
    user_lt_phase: np.ndarray  # (U, n) int32, φ_uj
    user_focus_len: np.ndarray  # (U,) int32, e_u
    user_focus_offset: np.ndarray  # (U,) int32


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

_GOLD = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLD
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _hash_uniform(key: int, stream: int, *ints: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1) that are a pure function of (key, stream, ints): state by (user, time) without storage."""
    h = _splitmix(np.full(np.shape(ints[0]), np.uint64(key) ^ np.uint64(stream), dtype=np.uint64))
    for a in ints:
        h = _splitmix(h ^ np.ascontiguousarray(a, dtype=np.int64).view(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _row_cdf(p: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)
    cdf[..., -1] = 1.0
    return cdf


def _sample_rows(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Draws one index per entry from row ``rows`` of the (R, C) ``cdf`` by inverse CDF at uniforms ``u``."""
    R, C = cdf.shape
    rows = np.asarray(rows, dtype=np.int64)
    keys = (np.arange(R)[:, None] + cdf).ravel()  # row r occupies (r, r + 1]
    idx = np.searchsorted(keys, rows + u, side="right") - rows * C
    return np.clip(idx, 0, C - 1)


def _gumbel_top(logp: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct indices per row drawn without replacement with probabilities ``exp(logp)``."""
    keys = logp + rng.gumbel(size=logp.shape)
    return np.argpartition(-keys, n - 1, axis=1)[:, :n]


def _strings(codes: np.ndarray, names: Sequence[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(list(names))).cast(
        pa.string()
    )


def _to_seconds(ts: np.ndarray | int) -> np.ndarray:
    a = np.asarray(ts)
    if a.dtype.kind == "M":
        return a.astype("datetime64[s]").astype(np.int64)
    if a.dtype.kind not in "iuf":
        raise DataError(f"`ts` must be unix seconds or datetime64, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and np.abs(a).max() > 10**11:
        raise DataError(
            "`ts` looks like milliseconds (values > 1e11); pass unix seconds or datetime64 values"
        )
    return a


# ---------------------------------------------------------------------------------------------
# the world
# ---------------------------------------------------------------------------------------------


class World:
    """A synthetic recommendation world with a known click/purchase model.

    Args:
        cfg: the world's size and shape.
        params: scalar parameters.
        arrays: array parameters.

    Example:
        >>> from feature_pipeline.configs import WorldConfig
        >>> w = World.generate(WorldConfig(users=50, items=40, days=1, domains=2, categories=5))
        >>> p = w.click_prob(np.array([0, 1]), "feed", 1704103200, np.array([[0, 1, 2], [3, 4, 5]]))
        >>> p.shape, bool(((p > 0) & (p < 1)).all())
        ((2, 3), True)
    """

    def __init__(self, cfg: WorldConfig, *, params: WorldParams, arrays: WorldArrays) -> None:
        self.cfg = cfg
        self.params = params
        self.arrays = arrays
        a = arrays
        self.domain_names: tuple[str, ...] = tuple(d.name for d in params.domains)
        self._dom_index = {n: k for k, n in enumerate(self.domain_names)}
        self._start_s = int(dt.datetime.fromisoformat(cfg.start_date).replace(tzinfo=dt.UTC).timestamp())
        # derived, recomputed identically from the saved arrays
        lp = np.log(a.item_popularity)
        self._pop_z = ((lp - lp.mean()) / (lp.std() + 1e-12)).astype(np.float32)
        lpr = np.log(a.item_price.astype(np.float64))
        self._price_z = ((lpr - lpr.mean()) / (lpr.std() + 1e-12)).astype(np.float32)
        self._cluster_cdf = _row_cdf(a.cluster_pref)
        self._pop_cdf = _row_cdf(a.item_popularity[None, :])[0]
        mix = np.array([d.mix for d in params.domains], dtype=np.float64).T  # (3 activities, K)
        self._domain_cdf = _row_cdf(mix)
        order = np.argsort(a.item_category, kind="stable")
        cat_sorted = a.item_category[order]
        within = a.item_popularity[order]
        seg_start = np.searchsorted(cat_sorted, np.arange(cfg.categories), side="left")
        seg_end = np.searchsorted(cat_sorted, np.arange(cfg.categories), side="right")
        cum = np.cumsum(within)
        before = np.concatenate([[0.0], cum])[seg_start]
        total = cum[seg_end - 1] - before
        frac = (cum - before[cat_sorted]) / total[cat_sorted]
        frac[seg_end - 1] = 1.0
        self._cat_item_order = order
        self._cat_item_keys = cat_sorted + frac  # category k occupies (k, k + 1]
        self._cat_seg_end = seg_end
        hours = np.arange(24)
        hw = 1.0 + 0.8 * np.cos(2 * np.pi * (hours - 20) / 24)
        self._hour_p = hw / hw.sum()

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def generate(cls, cfg: WorldConfig) -> World:
        """Draws a world from ``cfg``; the same config (seed included) gives the same world."""
        rng = np.random.default_rng([cfg.seed, 1])
        U, NI, C, G, D, n = (
            cfg.users,
            cfg.items,
            cfg.categories,
            cfg.clusters,
            cfg.latent_dim,
            cfg.long_term_interests,
        )
        sq = math.sqrt(D)
        centre = _normalise(rng.standard_normal((C, D))).astype(np.float32)
        cat_w = 1.0 / (np.arange(C) + 1.0) ** 0.6
        item_cat = np.concatenate([np.arange(C), rng.choice(C, size=NI - C, p=cat_w / cat_w.sum())])
        item_cat = rng.permutation(item_cat).astype(np.int32)
        item_latent = (centre[item_cat] + 0.5 * rng.standard_normal((NI, D)) / sq).astype(np.float32)
        pop = np.exp(rng.normal(0.0, 1.0, NI))
        cat_log_price = rng.normal(3.0, 0.7, C)
        price = (
            np.round(np.exp(cat_log_price[item_cat] + 0.5 * rng.standard_normal(NI)), 2)
            .clip(0.01)
            .astype(np.float32)
        )
        pref = rng.dirichlet(np.full(C, 0.3), size=G)
        pref = (pref + 1e-9) / (pref + 1e-9).sum(axis=1, keepdims=True)
        cluster_centre = _normalise(pref @ centre + 0.3 * rng.standard_normal((G, D)) / sq).astype(np.float32)
        cluster_age = rng.dirichlet(np.full(len(AGE_BUCKETS), 1.0), size=G)
        cluster_gender = rng.dirichlet(np.array([2.0, 2.0, 0.3]), size=G)
        user_cluster = np.concatenate([np.arange(G), rng.integers(0, G, U - G)]).astype(np.int32)
        user_cluster = rng.permutation(user_cluster)
        user_latent = (cluster_centre[user_cluster] + 0.5 * rng.standard_normal((U, D)) / sq).astype(
            np.float32
        )
        user_estimate = (user_latent + 0.8 * rng.standard_normal((U, D)) / sq).astype(np.float32)
        params = WorldParams(
            domains=tuple(DOMAINS[: cfg.domains]),
            hash_key=int(rng.integers(0, 2**62)),
            position_decay=float(cfg.position_decay),
        )
        activity = rng.choice(3, size=U, p=np.array(params.activity_share)).astype(np.int8)
        age = _sample_rows(_row_cdf(cluster_age), user_cluster, rng.random(U)).astype(np.int8)
        gender = _sample_rows(_row_cdf(cluster_gender), user_cluster, rng.random(U)).astype(np.int8)
        device = rng.choice(3, size=U, p=[0.45, 0.4, 0.15]).astype(np.int8)
        lt_mix = np.log(0.5 * pref[user_cluster] + 0.5 / C)  # (U, C)
        long_term = _gumbel_top(lt_mix, n, rng).astype(np.int32)
        period = rng.integers(3, 9, size=(U, n)).astype(np.int32)
        phase = rng.integers(0, 2**20, size=(U, n)).astype(np.int32) % period
        focus_len = rng.integers(1, 4, size=U).astype(np.int32)
        arrays = WorldArrays(
            category_centre=centre,
            category_log_price=cat_log_price,
            cluster_pref=pref,
            cluster_centre=cluster_centre,
            cluster_age=cluster_age,
            cluster_gender=cluster_gender,
            item_category=item_cat,
            item_latent=item_latent,
            item_popularity=pop / pop.sum(),
            item_price=price,
            user_cluster=user_cluster,
            user_latent=user_latent,
            user_estimate=user_estimate,
            user_bias=rng.normal(0.0, 0.3, U).astype(np.float32),
            user_buy_bias=rng.normal(0.0, 0.3, U).astype(np.float32),
            user_activity=activity,
            user_age=age,
            user_gender=gender,
            user_device=device,
            user_long_term=long_term,
            user_lt_period=period,
            user_lt_phase=phase,
            user_focus_len=focus_len,
            user_focus_offset=(rng.integers(0, 2**20, size=U) % focus_len).astype(np.int32),
        )
        return cls(cfg, params=params, arrays=arrays)

    def save(self, out: str | Path) -> Path:
        """Writes ``OUT/world.json`` (config, scalars, array manifest) and ``OUT/world_arrays.npz``; returns the json path."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: getattr(self.arrays, f.name) for f in dataclasses.fields(WorldArrays)}
        np.savez(out / _ARRAYS_FILE, **arrays)
        doc = {
            "format": _FORMAT,
            "config": dataclasses.asdict(self.cfg),
            "params": dataclasses.asdict(self.params),
            "arrays": {
                "file": _ARRAYS_FILE,
                "shapes": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()},
            },
            "vocab": {
                "age_bucket": AGE_BUCKETS,
                "gender": GENDERS,
                "activity": ACTIVITIES,
                "device": DEVICES,
            },
            "model": __doc__,
        }
        path = out / "world.json"
        path.write_text(json.dumps(doc, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> World:
        """Restores a world saved by :meth:`save` from its folder (or its ``world.json``) exactly.

        Raises:
            SchemaError: the files are missing, of another format, or an array has the wrong shape.
        """
        path = Path(path)
        jpath = path if path.suffix == ".json" else path / "world.json"
        try:
            doc = json.loads(jpath.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SchemaError(f"{jpath}: not a readable world.json ({e})") from None
        if doc.get("format") != _FORMAT:
            raise SchemaError(f"{jpath}: field `format` is {doc.get('format')!r}, expected {_FORMAT!r}")
        cfg = WorldConfig(**doc["config"])
        p = dict(doc["params"])
        p["domains"] = tuple(DomainParams(**{**d, "mix": tuple(d["mix"])}) for d in p["domains"])
        for k in ("activity_share", "activity_multiplier"):
            p[k] = tuple(p[k])
        params = WorldParams(**p)
        npz = jpath.parent / doc["arrays"]["file"]
        try:
            with np.load(npz, allow_pickle=False) as z:
                loaded = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise SchemaError(f"{npz}: not a readable world array file ({e})") from None
        for name, (shape, dtype) in doc["arrays"]["shapes"].items():
            if name not in loaded or list(loaded[name].shape) != shape or str(loaded[name].dtype) != dtype:
                raise SchemaError(f"{npz}: array `{name}` missing or not {dtype}{tuple(shape)}")
        arrays = WorldArrays(**{f.name: loaded[f.name] for f in dataclasses.fields(WorldArrays)})
        return cls(cfg, params=params, arrays=arrays)

    # ---- user state as a function of (user, time) --------------------------------------------

    def day_of(self, ts: np.ndarray | int) -> np.ndarray:
        """Day index (0 = ``start_date``) of unix-second times ``ts``."""
        return (_to_seconds(ts) - self._start_s) // _DAY_S

    def focus_category(self, user_ids: np.ndarray, day: np.ndarray) -> np.ndarray:
        """The short-term focus category ``f_u(d)`` of each (user, day) pair; shape of the broadcast inputs."""
        u, d = np.broadcast_arrays(np.asarray(user_ids, np.int64), np.asarray(day, np.int64))
        a = self.arrays
        epoch = (d + a.user_focus_offset[u]) // a.user_focus_len[u]
        h1 = _hash_uniform(self.params.hash_key, 1, u, epoch)
        h2 = _hash_uniform(self.params.hash_key, 2, u, epoch)
        from_cluster = _sample_rows(self._cluster_cdf, a.user_cluster[u].ravel(), h2.ravel()).reshape(u.shape)
        uniform = np.minimum((h2 * self.cfg.categories).astype(np.int64), self.cfg.categories - 1)
        return np.where(h1 < self.params.focus_cluster_prob, from_cluster, uniform)

    def long_term_active(self, user_ids: np.ndarray, day: np.ndarray) -> np.ndarray:
        """(B, n) bool: which of each user's long-term categories ``l_uj`` resurface on ``day``."""
        u = np.asarray(user_ids, np.int64)
        d = np.asarray(day, np.int64).reshape(-1, 1)
        return ((d + self.arrays.user_lt_phase[u]) % self.arrays.user_lt_period[u]) == 0

    # ---- ground truth ------------------------------------------------------------------------

    def _logits(
        self, u: np.ndarray, k: np.ndarray, day: np.ndarray, hour: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Click and purchase|click logits, (B, S) each, for users ``u`` (B,) shown ``items`` (B, S)."""
        a, p = self.arrays, self.params
        dom = p.domains
        w = a.user_latent[u]  # (B, D)
        v = a.item_latent[items]  # (B, S, D)
        s = a.category_centre[self.focus_category(u, day)]  # (B, D)
        static = np.einsum("bd,bsd->bs", w, v)  # (B, S)
        short = np.einsum("bd,bsd->bs", s, v)  # (B, S)
        cat = a.item_category[items]  # (B, S)
        match = cat[:, :, None] == a.user_long_term[u][:, None, :]  # (B, S, n)
        active = self.long_term_active(u, day)[:, None, :]  # (B, 1, n)
        lt = (match * (p.lt_base + p.lt_active * active)).sum(-1)  # (B, S)
        col = lambda f: np.array([getattr(x, f) for x in dom], dtype=np.float32)[k][:, None]  # noqa: E731
        hour_eff = p.hour_amplitude * np.cos(2 * np.pi * (hour - p.hour_peak) / 24)
        click = (
            col("click_bias")
            + a.user_bias[u][:, None]
            + hour_eff[:, None]
            + col("static_scale") * static
            + col("short_scale") * short
            + col("long_scale") * lt
            + p.pop_weight * self._pop_z[items]
        )
        buy = (
            col("buy_bias")
            + a.user_buy_bias[u][:, None]
            + col("buy_affinity") * static
            + p.short_buy_weight * short
            - col("price_sensitivity") * self._price_z[items]
        )
        return click, buy

    def _examination(self, positions: np.ndarray) -> np.ndarray:
        return (1.0 + positions.astype(np.float64)) ** (-self.params.position_decay)

    def _inputs(
        self, user_ids: np.ndarray, domain: str | np.ndarray, ts: np.ndarray | int, item_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Validates and broadcasts API inputs to u (B,), k (B,), day (B,), hour (B,), items (B, S)."""
        u = np.asarray(user_ids).astype(np.int64).reshape(-1)
        items = np.asarray(item_ids).astype(np.int64)
        if items.ndim == 1:
            items = items[:, None]
        B = len(u)
        if items.shape[0] != B:
            raise DataError(
                f"`item_ids` has {items.shape[0]} rows but `user_ids` has {B}; pass one slate row per user"
            )
        if B and (u.min() < 0 or u.max() >= self.cfg.users):
            raise DataError(f"`user_ids` must be in [0, {self.cfg.users}), got range [{u.min()}, {u.max()}]")
        if items.size and (items.min() < 0 or items.max() >= self.cfg.items):
            raise DataError(
                f"`item_ids` must be in [0, {self.cfg.items}), got range [{items.min()}, {items.max()}]"
            )
        dom = np.asarray(domain)
        if dom.dtype.kind in "iu":
            k = np.broadcast_to(dom.astype(np.int64), (B,))
            if k.size and (k.min() < 0 or k.max() >= len(self.domain_names)):
                raise DataError(f"`domain` codes must be in [0, {len(self.domain_names)})")
        else:
            names, inv = np.unique(np.broadcast_to(dom.astype(str), (B,)), return_inverse=True)
            bad = [n for n in names if n not in self._dom_index]
            if bad:
                raise DataError(f"unknown `domain` {bad[0]!r}; this world has {list(self.domain_names)}")
            k = (
                np.array([self._dom_index[n] for n in names], dtype=np.int64)[inv.reshape(-1)]
                if B
                else np.zeros(0, np.int64)
            )
        sec = np.broadcast_to(_to_seconds(ts), (B,))
        day = (sec - self._start_s) // _DAY_S
        hour = (sec // 3600) % 24
        return u, np.ascontiguousarray(k), day, hour, items

    def click_prob(
        self,
        user_ids: np.ndarray,
        domain: str | np.ndarray,
        ts: np.ndarray | int,
        item_ids: np.ndarray,
        positions: np.ndarray | None = None,
    ) -> np.ndarray:
        """Ground-truth ``p_click`` (B, S) including the position bias.

        Args:
            user_ids: (B,) user ids.
            domain: a domain name, or (B,) names or integer domain codes.
            ts: unix seconds (or datetime64), scalar or (B,).
            item_ids: (B, S) slates (or (B,) single items).
            positions: (B, S) or (S,) positions; default the slot index ``0..S-1``.
        """
        u, k, day, hour, items = self._inputs(user_ids, domain, ts, item_ids)
        pos = np.broadcast_to(
            np.arange(items.shape[1]) if positions is None else np.asarray(positions), items.shape
        )
        click, _ = self._logits(u, k, day, hour, items)
        return 1.0 / (1.0 + np.exp(-click.astype(np.float64))) * self._examination(pos)

    def purchase_prob(
        self,
        user_ids: np.ndarray,
        domain: str | np.ndarray,
        ts: np.ndarray | int,
        item_ids: np.ndarray,
        positions: np.ndarray | None = None,
        *,
        given_click: bool = False,
    ) -> np.ndarray:
        """Ground-truth ``p_purchase`` (B, S) = ``p_click · p_purchase|click``; with ``given_click`` only the latter.

        Args: as :meth:`click_prob`; ``given_click`` returns ``p_purchase|click`` (no position effect).
        """
        u, k, day, hour, items = self._inputs(user_ids, domain, ts, item_ids)
        pos = np.broadcast_to(
            np.arange(items.shape[1]) if positions is None else np.asarray(positions), items.shape
        )
        click, buy = self._logits(u, k, day, hour, items)
        p_buy = 1.0 / (1.0 + np.exp(-buy.astype(np.float64)))
        if given_click:
            return p_buy
        return 1.0 / (1.0 + np.exp(-click.astype(np.float64))) * self._examination(pos) * p_buy

    def respond(
        self,
        user_ids: np.ndarray,
        domain: str | np.ndarray,
        ts: np.ndarray | int,
        item_ids: np.ndarray,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """Simulates what users did when shown slates ``item_ids`` (B, S) at positions 0..S-1.

        Returns:
            ``{"click": (B, S) int8, "purchase": (B, S) int8}``; a purchase implies a click.
        """
        u, k, day, hour, items = self._inputs(user_ids, domain, ts, item_ids)
        click_l, buy_l = self._logits(u, k, day, hour, items)
        p_click = (
            1.0 / (1.0 + np.exp(-click_l.astype(np.float64))) * self._examination(np.arange(items.shape[1]))
        )
        p_buy = 1.0 / (1.0 + np.exp(-buy_l.astype(np.float64)))
        click = rng.random(items.shape) < p_click
        purchase = click & (rng.random(items.shape) < p_buy)
        return {"click": click.astype(np.int8), "purchase": purchase.astype(np.int8)}

    # ---- logging policy ----------------------------------------------------------------------

    def _items_in_categories(self, cats: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Popularity-weighted item of each category in ``cats`` at uniforms ``u`` (same shape)."""
        idx = np.searchsorted(self._cat_item_keys, cats + u, side="right")
        idx = np.minimum(idx, self._cat_seg_end[cats] - 1)
        return self._cat_item_order[idx]

    def policy_slates(self, user_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The logging policy's slates (B, S) for requests of ``user_ids`` (B,): retrieval, noisy ranking, exploration."""
        a, p, cfg = self.arrays, self.params, self.cfg
        NI, S, M = cfg.items, cfg.slate_size, min(cfg.candidates, cfg.items)
        out = np.empty((len(user_ids), S), dtype=np.int64)
        for lo in range(0, len(user_ids), _CHUNK):
            u = np.asarray(user_ids[lo : lo + _CHUNK], dtype=np.int64)
            B = len(u)
            if M == NI:
                cand = np.broadcast_to(np.arange(NI), (B, NI)).copy()
                dup = np.zeros((B, NI - 1), dtype=bool)
            else:
                m_pop = M // 2
                by_pop = np.minimum(
                    np.searchsorted(self._pop_cdf, rng.random((B, m_pop)), side="right"), NI - 1
                )
                aff = a.user_estimate[u] @ a.category_centre.T  # (B, C)
                cat_cdf = _row_cdf(np.exp(p.policy_temperature * (aff - aff.max(axis=1, keepdims=True))))
                rows = np.repeat(np.arange(B), M - m_pop)
                cats = _sample_rows(cat_cdf, rows, rng.random(len(rows))).reshape(B, M - m_pop)
                by_cat = self._items_in_categories(cats, rng.random(cats.shape))
                cand = np.sort(np.concatenate([by_pop, by_cat], axis=1), axis=1)  # (B, M)
                dup = cand[:, 1:] == cand[:, :-1]
            score = np.einsum("bd,bmd->bm", a.user_estimate[u], a.item_latent[cand])  # (B, M)
            score += p.policy_pop_weight * self._pop_z[cand] + p.policy_noise * rng.gumbel(size=cand.shape)
            score[:, 1:][dup] = -np.inf
            top = np.argpartition(-score, S - 1, axis=1)[:, :S]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(score, top, axis=1), axis=1), axis=1)
            out[lo : lo + B] = np.take_along_axis(cand, top, axis=1)
        explore = rng.random(out.shape) < cfg.explore_eps
        out[explore] = rng.integers(0, NI, int(explore.sum()))
        return self._dedupe(out, rng)

    def _dedupe(self, slates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Replaces repeated items within a row (keeping the first) by random ones until rows are distinct."""
        for _ in range(1000):
            order = np.argsort(slates, axis=1, kind="stable")
            srt = np.take_along_axis(slates, order, axis=1)
            dup_sorted = np.zeros(slates.shape, dtype=bool)
            dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
            if not dup_sorted.any():
                return slates
            dup = np.zeros(slates.shape, dtype=bool)
            np.put_along_axis(dup, order, dup_sorted, axis=1)
            slates[dup] = rng.integers(0, self.cfg.items, int(dup.sum()))
        raise AssertionError(
            "slate de-duplication did not converge"
        )  # items >= 2 * slate_size makes this unreachable

    # ---- simulation --------------------------------------------------------------------------

    def _day_logs(self, day: int) -> tuple[pa.Table, pa.Table]:
        """Impressions and events of one day; randomness keyed by (seed, day) so days stream independently."""
        a, p, cfg = self.arrays, self.params, self.cfg
        rng = np.random.default_rng([cfg.seed, 7, day])
        S = cfg.slate_size
        day0 = self._start_s + day * _DAY_S
        mult = np.array(p.activity_multiplier)[a.user_activity]
        n_req = rng.poisson(cfg.impressions_per_user_day / S * mult)
        user = np.repeat(np.arange(cfg.users, dtype=np.int64), n_req)
        R = len(user)
        dom = _sample_rows(self._domain_cdf, a.user_activity[user].astype(np.int64), rng.random(R))
        hour = rng.choice(24, size=R, p=self._hour_p)
        sec = day0 + hour * 3600 + rng.integers(0, 3600, R)
        order = np.argsort(sec, kind="stable")
        user, dom, hour, sec = user[order], dom[order], hour[order], sec[order]
        device = np.where(rng.random(R) < 0.8, a.user_device[user], rng.integers(0, len(DEVICES), R))
        slates = self.policy_slates(user, rng)
        click = np.zeros((R, S), dtype=bool)
        purchase = np.zeros((R, S), dtype=bool)
        exam = self._examination(np.arange(S))
        days = np.full(R, day, dtype=np.int64)
        for lo in range(0, R, _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            cl, bl = self._logits(user[sl], dom[sl], days[sl], hour[sl], slates[sl])
            click[sl] = rng.random(cl.shape) < 1.0 / (1.0 + np.exp(-cl.astype(np.float64))) * exam
            purchase[sl] = click[sl] & (rng.random(cl.shape) < 1.0 / (1.0 + np.exp(-bl.astype(np.float64))))
        flat = lambda x: np.repeat(x, S)  # noqa: E731  per request -> per impression
        req_ids = pc.binary_join_element_wise(
            f"r{day:05d}-", pc.cast(pa.array(np.arange(R, dtype=np.int64)), pa.string()), ""
        )
        imp = pa.table(
            {
                "request_id": req_ids.take(pa.array(flat(np.arange(R)))),
                "ts": pa.array(flat(sec) * 1000, type=TS_TYPE),
                "user_id": pa.array(flat(user)),
                "domain": _strings(flat(dom), self.domain_names),
                "item_id": pa.array(slates.ravel()),
                "position": pa.array(np.tile(np.arange(S, dtype=np.int32), R)),
                "click": pa.array(click.ravel().astype(np.int8)),
                "purchase": pa.array(purchase.ravel().astype(np.int8)),
                "hour": pa.array(flat(hour).astype(np.int8)),
                "device": _strings(flat(device), DEVICES),
            }
        )
        end_ms = (day0 + _DAY_S) * 1000 - 1
        r, s = np.nonzero(click)
        click_ms = np.minimum(
            sec[r] * 1000 + ((2 + 3 * s + rng.exponential(8.0, len(r))) * 1000).astype(np.int64), end_ms
        )
        pr = purchase[r, s]
        buy_ms = np.minimum(
            click_ms[pr] + ((30 + rng.exponential(300.0, int(pr.sum()))) * 1000).astype(np.int64), end_ms
        )
        o_user, o_item, o_dom, o_ms, o_act = self._organic(day, rng)
        action_names = ("click", "purchase", "like")
        ev_ms = np.concatenate([click_ms, buy_ms, o_ms])
        order = np.argsort(ev_ms, kind="stable")
        ev = pa.table(
            {
                "ts": pa.array(ev_ms[order], type=TS_TYPE),
                "user_id": pa.array(np.concatenate([user[r], user[r][pr], o_user])[order]),
                "item_id": pa.array(np.concatenate([slates[r, s], slates[r, s][pr], o_item])[order]),
                "domain": _strings(np.concatenate([dom[r], dom[r][pr], o_dom])[order], self.domain_names),
                "action": _strings(
                    np.concatenate([np.zeros(len(r)), np.ones(int(pr.sum())), o_act])[order], action_names
                ),
            }
        )
        return imp, ev

    def _organic(self, day: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Organic behaviours of one day: (user, item, domain, ts ms, action code 0=click / 2=like)."""
        a, p, cfg = self.arrays, self.params, self.cfg
        mult = np.array(p.activity_multiplier)[a.user_activity]
        user = np.repeat(np.arange(cfg.users, dtype=np.int64), rng.poisson(cfg.organic_per_user_day * mult))
        N = len(user)
        days = np.full(N, day, dtype=np.int64)
        # category: a long-term interest (resurfacing ones 8x likelier), the day's focus, or the cluster's taste
        w = 0.15 + self.long_term_active(user, days)  # (N, n)
        j = _sample_rows(_row_cdf(w), np.arange(N), rng.random(N)) if N else np.zeros(0, np.int64)
        lt_cat = a.user_long_term[user, j]
        focus = self.focus_category(user, days)
        clus = _sample_rows(self._cluster_cdf, a.user_cluster[user].astype(np.int64), rng.random(N))
        r = rng.random(N)
        cat = np.where(r < 0.45, lt_cat, np.where(r < 0.8, focus, clus)).astype(np.int64)
        item = self._items_in_categories(cat, rng.random(N))
        dom = _sample_rows(self._domain_cdf, a.user_activity[user].astype(np.int64), rng.random(N))
        ms = (self._start_s + day * _DAY_S) * 1000 + (
            rng.choice(24, size=N, p=self._hour_p) * 3600 + rng.random(N) * 3600
        ) * 1000
        act = np.where(rng.random(N) < p.organic_click_share, 0, 2)
        return user, item.astype(np.int64), dom, ms.astype(np.int64), act

    def users_table(self) -> pa.Table:
        """The ``users`` side table: user_id, age_bucket, gender, activity."""
        a = self.arrays
        return pa.table(
            {
                "user_id": pa.array(np.arange(self.cfg.users, dtype=np.int64)),
                "age_bucket": _strings(a.user_age, AGE_BUCKETS),
                "gender": _strings(a.user_gender, GENDERS),
                "activity": _strings(a.user_activity, ACTIVITIES),
            }
        )

    def items_table(self) -> pa.Table:
        """The ``items`` side table: item_id, category_id, price."""
        a = self.arrays
        return pa.table(
            {
                "item_id": pa.array(np.arange(self.cfg.items, dtype=np.int64)),
                "category_id": pa.array(a.item_category.astype(np.int64)),
                "price": pa.array(a.item_price.astype(np.float32)),
            }
        )

    def iter_days(self) -> Iterator[tuple[str, pa.Table, pa.Table]]:
        """Yields ``(dt, impressions, events)`` day by day, without writing anything."""
        start = dt.date.fromisoformat(self.cfg.start_date)
        for day in range(self.cfg.days):
            imp, ev = self._day_logs(day)
            yield (start + dt.timedelta(days=day)).isoformat(), imp, ev

    def simulate_logs(self, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
        """Writes the logs of all days under ``out`` (streaming day by day) plus side tables and ``world.json``.

        Returns:
            a summary: impressions, events, requests, CTR, purchase rate, days, out.
        """
        out = Path(out)
        write_table(out, "users", self.users_table())
        write_table(out, "items", self.items_table())
        self.save(out)
        n_imp = n_ev = n_click = n_buy = 0
        for day_s, imp, ev in tqdm(
            self.iter_days(), total=self.cfg.days, disable=not progress, desc="simulate", unit="day"
        ):
            clicks = int(pc.sum(imp.column("click")).as_py() or 0)
            buys = int(pc.sum(imp.column("purchase")).as_py() or 0)
            logger.info(
                "%s: %d impressions, CTR %.4f, %d events",
                day_s,
                imp.num_rows,
                clicks / max(imp.num_rows, 1),
                ev.num_rows,
            )
            write_partitioned(out, "impressions", imp)
            write_partitioned(out, "events", ev)
            n_imp, n_ev, n_click, n_buy = (
                n_imp + imp.num_rows,
                n_ev + ev.num_rows,
                n_click + clicks,
                n_buy + buys,
            )
        summary = {
            "out": str(out),
            "days": self.cfg.days,
            "impressions": n_imp,
            "requests": n_imp // self.cfg.slate_size,
            "events": n_ev,
            "ctr": n_click / max(n_imp, 1),
            "purchase_rate": n_buy / max(n_imp, 1),
        }
        logger.info("wrote synthetic logs: %s", summary)
        return summary


def synth(cfg: WorldConfig, out: Path, *, progress: bool = True) -> World:
    """Draws a world from ``cfg`` and writes its logs (and ``world.json``) under ``out``."""
    world = World.generate(cfg)
    world.simulate_logs(out, progress=progress)
    return world


def main(argv: list[str] | None = None) -> int:
    """``python -m feature_pipeline.world --out DIR [--users U --items I --days N --domains K --seed S]``."""
    d = WorldConfig.__dataclass_fields__
    ap = argparse.ArgumentParser(
        prog="python -m feature_pipeline.world", description="Synthetic world -> logs."
    )
    ap.add_argument("--out", type=Path, required=True)
    for name in (
        "users",
        "items",
        "days",
        "domains",
        "categories",
        "latent_dim",
        "clusters",
        "seed",
        "slate_size",
    ):
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=d[name].default)
    for name in ("impressions_per_user_day", "explore_eps", "organic_per_user_day"):
        ap.add_argument("--" + name.replace("_", "-"), type=float, default=d[name].default)
    ap.add_argument("--start-date", default=d["start_date"].default)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    setup_logging()
    kw = {k: v for k, v in vars(args).items() if k not in ("out", "no_progress")}
    try:
        synth(WorldConfig(**kw), args.out, progress=not args.no_progress)
    except SeedrecError as e:
        logger.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
