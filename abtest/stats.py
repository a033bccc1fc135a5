"""Statistics of an A/B test randomised by user (``shared/specs/platform-landscape.md`` §5.4).

Every metric is a ratio of per-user sums over the users of an arm, ``R = Σ y_i / Σ d_i``: a
per-user mean has ``d_i = 1`` (clicks/user), a ratio metric a real denominator (CTR = clicks /
impressions). With ``N`` users, ``d̄ = Σd/N`` and sample (co)variances (``ddof=1``):

* **Delta method.** ``R`` is linearised per user, ``l_i = (y_i − R d_i) / d̄``, so
  ``Var(R) ≈ Var(l)/N = [s²_y − 2R s_yd + R² s²_d] / (N d̄²)``. For ``d_i = 1`` this is the usual
  ``s²_y/N``, so one code path serves means and ratios.
* **Welch t-test** on ``Δ = R_T − R_C`` with ``se² = V_T + V_C`` and the Welch–Satterthwaite
  ``ν = se⁴ / (V_T²/(N_T−1) + V_C²/(N_C−1))``; for per-user means it equals
  ``scipy.stats.ttest_ind(treatment, control, equal_var=False)``.
* **Relative lift** ``L = R_T/R_C − 1`` with two ``1 − α`` intervals (``q`` = the Student-t
  quantile at ``ν``): the delta method, ``L ± q·sqrt(V_T/R_C² + R_T² V_C/R_C⁴)`` (symmetric), and
  **Fieller's** interval, the set of ratios ``ρ`` with ``(R_T − ρ R_C)² ≤ q² (V_T + ρ² V_C)``
  (asymmetric). When it is bounded (``R_C² > q² V_C``: the control mean is itself clearly non-zero,
  always so at A/B sample sizes) it excludes 0 exactly when the t-test rejects, so it is the
  headline interval; otherwise it is reported as (−inf, inf). The delta interval is reported beside it.
* **CUPED** (Deng, Xu, Kohavi, Walker, WSDM 2013). The covariate is the same metric over the
  pre-period, linearised the same way (``l^x_i``). ``θ = Σ_g (N_g−1) cov_g(l, l^x) / Σ_g (N_g−1)
  var_g(l^x)`` is pooled over all arms with within-arm moments, i.e. the OLS slope of
  ``y ~ arm dummies + x``; each arm's estimate becomes ``R_g − θ (R^x_g − R^x)`` with ``R^x`` the
  covariate over all arms, and its variance ``Var(l − θ l^x)/N_g``. For per-user means the
  difference equals the OLS coefficient of the treatment dummy with the centred covariate.
  θ's own sampling noise is ignored (O(1/N)).
* **SRM**: a chi-square goodness-of-fit of users per arm against the configured shares
  (``scipy.stats.chisquare``); results are not to be read when it fires.
* **Always-valid inference**: the mixture SPRT of Johari, Koomen, Pekelis, Walsh, "Peeking at A/B
  tests" (KDD 2017), as deployed in Optimizely's stats engine, on the relative lift ``L_n`` with
  plug-in variance ``V_n`` at each look, mixing over ``N(0, τ²)``::

      Λ_n(θ₀) = sqrt(V_n / (V_n + τ²)) · exp(τ² (L_n − θ₀)² / (2 V_n (V_n + τ²)))

  The always-valid p-value is ``p_n = min(1, min_{m≤n} 1/Λ_m(0))``; the confidence sequence is the
  running intersection of ``{θ₀ : Λ_n(θ₀) < 1/α}``, i.e. ``L_n ± sqrt(V_n (V_n+τ²)/τ² ·
  (2 log(1/α) + log((V_n+τ²)/V_n)))``. By Ville's inequality a user who peeks after every day and
  stops at the first ``p_n ≤ α`` is wrong with probability at most ``α`` (asymptotically, since
  ``V_n`` is estimated). ``τ`` is the expected size of relative lifts (Johari et al. §4.3 choose it
  from past experiments); τ = 0.05 by default.
* **Holm** step-down adjustment of the p-values of the treatments of one metric.

The low-level functions (:func:`arm_moments`, :func:`compare`, :func:`msprt`, :func:`srm_test`,
:func:`holm`) are vectorised over leading axes (simulated experiments, days); :func:`analyze`
reads the tables of one experiment and returns an :class:`ABAnalysis`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as _st

from abtest.configs import ABTestConfig, Correction, Metric
from seedrec.errors import DataError

__all__ = [
    "MetricDef",
    "METRIC_DEFS",
    "Moments",
    "Comparison",
    "MSPRTResult",
    "SRMResult",
    "SequentialResult",
    "MetricResult",
    "DailyResult",
    "DomainResult",
    "ABAnalysis",
    "arm_moments",
    "compare",
    "welch_ttest",
    "ratio_of_sums",
    "msprt",
    "srm_test",
    "holm",
    "analyze",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class MetricDef:
    """How a metric is read from the per-user table: ``Σ numerator / Σ denominator`` per arm."""

    label: str
    numerator: str
    denominator: str | None  # None: a per-user mean

    @property
    def columns(self) -> tuple[str, ...]:
        """The table columns the metric needs (the covariate adds a ``pre_`` prefix to each)."""
        return (self.numerator,) if self.denominator is None else (self.numerator, self.denominator)


METRIC_DEFS: dict[Metric, MetricDef] = {
    Metric.CTR: MetricDef("CTR", "clicks", "impressions"),
    Metric.CLICKS_PER_USER: MetricDef("clicks/user", "clicks", None),
    Metric.PURCHASES_PER_USER: MetricDef("purchases/user", "purchases", None),
    Metric.REVENUE_PER_USER: MetricDef("revenue/user", "revenue", None),
    Metric.CVR: MetricDef("purchases/click", "purchases", "clicks"),
}
PRE = "pre_"  # prefix of the pre-period covariate columns
_COUNTS = ("impressions", "clicks", "purchases")


# ---- low level: moments, comparisons, tests (vectorised) ------------------------------------------


@dataclass(frozen=True)
class Moments:
    """Per-arm sums of one metric; every field has shape ``(..., K)`` for ``K`` arms.

    ``y``/``d`` are the numerator and denominator, ``x``/``m`` the pre-period covariate's (``None``
    without a covariate); two letters are sums of products (``yd = Σ y_i d_i``).
    """

    n: FloatArray
    y: FloatArray
    d: FloatArray
    yy: FloatArray
    dd: FloatArray
    yd: FloatArray
    x: FloatArray | None = None
    m: FloatArray | None = None
    xx: FloatArray | None = None
    mm: FloatArray | None = None
    xm: FloatArray | None = None
    yx: FloatArray | None = None
    ym: FloatArray | None = None
    dx: FloatArray | None = None
    dm: FloatArray | None = None

    @property
    def ratio(self) -> FloatArray:
        """The metric per arm, ``Σy/Σd``, shape ``(..., K)``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(self.y / self.d)


def arm_moments(
    y: npt.ArrayLike,
    arm: npt.ArrayLike,
    *,
    n_arms: int,
    den: npt.ArrayLike | None = None,
    pre: npt.ArrayLike | None = None,
    pre_den: npt.ArrayLike | None = None,
    mask: npt.ArrayLike | None = None,
) -> Moments:
    """Sums one metric per arm over the last axis (users), broadcasting leading axes.

    Args:
        y: ``(..., U)`` per-user numerators.
        arm: ``(..., U)`` arm codes in ``[0, n_arms)``.
        n_arms: ``K``.
        den: ``(..., U)`` denominators; ``None`` for a per-user mean (all ones).
        pre: ``(..., U)`` pre-period numerators (the CUPED covariate); ``None`` for none.
        pre_den: ``(..., U)`` pre-period denominators; ``None`` for ones.
        mask: ``(..., U)`` 0/1 weights, 0 to leave a user out (not yet exposed on a given day).

    Returns:
        The :class:`Moments`, each field ``(..., K)``.
    """
    yv = np.asarray(y, dtype=np.float64)
    codes = np.asarray(arm)
    onehot = (codes[..., None] == np.arange(n_arms)).astype(np.float64)  # (..., U, K)
    w = np.ones_like(yv) if mask is None else np.asarray(mask, dtype=np.float64)
    parts = [yv, w] + [np.asarray(a, dtype=np.float64) for a in (den, pre, pre_den) if a is not None]
    shape = np.broadcast_shapes(*(p.shape for p in parts), onehot.shape[:-1])
    yv, w = np.broadcast_to(yv, shape) * w, np.broadcast_to(w, shape)
    dv = w if den is None else np.broadcast_to(np.asarray(den, dtype=np.float64), shape) * w

    def s(a: FloatArray) -> FloatArray:
        return np.asarray(np.matmul(a[..., None, :], onehot)[..., 0, :])  # (..., K)

    mo: dict[str, FloatArray] = {
        "n": s(w), "y": s(yv), "d": s(dv), "yy": s(yv * yv), "dd": s(dv * dv), "yd": s(yv * dv),
    }
    if pre is not None:
        xv = np.broadcast_to(np.asarray(pre, dtype=np.float64), shape) * w
        mv = w if pre_den is None else np.broadcast_to(np.asarray(pre_den, dtype=np.float64), shape) * w
        mo.update(
            x=s(xv), m=s(mv), xx=s(xv * xv), mm=s(mv * mv), xm=s(xv * mv),
            yx=s(yv * xv), ym=s(yv * mv), dx=s(dv * xv), dm=s(dv * mv),
        )
    return Moments(**mo)


def _linearised(mo: Moments) -> dict[str, FloatArray]:
    """Per-arm ratio, variance of the linearised metric, and (with a covariate) its covariance."""
    n = mo.n

    def cov(a: FloatArray, b: FloatArray, ab: FloatArray) -> FloatArray:
        return np.asarray((ab - a * b / n) / (n - 1))

    with np.errstate(divide="ignore", invalid="ignore"):
        r = mo.y / mo.d
        dbar = mo.d / n
        out = {"r": r, "var": (cov(mo.y, mo.y, mo.yy) - 2 * r * cov(mo.y, mo.d, mo.yd) + r * r * cov(mo.d, mo.d, mo.dd)) / dbar**2}
        if mo.x is not None:
            assert mo.m is not None and mo.xx is not None and mo.mm is not None and mo.xm is not None
            assert mo.yx is not None and mo.ym is not None and mo.dx is not None and mo.dm is not None
            rx = mo.x / mo.m
            mbar = mo.m / n
            out["rx"] = rx
            out["var_x"] = (cov(mo.x, mo.x, mo.xx) - 2 * rx * cov(mo.x, mo.m, mo.xm) + rx * rx * cov(mo.m, mo.m, mo.mm)) / mbar**2
            out["cov"] = (
                cov(mo.y, mo.x, mo.yx) - rx * cov(mo.y, mo.m, mo.ym) - r * cov(mo.d, mo.x, mo.dx) + r * rx * cov(mo.d, mo.m, mo.dm)
            ) / (dbar * mbar)
    return {k: np.asarray(v) for k, v in out.items()}


@dataclass(frozen=True)
class Comparison:
    """One treatment against the control on one metric; every field has the leading shape ``(...)``.

    Means are the (CUPED-adjusted, if ``theta != 0``) metric per arm; lifts are relative
    (``0.031`` = +3.1%); ``lift_lo``/``lift_hi`` is Fieller's interval (±inf when unbounded) and
    ``lift_delta_lo``/``lift_delta_hi`` the delta-method one.
    """

    control_mean: FloatArray
    treatment_mean: FloatArray
    var_control: FloatArray
    var_treatment: FloatArray
    diff: FloatArray
    se: FloatArray
    df: FloatArray
    tstat: FloatArray
    pvalue: FloatArray
    diff_lo: FloatArray
    diff_hi: FloatArray
    lift: FloatArray
    lift_se: FloatArray
    lift_lo: FloatArray
    lift_hi: FloatArray
    lift_delta_lo: FloatArray
    lift_delta_hi: FloatArray
    theta: FloatArray
    n_control: FloatArray
    n_treatment: FloatArray
    alpha: float


def compare(mo: Moments, *, treatment: int, control: int = 0, alpha: float = 0.05, cuped: bool = False) -> Comparison:
    """Welch t-test and lift intervals of arm ``treatment`` against arm ``control``.

    Args:
        mo: the metric's moments, ``(..., K)``.
        treatment: the treatment arm's index.
        control: the control arm's index.
        alpha: ``1 − alpha`` is the confidence of the intervals.
        cuped: adjust by the covariate in ``mo`` (θ pooled over all ``K`` arms, see the module doc).

    Returns:
        The :class:`Comparison`; arms with fewer than 2 users give NaN.

    Raises:
        DataError: ``cuped`` without a covariate in ``mo``.
    """
    lin = _linearised(mo)
    n = mo.n
    if cuped:
        if "cov" not in lin:
            raise DataError("CUPED needs the pre-period covariate; pass `pre` to arm_moments")
        with np.errstate(divide="ignore", invalid="ignore"):
            w = n - 1
            sxx = np.nansum(w * lin["var_x"], axis=-1)
            theta = np.where(sxx > 0, np.nansum(w * lin["cov"], axis=-1) / sxx, 0.0)
            rx_all = mo.x.sum(-1) / mo.m.sum(-1)  # type: ignore[union-attr]  # present: "cov" in lin
            rx_all = np.where(np.isfinite(rx_all), rx_all, 0.0)
            est = lin["r"] - theta[..., None] * (lin["rx"] - rx_all[..., None])
            unit_var = lin["var"] - 2 * theta[..., None] * lin["cov"] + theta[..., None] ** 2 * lin["var_x"]
    else:
        theta = np.zeros(n.shape[:-1])
        est, unit_var = lin["r"], lin["var"]
    with np.errstate(divide="ignore", invalid="ignore"):
        v = unit_var / n
        a, b = est[..., control], est[..., treatment]
        va, vb = v[..., control], v[..., treatment]
        na, nb = n[..., control], n[..., treatment]
        var = va + vb
        se = np.sqrt(var)
        df = var**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
        tstat = (b - a) / se
        p = 2 * _st.t.sf(np.abs(tstat), df)
        q = _st.t.ppf(1 - alpha / 2, df)
        lift = b / a - 1
        lift_se = np.sqrt(vb / a**2 + b**2 * va / a**4)
        big_a = a**2 - q**2 * va  # Fieller: bounded iff the control mean is itself significant
        root = np.sqrt(np.maximum(a**2 * vb + b**2 * va - q**2 * va * vb, 0.0))
        bounded = big_a > 0
        f_lo = np.where(bounded, (a * b - q * root) / big_a - 1, -np.inf)
        f_hi = np.where(bounded, (a * b + q * root) / big_a - 1, np.inf)
    nan = ~np.isfinite(lift) | ~np.isfinite(q)
    f_lo, f_hi = np.where(nan, np.nan, f_lo), np.where(nan, np.nan, f_hi)
    arr = np.asarray
    return Comparison(
        control_mean=arr(a), treatment_mean=arr(b), var_control=arr(va), var_treatment=arr(vb),
        diff=arr(b - a), se=arr(se), df=arr(df), tstat=arr(tstat), pvalue=arr(p),
        diff_lo=arr(b - a - q * se), diff_hi=arr(b - a + q * se),
        lift=arr(lift), lift_se=arr(lift_se), lift_lo=arr(f_lo), lift_hi=arr(f_hi),
        lift_delta_lo=arr(lift - q * lift_se), lift_delta_hi=arr(lift + q * lift_se),
        theta=arr(theta), n_control=arr(na), n_treatment=arr(nb), alpha=float(alpha),
    )


def welch_ttest(treatment: npt.ArrayLike, control: npt.ArrayLike, *, alpha: float = 0.05) -> Comparison:
    """Welch's t-test of two samples of per-user values (see :func:`compare`).

    Example:
        >>> c = welch_ttest([2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 2.0, 3.0])
        >>> round(float(c.diff), 3), round(float(c.lift), 3)
        (1.5, 0.75)
    """
    t, c = np.asarray(treatment, dtype=np.float64), np.asarray(control, dtype=np.float64)
    codes = np.concatenate([np.zeros(c.size, np.int64), np.ones(t.size, np.int64)])
    return compare(arm_moments(np.concatenate([c, t]), codes, n_arms=2), treatment=1, control=0, alpha=alpha)


def ratio_of_sums(num: npt.ArrayLike, den: npt.ArrayLike) -> tuple[float, float]:
    """``Σnum/Σden`` over users and its delta-method variance.

    Example:
        >>> r, v = ratio_of_sums([1, 0, 2, 1], [10, 5, 20, 5])
        >>> round(r, 4)
        0.1
    """
    y = np.asarray(num, dtype=np.float64)
    lin = _linearised(arm_moments(y, np.zeros(y.shape, np.int64), n_arms=1, den=den))
    return float(lin["r"][0]), float(lin["var"][0] / y.size)


@dataclass(frozen=True)
class MSPRTResult:
    """The mSPRT over looks (last axis): log-likelihood ratio at θ₀ = 0, always-valid p, confidence sequence."""

    log_lr: FloatArray
    pvalue: FloatArray
    cs_lo: FloatArray
    cs_hi: FloatArray


def msprt(lift: npt.ArrayLike, var: npt.ArrayLike, *, tau: float, alpha: float) -> MSPRTResult:
    """Always-valid p-values and confidence sequences of a normal-mixture SPRT (see the module doc).

    Args:
        lift: ``(..., T)`` the estimate (relative lift) at each of ``T`` looks, in time order.
        var: ``(..., T)`` its variance at each look; NaN looks (too few users) are skipped.
        tau: the standard deviation of the ``N(0, τ²)`` mixture, in the estimate's units.
        alpha: the level of the confidence sequence.

    Returns:
        The :class:`MSPRTResult`, each field ``(..., T)``; ``pvalue`` and the interval only tighten.

    Example:
        >>> r = msprt([0.0, 0.08, 0.1], [0.01, 0.0004, 0.0002], tau=0.05, alpha=0.05)
        >>> bool(r.pvalue[-1] < 0.05), bool(r.cs_lo[-1] > 0)
        (True, True)
    """
    est, v = np.asarray(lift, dtype=np.float64), np.asarray(var, dtype=np.float64)
    ok = np.isfinite(est) & np.isfinite(v) & (v > 0)
    t2 = tau * tau
    with np.errstate(divide="ignore", invalid="ignore"):
        s = v + t2
        log_lr = np.where(ok, 0.5 * np.log(v / s) + t2 * est**2 / (2 * v * s), 0.0)
        half = np.sqrt(v * s / t2 * (2 * math.log(1 / alpha) + np.log(s / v)))
    p = np.minimum.accumulate(np.minimum(1.0, np.exp(-log_lr)), axis=-1)
    lo = np.where(ok, est - half, -np.inf)
    hi = np.where(ok, est + half, np.inf)
    run_lo, run_hi = np.maximum.accumulate(lo, axis=-1), np.minimum.accumulate(hi, axis=-1)
    # An empty intersection means the coverage event already failed; fall back to the look's own interval.
    empty = run_lo > run_hi
    return MSPRTResult(log_lr=log_lr, pvalue=p, cs_lo=np.where(empty, lo, run_lo), cs_hi=np.where(empty, hi, run_hi))


@dataclass(frozen=True)
class SRMResult:
    """The sample-ratio-mismatch check: users per arm against the configured shares."""

    counts: FloatArray
    expected: FloatArray
    statistic: FloatArray
    pvalue: FloatArray
    alpha: float

    @property
    def mismatch(self) -> npt.NDArray[np.bool_]:
        """True where the gate fires (``pvalue < alpha``): do not read the results."""
        return np.asarray(self.pvalue < self.alpha)


def srm_test(counts: npt.ArrayLike, shares: Sequence[float], *, alpha: float = 0.001) -> SRMResult:
    """Chi-square goodness of fit of ``counts`` (``(..., K)`` users per arm) to ``shares`` (K,).

    Example:
        >>> r = srm_test([10_400, 9_600], [0.5, 0.5])
        >>> bool(r.mismatch), float(r.statistic)
        (True, 32.0)
    """
    obs = np.asarray(counts, dtype=np.float64)
    sh = np.asarray(shares, dtype=np.float64)
    exp = obs.sum(-1, keepdims=True) * (sh / sh.sum())
    stat = ((obs - exp) ** 2 / exp).sum(-1)
    return SRMResult(counts=obs, expected=exp, statistic=stat, pvalue=np.asarray(_st.chi2.sf(stat, sh.size - 1)), alpha=alpha)


def holm(pvalues: npt.ArrayLike) -> FloatArray:
    """Holm's step-down adjusted p-values along the last axis (NaN p-values are left out).

    Example:
        >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    filled = np.where(np.isnan(p), np.inf, p)
    order = np.argsort(filled, axis=-1)
    ps = np.take_along_axis(filled, order, axis=-1)
    m = np.isfinite(ps).sum(-1, keepdims=True)
    adj = np.minimum(1.0, np.maximum.accumulate(np.maximum(m - np.arange(p.shape[-1]), 1) * ps, axis=-1))
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=-1)
    return np.where(np.isnan(p), np.nan, out)


# ---- one experiment: tables → ABAnalysis ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SequentialResult:
    """Cumulative looks (one per day) at one treatment × metric: fixed-horizon vs always-valid.

    ``lift``/``lift_lo``/``lift_hi``/``pvalue_naive`` are what a fixed-horizon test says at each
    look (misleading if peeked at); ``pvalue``/``cs_lo``/``cs_hi`` are the mSPRT's always-valid ones.
    """

    metric: Metric
    treatment: str
    days: tuple[Any, ...]
    lift: FloatArray
    lift_lo: FloatArray
    lift_hi: FloatArray
    pvalue_naive: FloatArray
    pvalue: FloatArray
    cs_lo: FloatArray
    cs_hi: FloatArray
    tau: float
    alpha: float

    @property
    def first_significant_day(self) -> Any | None:
        """The first look whose always-valid p-value is ``<= alpha``; None if none yet."""
        hit = np.flatnonzero(self.pvalue <= self.alpha)
        return self.days[int(hit[0])] if hit.size else None


@dataclass(frozen=True, kw_only=True)
class MetricResult:
    """One treatment × metric: the raw and CUPED comparisons and the decision."""

    metric: Metric
    treatment: str
    control: str
    raw: Comparison
    cuped: Comparison | None
    variance_reduction: float | None  # 1 − Var(CUPED Δ)/Var(raw Δ)
    pvalue_adjusted: float  # the headline p-value after the configured correction
    significant: bool
    sequential: SequentialResult
    true_lift: float | None = None  # the oracle lift, when the simulator knows it

    @property
    def headline(self) -> Comparison:
        """The comparison the decision is made on: CUPED if applied, else raw."""
        return self.cuped if self.cuped is not None else self.raw


@dataclass(frozen=True, kw_only=True)
class DailyResult:
    """Cumulative metric per arm after each day (users counted from their first day on)."""

    days: tuple[Any, ...]
    n_users: FloatArray  # (T, K)
    values: dict[Metric, FloatArray]  # metric → (T, K)


@dataclass(frozen=True, kw_only=True)
class DomainResult:
    """One treatment × metric within one domain (users active in that domain)."""

    domain: str
    metric: Metric
    treatment: str
    comparison: Comparison
    cuped: bool


@dataclass(frozen=True, kw_only=True)
class ABAnalysis:
    """Everything :func:`abtest.report.write_report` needs about one experiment.

    Example:
        >>> from abtest.configs import ABTestConfig, ArmConfig, Metric
        >>> cfg = ABTestConfig(arms=(ArmConfig(name="control", model="din", share=0.5),
        ...                          ArmConfig(name="lmn", model="lmn", share=0.5)),
        ...                    metrics=(Metric.CLICKS_PER_USER,), pre_days=0, cuped=False)
        >>> rng = np.random.default_rng(0)
        >>> arm = np.repeat(["control", "lmn"], 500)
        >>> users = {"user_id": np.arange(1000), "arm": arm,
        ...          "clicks": rng.poisson(np.where(arm == "lmn", 2.4, 2.0))}
        >>> res = analyze(users, cfg).result(Metric.CLICKS_PER_USER, "lmn")
        >>> res.significant, round(float(res.headline.lift), 2)
        (True, 0.12)
    """

    config: ABTestConfig
    arms: tuple[str, ...]
    n_users: tuple[int, ...]
    srm: SRMResult
    results: tuple[MetricResult, ...]
    daily: DailyResult | None
    domains: tuple[DomainResult, ...]
    caveats: tuple[str, ...]

    def result(self, metric: Metric, treatment: str) -> MetricResult:
        """The result of one metric × treatment arm."""
        for r in self.results:
            if r.metric == metric and r.treatment == treatment:
                return r
        raise KeyError(f"no result for metric {metric.value!r} and treatment {treatment!r}")

    def to_dict(self) -> dict[str, Any]:
        """Every number as JSON-ready Python values (NaN and ±inf become None)."""
        return {
            "config": _jsonable(self.config),
            "arms": list(self.arms),
            "control": self.config.control_arm.name,
            "n_users": list(self.n_users),
            "srm": {**_jsonable(self.srm), "mismatch": bool(self.srm.mismatch)},
            "results": [
                {**_jsonable(r), "label": METRIC_DEFS[r.metric].label, "headline": "cuped" if r.cuped else "raw",
                 "first_significant_day": _jsonable(r.sequential.first_significant_day)}
                for r in self.results
            ],
            "daily": _jsonable(self.daily),
            "domains": [_jsonable(d) for d in self.domains],
            "caveats": list(self.caveats),
        }


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return {(k.value if isinstance(k, Enum) else str(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray | np.generic):
        return _jsonable(obj.tolist())
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    return str(obj)


def _columns(table: Any, what: str) -> dict[str, np.ndarray]:
    """A pandas DataFrame, a pyarrow Table or a mapping of arrays → ``{name: numpy array}``."""
    if hasattr(table, "column_names") and hasattr(table, "column"):  # pyarrow.Table
        return {str(n): np.asarray(table.column(n).to_numpy()) for n in table.column_names}
    if hasattr(table, "columns") and hasattr(table, "to_numpy"):  # pandas.DataFrame
        return {str(c): np.asarray(table[c].to_numpy()) for c in table.columns}
    if isinstance(table, Mapping):
        cols = {str(k): np.asarray(v) for k, v in table.items()}
        sizes = {k: v.shape for k, v in cols.items()}
        if len({s for s in sizes.values()}) > 1 or any(len(s) != 1 for s in sizes.values()):
            raise DataError(f"the {what} table's columns must be 1-D and of one length, got shapes {sizes}")
        return cols
    raise DataError(f"the {what} table must be a pandas DataFrame, a pyarrow Table or a mapping of arrays")


def _require(cols: Mapping[str, np.ndarray], names: Sequence[str], what: str, fix: str) -> None:
    missing = [n for n in names if n not in cols]
    if missing:
        raise DataError(f"the {what} table lacks columns {missing} (has {sorted(cols)}); {fix}")
    for n in names:
        if n in ("user_id", "arm", "day", "domain"):
            continue
        v = cols[n]
        if v.dtype.kind not in "biuf" or not np.all(np.isfinite(v)):
            raise DataError(f"column `{n}` of the {what} table must be finite numbers")
        if (n in _COUNTS or n.removeprefix(PRE) in _COUNTS) and v.size and v.min() < 0:
            raise DataError(f"column `{n}` of the {what} table counts events and must be >= 0, got {v.min()}")


def _arm_codes(values: np.ndarray, names: Sequence[str], what: str) -> npt.NDArray[np.int64]:
    if values.dtype.kind in "iu":
        codes = values.astype(np.int64)
        if codes.size and (codes.min() < 0 or codes.max() >= len(names)):
            raise DataError(f"integer `arm` codes of the {what} table must be in [0, {len(names)}) for arms {list(names)}")
        return codes
    uniq, inv = np.unique(values.astype(str), return_inverse=True)
    unknown = sorted(set(uniq.tolist()) - set(names))
    if unknown:
        raise DataError(f"the {what} table has arms {unknown} not in the config's arms {list(names)}")
    lookup = np.array([list(names).index(u) for u in uniq.tolist()], dtype=np.int64)
    return lookup[inv.reshape(-1)]


def _user_index(users_id: np.ndarray, ids: np.ndarray, what: str) -> npt.NDArray[np.int64]:
    order = np.argsort(users_id, kind="stable")
    pos = np.clip(np.searchsorted(users_id[order], ids), 0, max(users_id.size - 1, 0))
    found = users_id.size > 0 and users_id[order][pos] == ids
    if not np.all(found):
        bad = ids[~np.asarray(found, dtype=bool)][:3].tolist() if ids.size else []
        raise DataError(f"the {what} table has user ids not in the users table, e.g. {bad}")
    return np.asarray(order[pos], dtype=np.int64)


def _metric_moments(
    cols: Mapping[str, np.ndarray],
    metric: Metric,
    arm: np.ndarray,
    *,
    n_arms: int,
    covariate: bool,
    pre_cols: Mapping[str, np.ndarray] | None = None,
    mask: np.ndarray | None = None,
) -> Moments:
    """:func:`arm_moments` of one metric read from ``cols`` (covariates from ``pre_cols``, default ``cols``)."""
    md = METRIC_DEFS[metric]
    pre = cols if pre_cols is None else pre_cols
    return arm_moments(
        cols[md.numerator], arm, n_arms=n_arms,
        den=None if md.denominator is None else cols[md.denominator],
        pre=pre[PRE + md.numerator] if covariate else None,
        pre_den=pre[PRE + md.denominator] if covariate and md.denominator is not None else None,
        mask=mask,
    )


def _has_covariate(cols: Mapping[str, np.ndarray], metric: Metric) -> bool:
    return all(PRE + c in cols for c in METRIC_DEFS[metric].columns)


def analyze(
    users: Any,
    config: ABTestConfig,
    *,
    daily: Any | None = None,
    by_domain: Any | None = None,
    oracle: Mapping[Metric, Mapping[str, float]] | None = None,
) -> ABAnalysis:
    """Reads one experiment: SRM gate, per-metric tests (+CUPED), always-valid looks, per-domain lifts.

    Args:
        users: one row per user: ``user_id``, ``arm`` (names, or codes into ``config.arms``), the
            metric columns (``impressions``, ``clicks``, ``purchases``, ``revenue`` as needed by
            ``config.metrics``), and optionally the pre-period ``pre_<column>`` covariates.
        config: the experiment (arms, shares, metrics, alpha, correction, CUPED, SRM and mSPRT settings).
        daily: one row per user per day with activity: ``user_id``, ``day`` (sortable), the metric
            columns for that day. Cumulative daily looks feed the curves and the mSPRT; without it
            the mSPRT gets one look (the final table). A user counts from their first row on;
            users without rows are left out of the daily looks.
        by_domain: one row per user per domain: ``user_id``, ``domain``, the metric columns and
            optionally ``pre_<column>`` per domain.
        oracle: the true relative lift per metric and treatment, when a simulator knows it.

    Returns:
        The :class:`ABAnalysis`.

    Raises:
        DataError: a missing or non-numeric column, an unknown arm or user, a duplicated user,
            or an arm with fewer than 2 users.
    """
    cols = _columns(users, "users")
    names = tuple(a.name for a in config.arms)
    needed = sorted({c for m in config.metrics for c in METRIC_DEFS[m].columns})
    _require(cols, ["user_id", "arm", *needed], "users", "drop metrics without data from `metrics`")
    uid = cols["user_id"]
    if np.unique(uid).size != uid.size:
        raise DataError("the users table has duplicate `user_id`s; randomisation is by user, one row each")
    arm = _arm_codes(cols["arm"], names, "users")
    counts = np.bincount(arm, minlength=len(names))
    if counts.min() < 2:
        raise DataError(f"every arm needs at least 2 users, got {dict(zip(names, counts.tolist()))}")
    c = names.index(config.control_arm.name)
    treats = [names.index(a.name) for a in config.treatments]
    srm = srm_test(counts, [a.share for a in config.arms], alpha=config.srm_alpha)
    caveats: list[str] = []
    if bool(srm.mismatch):
        caveats.append(
            f"Sample ratio mismatch (p = {float(srm.pvalue):.2g} < {config.srm_alpha}): users per arm {counts.tolist()} "
            f"do not match the configured shares; assignment or logging is broken, so no result should be trusted."
        )

    covariate = {m: config.cuped and _has_covariate(cols, m) for m in config.metrics}
    for m in config.metrics:
        if config.cuped and not covariate[m]:
            cols_needed = [PRE + x for x in METRIC_DEFS[m].columns]
            caveats.append(f"CUPED not applied to {METRIC_DEFS[m].label}: the users table lacks {cols_needed}.")
        _require(cols, [PRE + x for x in METRIC_DEFS[m].columns] if covariate[m] else [], "users", "")

    day_data = _daily_looks(cols, arm, daily, config, covariate) if daily is not None else None
    daily_result = day_data[0] if day_data else None
    results: list[MetricResult] = []
    for m in config.metrics:
        mo = _metric_moments(cols, m, arm, n_arms=len(names), covariate=covariate[m])
        per: list[tuple[Comparison, Comparison | None]] = []
        for t in treats:
            raw = compare(mo, treatment=t, control=c, alpha=config.alpha)
            per.append((raw, compare(mo, treatment=t, control=c, alpha=config.alpha, cuped=True) if covariate[m] else None))
        p_head = np.array([float((cu or raw).pvalue) for raw, cu in per])
        p_adj = holm(p_head) if config.correction is Correction.HOLM else p_head
        seqs = [day_data[1][(m, t)] if day_data else _single_look(m, names[t], cu or raw, config)
                for t, (raw, cu) in zip(treats, per)]
        if len(treats) > 1 and config.correction is Correction.HOLM:  # Holm at every look keeps p non-increasing
            p_seq = holm(np.stack([s.pvalue for s in seqs], axis=-1))
            seqs = [dataclasses.replace(s, pvalue=p_seq[..., i]) for i, s in enumerate(seqs)]
        for i, (t, (raw, cu)) in enumerate(zip(treats, per)):
            vr = None if cu is None else float(1 - cu.se**2 / raw.se**2)
            true = None if oracle is None or m not in oracle or names[t] not in oracle[m] else float(oracle[m][names[t]])
            results.append(MetricResult(
                metric=m, treatment=names[t], control=names[c], raw=raw, cuped=cu, variance_reduction=vr,
                pvalue_adjusted=float(p_adj[i]), significant=bool(p_adj[i] < config.alpha), sequential=seqs[i],
                true_lift=true,
            ))
    if len(treats) > 1 and config.correction is Correction.HOLM:
        caveats.append(f"{len(treats)} treatments share each metric's α = {config.alpha} by Holm's correction; "
                       "the intervals shown are not adjusted.")
    domains = _domain_results(cols, arm, by_domain, config, c, treats) if by_domain is not None else []
    if domains:
        caveats.append("Per-domain lifts are exploratory: no multiple-testing correction, and a domain's users are "
                       "those active in it, which the treatment could change.")
    if int(counts.min()) < 1000:
        caveats.append(f"Small arms ({int(counts.min())} users): the normal approximations behind the tests may be rough.")
    return ABAnalysis(
        config=config, arms=names, n_users=tuple(int(x) for x in counts), srm=srm, results=tuple(results),
        daily=daily_result, domains=tuple(domains), caveats=tuple(caveats),
    )


def _single_look(metric: Metric, treatment: str, head: Comparison, config: ABTestConfig) -> SequentialResult:
    ms = msprt(head.lift[None], head.lift_se[None] ** 2, tau=config.msprt_tau, alpha=config.alpha)
    return SequentialResult(
        metric=metric, treatment=treatment, days=("final",), lift=head.lift[None], lift_lo=head.lift_lo[None],
        lift_hi=head.lift_hi[None], pvalue_naive=head.pvalue[None], pvalue=ms.pvalue, cs_lo=ms.cs_lo, cs_hi=ms.cs_hi,
        tau=config.msprt_tau, alpha=config.alpha,
    )


def _daily_looks(
    cols: Mapping[str, np.ndarray],
    arm: npt.NDArray[np.int64],
    daily: Any,
    config: ABTestConfig,
    covariate: Mapping[Metric, bool],
) -> tuple[DailyResult, dict[tuple[Metric, int], SequentialResult]]:
    dcols = _columns(daily, "daily")
    needed = sorted({x for m in config.metrics for x in METRIC_DEFS[m].columns})
    _require(dcols, ["user_id", "day", *needed], "daily", "pass one row per user and day with the metric columns")
    u = _user_index(cols["user_id"], dcols["user_id"], "daily")
    days, t = np.unique(dcols["day"], return_inverse=True)
    t = t.reshape(-1)
    U, T, K = arm.size, days.size, len(config.arms)
    first = np.full(U, T, dtype=np.int64)
    np.minimum.at(first, u, t)
    mask = (first[None, :] <= np.arange(T)[:, None]).astype(np.float64)  # (T, U): exposed by day t
    flat = u * T + t

    def cumulative(name: str) -> FloatArray:
        dense = np.bincount(flat, weights=dcols[name].astype(np.float64), minlength=U * T).reshape(U, T)
        return np.asarray(np.cumsum(dense, axis=1).T)  # (T, U)

    cum = {name: cumulative(name) for name in needed}
    names = tuple(a.name for a in config.arms)
    c = names.index(config.control_arm.name)
    values: dict[Metric, FloatArray] = {}
    seqs: dict[tuple[Metric, int], SequentialResult] = {}
    n_users = np.zeros((T, K))
    day_labels = tuple(_jsonable(d) for d in days.tolist())
    for m in config.metrics:
        mo = _metric_moments(cum, m, arm, n_arms=K, covariate=covariate[m], pre_cols=cols, mask=mask)
        values[m], n_users = mo.ratio, mo.n
        for tr in (names.index(a.name) for a in config.treatments):
            cmp = compare(mo, treatment=tr, control=c, alpha=config.alpha, cuped=covariate[m])
            ms = msprt(cmp.lift, cmp.lift_se**2, tau=config.msprt_tau, alpha=config.alpha)
            seqs[(m, tr)] = SequentialResult(
                metric=m, treatment=names[tr], days=day_labels, lift=cmp.lift, lift_lo=cmp.lift_lo, lift_hi=cmp.lift_hi,
                pvalue_naive=cmp.pvalue, pvalue=ms.pvalue, cs_lo=ms.cs_lo, cs_hi=ms.cs_hi,
                tau=config.msprt_tau, alpha=config.alpha,
            )
    return DailyResult(days=day_labels, n_users=n_users, values=values), seqs


def _domain_results(
    cols: Mapping[str, np.ndarray],
    arm: npt.NDArray[np.int64],
    by_domain: Any,
    config: ABTestConfig,
    control: int,
    treats: Sequence[int],
) -> list[DomainResult]:
    dcols = _columns(by_domain, "by_domain")
    needed = sorted({x for m in config.metrics for x in METRIC_DEFS[m].columns})
    _require(dcols, ["user_id", "domain", *needed], "by_domain", "pass one row per user and domain")
    u = _user_index(cols["user_id"], dcols["user_id"], "by_domain")
    dom_names, di = np.unique(dcols["domain"].astype(str), return_inverse=True)
    di = di.reshape(-1)
    if np.unique(u * dom_names.size + di).size != u.size:
        raise DataError("the by_domain table has more than one row for some (user_id, domain); aggregate them first")
    ordered = [d for d in config.domains if d in dom_names] + sorted(set(dom_names.tolist()) - set(config.domains))
    names = tuple(a.name for a in config.arms)
    out: list[DomainResult] = []
    for dom in ordered:
        sel = di == int(np.flatnonzero(dom_names == dom)[0])
        sub = {k: v[sel] for k, v in dcols.items()}
        a = arm[u[sel]]
        if np.bincount(a, minlength=len(names))[[control, *treats]].min() < 2:
            continue
        for m in config.metrics:
            cov = config.cuped and _has_covariate(sub, m)
            mo = _metric_moments(sub, m, a, n_arms=len(names), covariate=cov)
            for t in treats:
                cmp = compare(mo, treatment=t, control=control, alpha=config.alpha, cuped=cov)
                out.append(DomainResult(domain=dom, metric=m, treatment=names[t], comparison=cmp, cuped=cov))
    return out
