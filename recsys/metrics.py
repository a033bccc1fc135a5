"""Offline ranking metrics: AUC, GAUC, logloss, per-domain AUC, RelaImpr, and a streaming evaluator.

Everything is vectorised numpy over flat arrays of N samples:

    labels   (N,)  0/1 targets (any value > 0.5 counts as positive)
    preds    (N,)  scores; probabilities for :func:`logloss`, any monotone score for the AUCs
    users    (N,)  integer user ids (GAUC groups by them)
    domains  (N,)  integer domain ids (per-domain AUC groups by them)

Degenerate inputs (a set with only one class) give ``nan`` rather than raising, so an evaluation of a
tiny split still produces a complete metrics dict.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 0, 1, 1]); p = np.array([0.1, 0.4, 0.35, 0.8])
    >>> auc(y, p)
    0.75
    >>> round(rela_impr(0.75, base_auc=0.7), 2)
    25.0
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

from seedrec.errors import ConfigError

__all__ = [
    "auc",
    "gauc",
    "logloss",
    "domain_auc",
    "rela_impr",
    "rela_impr_table",
    "EvalAccumulator",
    "all_gather_rows",
]

logger = logging.getLogger(__name__)

_EPS = 1e-7


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank (scipy's ``rankdata('average')``)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.empty(len(xs), dtype=bool)
    new[:1] = True
    new[1:] = xs[1:] != xs[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(xs)))
    avg = starts + (counts + 1) / 2.0  # mean of the 1-based positions start+1 .. start+count
    ranks = np.empty(len(xs), dtype=np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks


def auc(labels: np.ndarray, preds: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney rank statistic (ties count one half).

    Equal to ``sklearn.metrics.roc_auc_score`` wherever that is defined.

    Args:
        labels: (N,) 0/1 targets.
        preds: (N,) scores.

    Returns:
        The AUC, or ``nan`` when ``labels`` holds only one class.
    """
    y = np.asarray(labels).reshape(-1) > 0.5
    p = np.asarray(preds, dtype=np.float64).reshape(-1)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(p)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(labels: np.ndarray, preds: np.ndarray, users: np.ndarray) -> float:
    """Group AUC: per-user AUC averaged with weights = the user's impressions.

    Users whose impressions are all positive or all negative are skipped (their AUC is undefined).

    Args:
        labels: (N,) 0/1 targets.
        preds: (N,) scores.
        users: (N,) integer user ids.

    Returns:
        The GAUC, or ``nan`` when no user has both classes.
    """
    y = (np.asarray(labels).reshape(-1) > 0.5).astype(np.float64)
    p = np.asarray(preds, dtype=np.float64).reshape(-1)
    u = np.asarray(users).reshape(-1)
    if len(y) == 0:
        return float("nan")
    order = np.lexsort((p, u))  # by user, then by score
    us, ps, ys = u[order], p[order], y[order]
    n = len(us)
    pos = np.arange(n)
    new_user = np.empty(n, dtype=bool)
    new_user[:1] = True
    new_user[1:] = us[1:] != us[:-1]
    user_start = np.maximum.accumulate(np.where(new_user, pos, 0))
    new_group = new_user.copy()
    new_group[1:] |= ps[1:] != ps[:-1]  # a tie group: same user and same score
    g_starts = np.flatnonzero(new_group)
    g_counts = np.diff(np.append(g_starts, n))
    avg_pos = np.repeat(g_starts + (g_counts + 1) / 2.0, g_counts)  # 1-based, global
    rank_in_user = avg_pos - user_start
    uid = np.cumsum(new_user) - 1
    n_u = np.bincount(uid).astype(np.float64)
    p_u = np.bincount(uid, weights=ys)
    r_u = np.bincount(uid, weights=ys * rank_in_user)
    neg_u = n_u - p_u
    ok = (p_u > 0) & (neg_u > 0)
    if not ok.any():
        return float("nan")
    auc_u = (r_u[ok] - p_u[ok] * (p_u[ok] + 1) / 2.0) / (p_u[ok] * neg_u[ok])
    return float((auc_u * n_u[ok]).sum() / n_u[ok].sum())


def logloss(labels: np.ndarray, probs: np.ndarray, *, eps: float = _EPS) -> float:
    """Mean binary cross-entropy of probabilities clipped to ``[eps, 1 - eps]``.

    Args:
        labels: (N,) 0/1 targets.
        probs: (N,) predicted probabilities.
        eps: the clip, so a confident mistake costs ``-log(eps)`` instead of infinity.

    Returns:
        The mean logloss, or ``nan`` for an empty input.
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if len(y) == 0:
        return float("nan")
    q = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), eps, 1.0 - eps)
    return float(-(y * np.log(q) + (1.0 - y) * np.log1p(-q)).mean())


def domain_auc(labels: np.ndarray, preds: np.ndarray, domains: np.ndarray) -> dict[int, float]:
    """AUC within each domain.

    Args:
        labels: (N,) 0/1 targets.
        preds: (N,) scores.
        domains: (N,) integer domain ids.

    Returns:
        ``{domain id: AUC}`` for every domain present (``nan`` for a one-class domain).
    """
    d = np.asarray(domains).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    p = np.asarray(preds).reshape(-1)
    order = np.argsort(d, kind="mergesort")
    ds = d[order]
    values, starts = np.unique(ds, return_index=True)
    ends = np.append(starts[1:], len(ds))
    return {int(v): auc(y[order[s:e]], p[order[s:e]]) for v, s, e in zip(values, starts, ends)}


def rela_impr(model_auc: float, *, base_auc: float) -> float:
    """RelaImpr in percent: ``((AUC_model - 0.5) / (AUC_base - 0.5) - 1) * 100``.

    Args:
        model_auc: the AUC of the model under test.
        base_auc: the AUC of the baseline; must differ from 0.5.

    Raises:
        ConfigError: ``base_auc`` is 0.5 (a random baseline gives no scale).
    """
    if math.isclose(base_auc, 0.5):
        raise ConfigError(f"`base_auc` = {base_auc}; RelaImpr needs a baseline AUC other than 0.5")
    return ((model_auc - 0.5) / (base_auc - 0.5) - 1.0) * 100.0


def rela_impr_table(aucs: Mapping[str, float], *, baseline: str) -> dict[str, float]:
    """RelaImpr of every named model against the named baseline (the baseline itself gets 0.0).

    Args:
        aucs: ``{model name: AUC}``.
        baseline: the name in ``aucs`` to compare against.

    Raises:
        ConfigError: ``baseline`` is not one of the names.
    """
    if baseline not in aucs:
        raise ConfigError(f"`baseline` = {baseline!r} is not among the models {sorted(aucs)}")
    base = aucs[baseline]
    return {name: rela_impr(value, base_auc=base) for name, value in aucs.items()}


# ---- distributed gathering -------------------------------------------------------------------
def all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenates a (N_r, K) tensor from every rank, in rank order; a no-op without a process group.

    Ranks may hold different N_r: sizes are exchanged first and the rows padded to the largest.

    Args:
        rows: (N_r, K) this rank's rows.

    Returns:
        (sum_r N_r, K) on the device of ``rows``.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    comm_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    world = dist.get_world_size()
    local = rows.to(comm_device)
    size = torch.tensor([local.shape[0]], dtype=torch.int64, device=comm_device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    width = max(counts)
    padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=comm_device)
    padded[: local.shape[0]] = local
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(rows.device)


class EvalAccumulator:
    """Collects (labels, probabilities, users, domains) batch by batch, gathers them across ranks,
    and computes per-head AUC, GAUC, logloss and per-domain AUC.

    Args:
        head_names: the label heads, in the column order of ``labels`` / ``probs``.
        domain_names: names of the domain ids (index = id); ids past the end are named by number.

    Example:
        >>> acc = EvalAccumulator(["click"], domain_names=["feed"])
        >>> acc.update(labels=torch.tensor([[0.0], [1.0]]), probs=torch.tensor([[0.2], [0.9]]),
        ...            users=torch.tensor([1, 1]), domains=torch.tensor([0, 0]))
        >>> acc.compute(prefix="valid")["valid/click/auc"]
        1.0
    """

    def __init__(self, head_names: Sequence[str], *, domain_names: Sequence[str] = ()) -> None:
        self._heads = list(head_names)
        self._domains = list(domain_names)
        self._chunks: list[torch.Tensor] = []
        self._rows: np.ndarray | None = None

    @property
    def num_samples(self) -> int:
        """Samples accumulated so far on this rank (all ranks after :meth:`gather`)."""
        if self._rows is not None:
            return int(self._rows.shape[0])
        return sum(int(c.shape[0]) for c in self._chunks)

    def update(
        self,
        *,
        labels: torch.Tensor,
        probs: torch.Tensor,
        users: torch.Tensor,
        domains: torch.Tensor,
    ) -> None:
        """Adds one batch.

        Args:
            labels: (B, H) targets, heads in ``head_names`` order.
            probs: (B, H) predicted probabilities.
            users: (B,) user ids.
            domains: (B,) domain ids.
        """
        B, H = probs.shape
        # float64 keeps user ids exact up to 2**53, so one gather moves every column.
        row = torch.cat(
            [
                labels.detach().reshape(B, H).to(torch.float64),
                probs.detach().to(torch.float64),
                users.detach().reshape(B, 1).to(torch.float64),
                domains.detach().reshape(B, 1).to(torch.float64),
            ],
            dim=1,
        )  # (B, 2H + 2)
        self._chunks.append(row.cpu())
        self._rows = None

    def _local(self) -> torch.Tensor:
        width = 2 * len(self._heads) + 2
        return torch.cat(self._chunks) if self._chunks else torch.zeros((0, width), dtype=torch.float64)

    def gather(self) -> None:
        """Replaces the local rows by the rows of every rank (call on all ranks together)."""
        self._rows = all_gather_rows(self._local()).numpy()

    def _domain_name(self, d: int) -> str:
        return self._domains[d] if 0 <= d < len(self._domains) else str(d)

    def compute(self, *, prefix: str) -> dict[str, float]:
        """Metrics over the gathered rows (the local ones when :meth:`gather` was not called).

        Args:
            prefix: the first key component, usually the split name.

        Returns:
            ``{prefix}/{head}/auc``, ``.../gauc``, ``.../logloss``, ``.../auc/{domain}`` per head,
            and ``{prefix}/num_samples``.
        """
        rows = self._rows if self._rows is not None else self._local().numpy()
        H = len(self._heads)
        users = rows[:, 2 * H].astype(np.int64)
        domains = rows[:, 2 * H + 1].astype(np.int64)
        out: dict[str, float] = {f"{prefix}/num_samples": float(rows.shape[0])}
        for h, head in enumerate(self._heads):
            y, p = rows[:, h], rows[:, H + h]
            out[f"{prefix}/{head}/auc"] = auc(y, p)
            out[f"{prefix}/{head}/gauc"] = gauc(y, p, users)
            out[f"{prefix}/{head}/logloss"] = logloss(y, p)
            if len(self._domains) > 1 or len(np.unique(domains)) > 1:
                for d, value in domain_auc(y, p, domains).items():
                    out[f"{prefix}/{head}/auc/{self._domain_name(d)}"] = value
        return out
