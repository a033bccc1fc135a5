"""The closed loop of a simulated A/B test: traffic → scoring server → simulated users → events → report.

::

    seedrec abtest run --config configs/abtest/demo.yaml --out runs/abtest [--token T] [--redis URL]

One run (:func:`run_abtest`)::

    SetExperiment(model, arms = name → version + share, salt)        (admin token; unless told not to)
    pre-period, days 1..pre_days, no server:
        the world's logging policy shows slates → world.respond → events (store + logs)
    experiment, day by day, requests in time order, in chunks of `chunk_size`:
        Retriever: M candidates per request
        Score(user, domain, candidates, hour/device, item category/price; NO history)  ── thread pool of
            `concurrency`, deadline `deadline_s` each; the server reads the history from the online
            store and picks the arm by its salted hash; the answer names the arm
        slate = top-S candidates by the click head
        oracle: the same request scored by every other arm's version (pinned), so each request has
            the slate every arm would have shown on the same history
        world.respond(slate) → clicks, purchases → events into the online store (histories move
            during the test) and impressions/events into OUT/logs (the next model trains on them)
    per-user tables → abtest.stats.analyze(oracle = lift of expected outcomes) → abtest.report

A failed Score call (any status) shows nothing, is counted by status code in ``report.json``
(``run.failed``) and adds a caveat to the report; a healthy run has none. A response whose arm is
not one of the config's arms stops the run (the experiment is not what the config says).

**The oracle.** For every request the world gives the exact expected clicks
(``Σ_slots click_prob``), purchases (``Σ purchase_prob``) and revenue (``Σ purchase_prob · price``)
of the slate each arm would have shown. Summed over all requests of all exposed users, the ratio
between arms is the lift the population would see if every user got that arm (on the histories
they actually had; second-order feedback through histories is not counterfactual). It is passed to
:func:`abtest.stats.analyze` as ``oracle`` and shown beside the estimate.

**Determinism.** Traffic, retrieval and responses draw from ``rng([seed, stream, day, chunk])``
streams; events are written after each chunk, so a rerun with the same seed against the same
models and an empty store gives the same tables. Arms sharing a version use common random numbers.

**Without a server.** :func:`simulate_offline` runs the same loop (same traffic, tables and
oracle) with the logging policy for every arm; the calibration tests use it, and the pre-period is
this loop too.

Files under ``OUT``: ``report.md``, ``report.json`` (+ ``run``: requests, failures, latencies,
history sources, events written), the plots, ``tables/{users,daily,by_domain}.parquet``,
``assignments.parquet`` (user → arm as answered by the server) and ``logs/`` (impressions, events,
users, items in the log schema; no arm column, so the arm never becomes a feature of the next model).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from abtest.configs import ABTestConfig, Metric
from abtest.traffic import Requests, Retriever, Traffic, assign_arms
from feature_pipeline.configs import WorldConfig
from feature_pipeline.schemas import TS_TYPE
from feature_pipeline.world import World
from seedrec.errors import ConfigError, DataError

__all__ = [
    "Served",
    "SlateSource",
    "PolicySource",
    "ServerSource",
    "Exposures",
    "UserTables",
    "RunStats",
    "ABTestRun",
    "EventSink",
    "run_days",
    "build_tables",
    "oracle_lift",
    "simulate_offline",
    "run_abtest",
    "load_world",
]

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
_DAY_MS = 86_400_000
# rng streams, keyed (seed, stream, day, chunk): retrieval / ranking noise and user responses
_STREAM_SERVE = 3
_STREAM_RESPOND = 4


# ==== slate sources ==============================================================================
@dataclass(frozen=True)
class Served:
    """What a slate source showed for a batch of B requests (K arms, S slots).

    Attributes:
        arm: (B,) arm index into ``config.arms``; -1 = the request failed and showed nothing.
        slate: (B, S) item ids shown, best first (rows of failed requests are undefined).
        counterfactual: (K, B, S) the slate each arm would have shown; ``None`` without an oracle.
        cf_ok: (B,) every arm's slate of the request is known (its calls succeeded).
    """

    arm: IntArray
    slate: IntArray
    counterfactual: IntArray | None = None
    cf_ok: npt.NDArray[np.bool_] | None = None


class SlateSource(Protocol):
    """Anything that turns requests into shown slates (the server, or a policy without one)."""

    def serve(self, requests: Requests, rng: np.random.Generator) -> Served:
        """Slates of ``requests``; ``rng`` is the chunk's retrieval / ranking stream."""
        ...


class PolicySource:
    """The world's logging policy for every arm (no server): the pre-period and server-free A/A runs.

    Users get their arm by :func:`abtest.traffic.assign_arms` (the server's rule); every arm shows
    the policy's slate, so the oracle lift is exactly 0. Slates have the world's ``slate_size``.
    """

    def __init__(self, world: World, config: ABTestConfig, *, oracle: bool = False) -> None:
        self.world = world
        self.config = config
        self.oracle = oracle
        self._arms: dict[int, int] = {}

    def serve(self, requests: Requests, rng: np.random.Generator) -> Served:
        new = sorted({int(u) for u in requests.user_id.tolist()} - set(self._arms))
        if new:
            self._arms.update(zip(new, assign_arms(new, self.config).tolist()))
        arm = np.array([self._arms[int(u)] for u in requests.user_id.tolist()], dtype=np.int64)
        slate = self.world.policy_slates(requests.user_id, rng)  # (B, S)
        if not self.oracle:
            return Served(arm=arm, slate=slate)
        K = len(self.config.arms)
        return Served(arm=arm, slate=slate, counterfactual=np.broadcast_to(slate, (K, *slate.shape)),
                      cf_ok=np.ones(len(requests), dtype=bool))


@dataclass
class RunStats:
    """Counters of the Score calls of one run (filled by :class:`ServerSource`)."""

    requests: int = 0
    served: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # status code name → calls
    counterfactual_calls: int = 0
    counterfactual_failed: Counter[str] = field(default_factory=Counter)
    history_sources: Counter[str] = field(default_factory=Counter)
    memory_fallbacks: int = 0
    latencies_s: list[float] = field(default_factory=list)
    events_written: int = 0
    impressions_logged: int = 0  # experiment impressions (the pre-period's are in pre_impressions_logged)
    pre_impressions_logged: int = 0

    def to_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_s) * 1000.0
        pct = {f"p{q}": float(np.percentile(lat, q)) for q in (50, 95, 99)} if lat.size else {}
        return {
            "requests": self.requests, "served": self.served, "failed": dict(self.failed),
            "failed_total": int(sum(self.failed.values())),
            "counterfactual_calls": self.counterfactual_calls, "counterfactual_failed": dict(self.counterfactual_failed),
            "history_sources": dict(self.history_sources), "memory_fallbacks": self.memory_fallbacks,
            "latency_ms": pct, "events_written": self.events_written, "impressions_logged": self.impressions_logged,
            "pre_impressions_logged": self.pre_impressions_logged,
        }


class ServerSource:
    """Real ``Score`` calls: retrieval → the server (arm chosen by it) → top-S by a head.

    Args:
        config: the experiment (model, arms, slate size, deadline).
        world: for the candidates' category and price.
        client: a :class:`serving.client.RankingClient` (its channel is shared by the threads).
        pool: the thread pool that bounds the calls in flight (``config.concurrency`` workers).
        versions: arm name → model version; needed for the oracle's pinned calls.
        oracle: score every request with every arm's version too (K − 1 extra calls per request,
            none between arms sharing a version).
        head: the score head that orders the slate.
        stats: counters to fill; a fresh :class:`RunStats` by default.
    """

    def __init__(
        self,
        config: ABTestConfig,
        world: World,
        *,
        client: Any,
        pool: ThreadPoolExecutor,
        versions: Mapping[str, str] | None = None,
        oracle: bool = True,
        head: str = "click",
        stats: RunStats | None = None,
    ) -> None:
        if oracle and versions is None:
            raise ConfigError("the oracle needs each arm's version; pass `versions` (arm name → version) or oracle=False")
        self.config = config
        self.world = world
        self.retriever = Retriever(world, candidates=config.candidates)
        self.model = experiment_model(config)
        self._client = client
        self._pool = pool
        self._index = {a.name: i for i, a in enumerate(config.arms)}
        self._versions = [versions[a.name] for a in config.arms] if versions is not None else None
        self.oracle = oracle
        self.head = head
        self.stats = stats or RunStats()
        items = world.items_table()
        self._category = items.column("category_id").to_numpy().astype(np.int64)
        self._price = items.column("price").to_numpy().astype(np.float64)

    def _request(self, requests: Requests, i: int, items: IntArray, version: str = "") -> Any:
        from serving.client import build_score_request

        return build_score_request(
            user_id=int(requests.user_id[i]), domain=str(requests.domain[i]), item_ids=items, model=self.model,
            version=version, features={"hour": int(requests.hour[i]), "device": str(requests.device[i])},
            candidate_features={"category_id": self._category[items], "price": self._price[items]},
            request_id=str(requests.request_id[i]),
        )

    def _call(self, request: Any) -> tuple[Any, str | None, float]:
        from serving.client import ServingRpcError, decode_response

        t0 = time.perf_counter()
        try:
            resp = self._client.score_request(request, timeout=self.config.deadline_s)
        except ServingRpcError as e:
            return None, e.code.name, time.perf_counter() - t0
        return decode_response(resp), None, time.perf_counter() - t0

    def _top(self, items: IntArray, scores: npt.NDArray[np.float32]) -> IntArray:
        if scores.shape != items.shape:
            raise DataError(f"the server returned {scores.shape[0]} `{self.head}` scores for {items.shape[0]} candidates")
        return items[np.argsort(-scores, kind="stable")[: self.config.slate_size]]

    def serve(self, requests: Requests, rng: np.random.Generator) -> Served:
        B, S, K = len(requests), self.config.slate_size, len(self.config.arms)
        cands = self.retriever.retrieve(requests.user_id, rng)  # (B, M)
        answers = list(self._pool.map(self._call, [self._request(requests, i, cands[i]) for i in range(B)]))
        arm = np.full(B, -1, dtype=np.int64)
        slate = np.zeros((B, S), dtype=np.int64)
        scores: list[Any] = [None] * B
        st = self.stats
        st.requests += B
        for i, (res, code, dt_s) in enumerate(answers):
            st.latencies_s.append(dt_s)
            if res is None:
                st.failed[code or "UNKNOWN"] += 1
                continue
            if res.arm not in self._index:
                raise DataError(
                    f"the server answered user {int(requests.user_id[i])} with arm {res.arm!r}, not one of the config's arms "
                    f"{list(self._index)}; set the experiment (run without --no-configure) or fix the arm names"
                )
            if self.head not in res.heads:
                raise DataError(f"the server's model has heads {sorted(res.heads)}, not {self.head!r}")
            st.served += 1
            st.history_sources[res.history_source] += 1
            st.memory_fallbacks += int(res.memory_fallback)
            arm[i] = self._index[res.arm]
            scores[i] = res.heads[self.head]
            slate[i] = self._top(cands[i], scores[i])
        if not self.oracle:
            return Served(arm=arm, slate=slate)
        assert self._versions is not None  # checked in __init__
        cf = np.zeros((K, B, S), dtype=np.int64)
        cf_ok = arm >= 0
        jobs: list[tuple[int, int]] = []
        for i in np.flatnonzero(cf_ok).tolist():
            for k in range(K):
                if self._versions[k] == self._versions[arm[i]]:
                    cf[k, i] = slate[i]  # same version, same history: the same slate
                else:
                    jobs.append((i, k))
        extra = list(self._pool.map(self._call, [self._request(requests, i, cands[i], self._versions[k]) for i, k in jobs]))
        st.counterfactual_calls += len(jobs)
        for (i, k), (res, code, _) in zip(jobs, extra):
            if res is None or self.head not in res.heads:
                st.counterfactual_failed[code or "NO_HEAD"] += 1
                cf_ok[i] = False
                continue
            cf[k, i] = self._top(cands[i], res.heads[self.head])
        return Served(arm=arm, slate=slate, counterfactual=cf, cf_ok=cf_ok)


# ==== what was shown and what users did =============================================================
@dataclass(frozen=True)
class Exposures:
    """Shown slates and outcomes of the served requests of a run (N requests, S slots, K arms).

    Attributes:
        request_id, user_id, day, date, ts, hour, domain, device: (N,) the request (see ``Requests``).
        arm: (N,) arm index.
        item, click, purchase: (N, S) shown items and what the user did with them.
        price: (N, S) the shown items' prices.
        expected: (N, K, 3) expected clicks, purchases and revenue of the slate each arm would have
            shown (NaN where unknown); ``None`` without an oracle.
    """

    request_id: npt.NDArray[np.str_]
    user_id: IntArray
    day: IntArray
    date: npt.NDArray[np.str_]
    ts: IntArray
    hour: IntArray
    domain: npt.NDArray[np.str_]
    device: npt.NDArray[np.str_]
    arm: IntArray
    item: IntArray
    click: npt.NDArray[np.int8]
    purchase: npt.NDArray[np.int8]
    price: FloatArray
    expected: FloatArray | None

    def __len__(self) -> int:
        return int(self.user_id.shape[0])

    @classmethod
    def concat(cls, parts: Sequence[Exposures], *, slate_size: int, arms: int, oracle: bool) -> Exposures:
        """Concatenates chunks (an empty list gives an empty table of the right shapes)."""
        if not parts:
            e1 = np.zeros(0, np.int64)
            es = np.zeros((0, slate_size), np.int64)
            return cls(request_id=np.zeros(0, "U1"), user_id=e1, day=e1, date=np.zeros(0, "U10"), ts=e1, hour=e1,
                       domain=np.zeros(0, "U1"), device=np.zeros(0, "U1"), arm=e1, item=es, click=es.astype(np.int8),
                       purchase=es.astype(np.int8), price=es.astype(np.float64),
                       expected=np.zeros((0, arms, 3)) if oracle else None)
        kw = {f.name: (None if getattr(parts[0], f.name) is None else np.concatenate([getattr(p, f.name) for p in parts]))
              for f in dataclasses.fields(cls)}
        return cls(**kw)


class EventSink:
    """Writes what users did: events into the online store now, impressions/events into logs per day.

    Args:
        logs_dir: the log root (``impressions/``, ``events/`` in the log schema); ``None`` = no logs.
        writer: an :class:`feature_pipeline.online_store.OnlineStoreWriter`; ``None`` = no store.
        part: the parquet file name inside each ``dt=`` partition (a phase label, e.g. ``abtest``).
    """

    def __init__(self, *, logs_dir: Path | None = None, writer: Any = None, part: str = "abtest") -> None:
        self.logs_dir = logs_dir
        self.writer = writer
        self.part = part
        self._impressions: list[pa.Table] = []
        self._events: list[pa.Table] = []
        self.events_written = 0
        self.impressions_logged = 0

    def write(self, exp: Exposures) -> None:
        """Logs one chunk; its events go to the store at once (one pipeline)."""
        if not len(exp):
            return
        N, S = exp.item.shape
        rep = lambda x: np.repeat(x, S)  # noqa: E731  per request → per slot
        imp = pa.table({
            "request_id": pa.array(rep(exp.request_id).tolist(), pa.string()),
            "ts": pa.array(rep(exp.ts) * 1000, type=TS_TYPE),
            "user_id": pa.array(rep(exp.user_id)),
            "domain": pa.array(rep(exp.domain).tolist(), pa.string()),
            "item_id": pa.array(exp.item.ravel()),
            "position": pa.array(np.tile(np.arange(S, dtype=np.int32), N)),
            "click": pa.array(exp.click.ravel().astype(np.int8)),
            "purchase": pa.array(exp.purchase.ravel().astype(np.int8)),
            "hour": pa.array(rep(exp.hour).astype(np.int8)),
            "device": pa.array(rep(exp.device).tolist(), pa.string()),
        })
        r, s = np.nonzero(exp.click)
        day_end = (exp.ts[r] * 1000 // _DAY_MS + 1) * _DAY_MS - 1
        click_ms = np.minimum(exp.ts[r] * 1000 + (2 + 3 * s) * 1000, day_end)  # users click down the slate
        bought = exp.purchase[r, s].astype(bool)
        buy_ms = np.minimum(click_ms[bought] + 60_000, day_end[bought])
        ts = np.concatenate([click_ms, buy_ms])
        order = np.argsort(ts, kind="stable")
        ev = pa.table({
            "ts": pa.array(ts[order], type=TS_TYPE),
            "user_id": pa.array(np.concatenate([exp.user_id[r], exp.user_id[r][bought]])[order]),
            "item_id": pa.array(np.concatenate([exp.item[r, s], exp.item[r, s][bought]])[order]),
            "domain": pa.array(np.concatenate([exp.domain[r], exp.domain[r][bought]])[order].tolist(), pa.string()),
            "action": pa.array((["click"] * len(r) + ["purchase"] * int(bought.sum())), pa.string()).take(pa.array(order)),
        })
        if self.writer is not None:
            self.events_written += int(self.writer.write_events(ev))
        if self.logs_dir is not None:
            self._impressions.append(imp)
            self._events.append(ev)
            self.impressions_logged += imp.num_rows

    def flush(self) -> None:
        """Writes the buffered logs (one file per ``dt`` partition and table)."""
        from feature_pipeline.log_io import write_partitioned

        if self.logs_dir is None or not self._impressions:
            return
        write_partitioned(self.logs_dir, "impressions", pa.concat_tables(self._impressions), part=self.part)
        write_partitioned(self.logs_dir, "events", pa.concat_tables(self._events), part=self.part)
        self._impressions, self._events = [], []


def _expected(world: World, req: Requests, slates: IntArray, price: FloatArray) -> FloatArray:
    """(B, 3): expected clicks, purchases and revenue of slates (B, S) shown at positions 0..S-1."""
    pc = world.click_prob(req.user_id, req.domain, req.ts, slates)  # (B, S)
    pp = world.purchase_prob(req.user_id, req.domain, req.ts, slates)  # (B, S)
    return np.stack([pc.sum(1), pp.sum(1), (pp * price[slates]).sum(1)], axis=1)


def run_days(
    traffic: Traffic,
    source: SlateSource,
    days: Sequence[int],
    *,
    sink: EventSink | None = None,
    oracle: bool = False,
    chunk_size: int = 256,
    progress: bool = False,
    label: str = "abtest",
) -> Exposures:
    """The loop: for each day and chunk of requests, serve → respond → record → write events.

    Args:
        traffic: the requests.
        source: who picks the slates (the server or a policy).
        days: world day indices to run, in order.
        sink: where events and logs go; ``None`` = nowhere.
        oracle: compute every arm's expected outcomes (the source must give counterfactual slates).
        chunk_size: requests served between two writes of events (histories move once per chunk).
        progress: show a tqdm bar over requests.
        label: the bar's and the log lines' label.

    Returns:
        The :class:`Exposures` of the served requests.
    """
    cfg, world = traffic.config, traffic.world
    price = world.arrays.item_price.astype(np.float64)
    K = len(cfg.arms)
    parts: list[Exposures] = []
    plan = [(d, traffic.requests(d)) for d in days]
    bar = tqdm(total=sum(len(r) for _, r in plan), desc=label, unit="req", disable=not progress, leave=False)
    slate_size = cfg.slate_size
    try:
        for day, reqs in plan:
            day_parts: list[Exposures] = []
            for c, chunk in enumerate(reqs.chunks(chunk_size)):
                served = source.serve(chunk, np.random.default_rng([cfg.seed, _STREAM_SERVE, day, c]))
                ok = served.arm >= 0
                req = chunk.take(ok)
                slates = served.slate[ok]
                slate_size = slates.shape[1]
                resp = world.respond(req.user_id, req.domain, req.ts, slates, np.random.default_rng([cfg.seed, _STREAM_RESPOND, day, c]))
                expected = None
                if oracle:
                    if served.counterfactual is None or served.cf_ok is None:
                        raise ConfigError("`oracle` needs a slate source that returns counterfactual slates")
                    expected = np.full((len(req), K, 3), np.nan)
                    good = served.cf_ok[ok]
                    sub = req.take(good)
                    for k in range(K):
                        expected[good, k] = _expected(world, sub, served.counterfactual[k][ok][good], price)
                exp = Exposures(
                    request_id=req.request_id, user_id=req.user_id, day=req.day, date=np.full(len(req), traffic.date(day)),
                    ts=req.ts, hour=req.hour, domain=req.domain, device=req.device, arm=served.arm[ok], item=slates,
                    click=resp["click"], purchase=resp["purchase"], price=price[slates], expected=expected,
                )
                if sink is not None:
                    sink.write(exp)
                day_parts.append(exp)
                bar.update(len(chunk))
            day_exp = Exposures.concat(day_parts, slate_size=slate_size, arms=K, oracle=oracle)
            parts.append(day_exp)
            if sink is not None:
                sink.flush()
            clicks = int(day_exp.click.sum())
            logger.info("%s %s: %d requests served, %d clicks (CTR %.4f)", label, traffic.date(day), len(day_exp),
                        clicks, clicks / max(day_exp.click.size, 1))
    finally:
        bar.close()
    return Exposures.concat(parts, slate_size=slate_size, arms=K, oracle=oracle)


# ==== per-user tables and the oracle ==============================================================
@dataclass(frozen=True)
class UserTables:
    """The tables :func:`abtest.stats.analyze` reads (see its docstring)."""

    users: pd.DataFrame  # one row per exposed user: user_id, arm, impressions, clicks, purchases, revenue, pre_*
    daily: pd.DataFrame  # one row per user and day with activity: user_id, day (YYYY-MM-DD), metrics
    by_domain: pd.DataFrame  # one row per user and domain: user_id, domain, metrics, pre_* of that domain


def _per_request(exp: Exposures) -> dict[str, np.ndarray]:
    """Metric columns per request: impressions (S), clicks, purchases, revenue."""
    return {
        "impressions": np.full(len(exp), exp.item.shape[1], dtype=np.int64),
        "clicks": exp.click.sum(axis=1, dtype=np.int64),
        "purchases": exp.purchase.sum(axis=1, dtype=np.int64),
        "revenue": (exp.purchase * exp.price).sum(axis=1),
    }


def _group_sums(codes: IntArray, n: int, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-group sums of each column (groups ``0..n-1``), ints kept as int64."""
    out: dict[str, np.ndarray] = {}
    for name, v in values.items():
        s = np.bincount(codes, weights=v.astype(np.float64), minlength=n)
        out[name] = np.rint(s).astype(np.int64) if v.dtype.kind in "iu" else s
    return out


def build_tables(exposures: Exposures, *, arms: Sequence[str], pre: Exposures | None = None) -> UserTables:
    """Per-user, per-user-day and per-user-domain sums of the experiment (+ pre-period covariates).

    Args:
        exposures: the experiment's served requests.
        arms: arm names, indexed by ``exposures.arm``.
        pre: the pre-period's served requests; adds ``pre_<metric>`` columns (0 for users without
            pre-period traffic). ``None`` = no covariates.

    Raises:
        DataError: no user was exposed, or a user was answered by two arms (unstable assignment).
    """
    if not len(exposures):
        raise DataError("no request was served in the experiment; nothing to analyse (is the server up?)")
    vals = _per_request(exposures)
    uids, u = np.unique(exposures.user_id, return_inverse=True)
    U = uids.shape[0]
    lo = np.full(U, np.iinfo(np.int64).max)
    hi = np.full(U, -1)
    np.minimum.at(lo, u, exposures.arm)
    np.maximum.at(hi, u, exposures.arm)
    if np.any(lo != hi):
        bad = uids[lo != hi]
        raise DataError(f"{bad.size} users were answered by more than one arm (e.g. user {int(bad[0])}); "
                        "the server's assignment is not stable: was the experiment changed during the run?")
    users: dict[str, Any] = {"user_id": uids, "arm": np.asarray(arms, dtype=object)[lo], **_group_sums(u, U, vals)}
    days, d = np.unique(exposures.date, return_inverse=True)
    cell, ud = np.unique(u * days.size + d, return_inverse=True)
    daily = {"user_id": uids[cell // days.size], "day": days[cell % days.size], **_group_sums(ud, cell.size, vals)}
    doms, k = np.unique(exposures.domain, return_inverse=True)
    dcell, udk = np.unique(u * doms.size + k, return_inverse=True)
    by_domain: dict[str, Any] = {"user_id": uids[dcell // doms.size], "domain": doms[dcell % doms.size],
                                 **_group_sums(udk, dcell.size, vals)}
    if pre is not None and len(pre):
        pvals = _per_request(pre)
        pos = np.searchsorted(uids, pre.user_id)
        seen = (pos < U) & (uids[np.minimum(pos, U - 1)] == pre.user_id)  # pre-period users who were exposed
        pre_u = _group_sums(pos[seen], U, {c: v[seen] for c, v in pvals.items()})
        users.update({f"pre_{c}": v for c, v in pre_u.items()})
        dk = np.searchsorted(doms, pre.domain)
        dseen = seen & (dk < doms.size) & (doms[np.minimum(dk, doms.size - 1)] == pre.domain)
        key = pos[dseen] * doms.size + dk[dseen]
        at = np.searchsorted(dcell, key)
        hit = (at < dcell.size) & (dcell[np.minimum(at, dcell.size - 1)] == key)
        pre_d = _group_sums(at[hit], dcell.size, {c: v[dseen][hit] for c, v in pvals.items()})
        by_domain.update({f"pre_{c}": v for c, v in pre_d.items()})
    elif pre is not None:
        users.update({f"pre_{c}": np.zeros(U, v.dtype) for c, v in vals.items()})
        by_domain.update({f"pre_{c}": np.zeros(dcell.size, v.dtype) for c, v in vals.items()})
    return UserTables(users=pd.DataFrame(users), daily=pd.DataFrame(daily), by_domain=pd.DataFrame(by_domain))


def oracle_lift(exposures: Exposures, config: ABTestConfig) -> dict[Metric, dict[str, float]]:
    """The true relative lift of each treatment per metric, from the world's expected outcomes.

    Every request whose every arm's slate is known counts for every arm (paired), so this is the
    lift of "everyone gets the treatment" over "everyone gets the control" on the same requests.

    Raises:
        DataError: ``exposures`` carries no expected outcomes (run with the oracle on).
    """
    if exposures.expected is None:
        raise DataError("no expected outcomes recorded; run the loop with `oracle=True`")
    e = exposures.expected
    good = np.isfinite(e).all(axis=(1, 2))
    tot = e[good].sum(axis=0)  # (K, 3): clicks, purchases, revenue
    names = [a.name for a in config.arms]
    c = names.index(config.control_arm.name)
    out: dict[Metric, dict[str, float]] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in (names.index(a.name) for a in config.treatments):
            click, buy, rev = (float(tot[t, j] / tot[c, j] - 1) for j in range(3))
            cvr = float((tot[t, 1] / tot[t, 0]) / (tot[c, 1] / tot[c, 0]) - 1)
            for m, v in ((Metric.CTR, click), (Metric.CLICKS_PER_USER, click), (Metric.PURCHASES_PER_USER, buy),
                         (Metric.REVENUE_PER_USER, rev), (Metric.CVR, cvr)):
                out.setdefault(m, {})[names[t]] = v
    return out


# ==== entry points ==================================================================================
def load_world(config: ABTestConfig) -> World:
    """The world of ``config.world_dir`` (``world.json``), else one generated from ``config.seed``."""
    if config.world_dir:
        return World.load(config.world_dir)
    logger.warning("no `world_dir`: generating a default world from seed %d (the served models never saw it)", config.seed)
    return World.generate(WorldConfig(seed=config.seed))


def experiment_model(config: ABTestConfig) -> str:
    """The one model name of the arms (the server runs experiments between versions of one model).

    Raises:
        ConfigError: arms name different models.
    """
    models = sorted({a.model for a in config.arms})
    if len(models) != 1:
        raise ConfigError(
            f"`arms` name models {models}; the scoring server splits traffic between versions of ONE model, so push "
            "every arm's package under one name (e.g. `seedrec export --name ranker`) and give each arm its version"
        )
    return models[0]


def simulate_offline(
    config: ABTestConfig,
    world: World,
    *,
    start_day: int | None = None,
    oracle: bool = False,
    chunk_size: int = 1 << 16,
) -> tuple[UserTables, dict[Metric, dict[str, float]] | None]:
    """The loop without a server: the logging policy for every arm (an A/A test) and the same tables.

    Args:
        config: the experiment (users, days, pre_days, domains, traffic, salt, seed).
        world: the world.
        start_day: the first pre-period world day (default: after the logged days).
        oracle: also compute the (zero) oracle lift.
        chunk_size: requests per chunk (one chunk per day by default: nothing is written back).

    Returns:
        The per-user tables and the oracle lift (or None).

    Example:
        >>> from abtest.configs import ArmConfig
        >>> world = World.generate(WorldConfig(users=60, items=40, days=1, domains=2, categories=5, clusters=2))
        >>> cfg = ABTestConfig(arms=(ArmConfig(name="a", model="m", share=0.5), ArmConfig(name="b", model="m", share=0.5)),
        ...                    users=60, days=2, pre_days=1, domains=("feed", "search"))
        >>> tables, truth = simulate_offline(cfg, world, oracle=True)
        >>> list(tables.users.columns)[:6], truth[Metric.CLICKS_PER_USER]
        (['user_id', 'arm', 'impressions', 'clicks', 'purchases', 'revenue'], {'b': 0.0})
    """
    traffic = Traffic(config, world, start_day=start_day)
    source = PolicySource(world, config, oracle=oracle)
    pre = run_days(traffic, source, traffic.pre_days, chunk_size=chunk_size) if config.pre_days else None
    exp = run_days(traffic, source, traffic.days, oracle=oracle, chunk_size=chunk_size)
    tables = build_tables(exp, arms=[a.name for a in config.arms], pre=pre)
    return tables, (oracle_lift(exp, config) if oracle else None)


@dataclass(frozen=True)
class ABTestRun:
    """What :func:`run_abtest` produced."""

    analysis: Any  # abtest.stats.ABAnalysis
    files: Any  # abtest.report.ReportFiles
    tables: UserTables
    oracle: dict[Metric, dict[str, float]] | None
    stats: RunStats
    versions: dict[str, str]
    out: Path
    wall_s: float


def _experiment_versions(admin: Any, config: ABTestConfig, model: str, *, configure: bool) -> dict[str, str]:
    """Arm name → version: the config's (``""`` = the active version), or the server's running experiment."""
    status = admin.list(model)[0]
    if configure:
        return {a.name: a.version or status.active_version for a in config.arms}
    running = {a.name: a.version for a in status.experiment.arms}
    missing = [a.name for a in config.arms if a.name not in running]
    if missing:
        raise ConfigError(f"the server's experiment on {model!r} has arms {sorted(running)}, the config {[a.name for a in config.arms]}; "
                          f"arms {missing} are not running (configure the experiment, or rename the arms)")
    return {a.name: running[a.name] for a in config.arms}


def _stop_experiment(config: ABTestConfig, model: str, admin_token: str | None) -> None:
    """Clears the experiment this run set (traffic goes back to the active version)."""
    from serving.client import AdminClient, ServingRpcError

    try:
        with AdminClient(config.server, token=admin_token, timeout_s=max(10.0, config.deadline_s)) as admin:
            admin.set_experiment(model, [], salt=config.salt)
    except ServingRpcError as e:  # never mask the run's own error; the experiment stays set
        logger.warning("could not stop the experiment on %s (%s); clear it with SetExperiment(arms=[])", model, e)


def _finish_report(run_summary: dict[str, Any], files: Any) -> None:
    """Adds the run's counters to report.json (``run``) and a "Run" section to report.md."""
    js = json.loads(files.json.read_text(encoding="utf-8"))
    js["run"] = run_summary
    files.json.write_text(json.dumps(js, indent=1, allow_nan=False), encoding="utf-8")
    r = run_summary
    lat = r["latency_ms"]
    hs = r["history_sources"]
    store_share = hs.get("online_store", 0) / max(r["served"], 1)
    lines = ["", "## Run", "",
             f"- Score requests: {r['requests']:,} sent, {r['served']:,} answered, **{r['failed_total']:,} failed**"
             f"{' ' + str(r['failed']) if r['failed'] else ''} (deadline {r['deadline_s']} s each, {r['concurrency']} in flight); latency p50 "
             f"{lat.get('p50', float('nan')):.1f} ms, p99 {lat.get('p99', float('nan')):.1f} ms.",
             f"- Histories: {store_share:.0%} of answered requests read the user's history from the online store "
             f"({dict(hs)}); LMN memory fallbacks: {r['memory_fallbacks']}.",
             f"- Oracle: {r['counterfactual_calls']:,} extra Score calls with each other arm's version pinned "
             f"({sum(r['counterfactual_failed'].values())} failed); the true lift is the ratio of the world's expected "
             "outcomes of every arm's slates on the same requests.",
             f"- Events written back: {r['events_written']:,} to the online store; {r['impressions_logged']:,} experiment and "
             f"{r['pre_impressions_logged']:,} pre-period impressions logged under `{r['logs']}`.",
             f"- Versions: {r['versions']}; wall time {r['wall_s']:.1f} s.", ""]
    with files.markdown.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines))


def run_abtest(
    config: ABTestConfig,
    out: str | Path,
    *,
    world: World | None = None,
    redis_url: str | None = None,
    namespace: str = "seedrec",
    admin_token: str | None = None,
    configure_server: bool = True,
    stop_after: bool = True,
    oracle: bool = True,
    chunk_size: int = 256,
    start_day: int | None = None,
    progress: bool = True,
    plots: bool = True,
    client_factory: Callable[[str, float], Any] | None = None,
) -> ABTestRun:
    """Runs one simulated A/B test against a running scoring server and writes its report.

    Args:
        config: the experiment; ``config.server`` is the scoring server.
        out: the output folder.
        world: the simulated world; default :func:`load_world` (``config.world_dir``).
        redis_url: the online feature store the server reads; events are written there. ``None``
            = no store writes (histories do not move; logged as a warning).
        namespace: the store's key prefix.
        admin_token: the server's admin token (SetExperiment, List).
        configure_server: set the experiment (arms, shares, salt) before the run; without it the
            server's running experiment is used as is (its arm names must match the config's).
        stop_after: clear the experiment when the run ends (only if this run set it).
        oracle: compute the true lift (K − 1 extra Score calls per request with versions pinned).
        chunk_size: requests between two writes of events.
        start_day: the first pre-period world day (default: after the world's logged days).
        progress: tqdm bars.
        plots: render the report's PNG plots.
        client_factory: ``(address, timeout_s) → RankingClient``-like (tests); default the real client.

    Returns:
        The :class:`ABTestRun`.

    Raises:
        ConfigError: arms of different models, unknown domains, too many users, arms not running.
        DataError: the server answered with an unknown arm, or nothing was served.
        ServingRpcError: an admin call failed (bad token, unknown model or version).
    """
    from abtest.report import write_report
    from abtest.stats import analyze
    from serving.client import AdminClient, RankingClient

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world = world or load_world(config)
    model = experiment_model(config)
    traffic = Traffic(config, world, start_day=start_day)
    with AdminClient(config.server, token=admin_token, timeout_s=max(10.0, config.deadline_s)) as admin:
        versions = _experiment_versions(admin, config, model, configure=configure_server)
        if configure_server:
            admin.set_experiment(model, [(a.name, versions[a.name], a.share) for a in config.arms], salt=config.salt,
                                 name=config.name)
            logger.info("experiment %r on model %s: %s (salt %r)", config.name, model,
                        {a.name: f"v{versions[a.name]} {a.share:.0%}" for a in config.arms}, config.salt)
    writer = None
    if redis_url:
        import redis

        from feature_pipeline.online_store import OnlineStoreWriter

        writer = OnlineStoreWriter(redis.Redis.from_url(redis_url), namespace=namespace, items=world.items_table())
        writer.write_users(world.users_table().take(pa.array(traffic.users)))
    else:
        logger.warning("no online store (--redis / $REDIS_URL): events are only logged; users' histories do not move")
    logs = out / "logs"
    from feature_pipeline.log_io import write_table

    write_table(logs, "users", world.users_table())
    write_table(logs, "items", world.items_table())
    stats = RunStats()
    try:
        pre = None
        if config.pre_days:
            pre_sink = EventSink(logs_dir=logs, writer=writer, part="abtest-pre")
            pre = run_days(traffic, PolicySource(world, config), traffic.pre_days, sink=pre_sink, chunk_size=1 << 16,
                           progress=progress, label="pre-period")
            stats.events_written += pre_sink.events_written
            stats.pre_impressions_logged = pre_sink.impressions_logged
        sink = EventSink(logs_dir=logs, writer=writer, part="abtest")
        make_client = client_factory or (lambda addr, timeout: RankingClient(addr, timeout_s=timeout))
        client = make_client(config.server, config.deadline_s)
        try:
            with ThreadPoolExecutor(config.concurrency, thread_name_prefix="abtest") as pool:
                source = ServerSource(config, world, client=client, pool=pool, versions=versions, oracle=oracle, stats=stats)
                exp = run_days(traffic, source, traffic.days, sink=sink, oracle=oracle, chunk_size=chunk_size,
                               progress=progress, label="experiment")
        finally:
            client.close()
        stats.events_written += sink.events_written
        stats.impressions_logged = sink.impressions_logged
    finally:
        if configure_server and stop_after:
            _stop_experiment(config, model, admin_token)
    arms = [a.name for a in config.arms]
    tables = build_tables(exp, arms=arms, pre=pre)
    truth = oracle_lift(exp, config) if oracle else None
    analysis = analyze(tables.users, config, daily=tables.daily, by_domain=tables.by_domain, oracle=truth)
    failed = int(sum(stats.failed.values()))
    if failed:
        analysis = dataclasses.replace(analysis, caveats=(
            *analysis.caveats,
            f"{failed} of {stats.requests} Score requests failed ({dict(stats.failed)}) and showed nothing; "
            "a healthy run has none, and failures that differ by arm bias the comparison."))
    files = write_report(analysis, out, plots=plots)
    tdir = out / "tables"
    tdir.mkdir(exist_ok=True)
    for name in ("users", "daily", "by_domain"):
        pq.write_table(pa.Table.from_pandas(getattr(tables, name), preserve_index=False), tdir / f"{name}.parquet")
    pq.write_table(pa.table({"user_id": tables.users["user_id"].to_numpy(), "arm": tables.users["arm"].astype(str).tolist()}),
                   out / "assignments.parquet")
    wall = time.perf_counter() - t0
    summary = {**stats.to_dict(), "versions": versions, "model": model, "deadline_s": config.deadline_s,
               "concurrency": config.concurrency, "logs": str(logs), "wall_s": wall,
               "oracle": None if truth is None else {m.value: v for m, v in truth.items()}}
    _finish_report(summary, files)
    logger.info("A/B test %r: %d users, %d requests (%d failed) in %.1fs; report %s", config.name, len(tables.users),
                stats.requests, failed, wall, files.markdown)
    return ABTestRun(analysis=analysis, files=files, tables=tables, oracle=truth, stats=stats, versions=versions,
                     out=out, wall_s=wall)
