"""A/B statistics: agreement with scipy/statsmodels, calibration by seeded simulation, and the configs.

Calibration tolerances are computed from the binomial standard deviation of a rejection rate over
``R`` simulated experiments, ``3 * sqrt(a (1 - a) / R)``, so a failure is a ≥ 3σ event.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import integrate, stats
from statsmodels.stats.multitest import multipletests

from abtest.configs import ABTestConfig, ArmConfig, Correction, Metric
from abtest.stats import (
    analyze,
    arm_moments,
    compare,
    holm,
    msprt,
    ratio_of_sums,
    srm_test,
    welch_ttest,
)
from seedrec.errors import ConfigError, DataError

ALPHA = 0.05


def _tol(rate: float, runs: int) -> float:
    return 3 * math.sqrt(rate * (1 - rate) / runs)


def _simulate(rng: np.random.Generator, runs: int, users: int, *, lift: float = 0.0, share: float = 0.5) -> dict[str, Any]:
    """``runs`` experiments × ``users``: heterogeneous activity and CTR, pre-period from the same users.

    The treatment multiplies every click probability by ``1 + lift``, so the true relative lift of
    CTR, clicks/user and purchases/user is exactly ``lift``.
    """
    shape = (runs, users)
    arm = (rng.random(shape) >= 1 - share).astype(np.int64)  # 1 = treatment
    activity = rng.gamma(2.0, 1.0, shape)
    ctr = rng.beta(2, 38, shape)
    imp, pre_imp = rng.poisson(10 * activity), rng.poisson(10 * activity)
    clicks = rng.binomial(imp, ctr * (1 + lift * arm))
    pre_clicks = rng.binomial(pre_imp, ctr)
    purchases = rng.binomial(clicks, 0.1)
    return {"arm": arm, "impressions": imp, "clicks": clicks, "purchases": purchases,
            "revenue": purchases * rng.lognormal(3.0, 0.5, shape),
            "pre_impressions": pre_imp, "pre_clicks": pre_clicks, "pre_purchases": rng.binomial(pre_clicks, 0.1)}


def _config(arms: tuple[str, ...] = ("control", "lmn"), **kw: Any) -> ABTestConfig:
    share = 1 / len(arms)
    arm_cfgs = tuple(ArmConfig(name=a, model="din" if i == 0 else a, share=share) for i, a in enumerate(arms))
    return ABTestConfig(arms=arm_cfgs, **kw)


# ---- agreement with scipy / statsmodels -----------------------------------------------------------


def test_welch_matches_scipy_ttest_ind() -> None:
    rng = np.random.default_rng(0)
    control, treatment = rng.exponential(2.0, 700), rng.normal(2.3, 4.0, 450)
    ours = welch_ttest(treatment, control)
    ref = stats.ttest_ind(treatment, control, equal_var=False)
    np.testing.assert_allclose(float(ours.tstat), ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(float(ours.pvalue), ref.pvalue, rtol=1e-8)
    np.testing.assert_allclose(float(ours.df), ref.df, rtol=1e-10)
    lo, hi = ref.confidence_interval(0.95)
    np.testing.assert_allclose([float(ours.diff_lo), float(ours.diff_hi)], [lo, hi], rtol=1e-8)


def test_srm_matches_scipy_chisquare() -> None:
    counts, shares = np.array([5100, 4900, 2050]), np.array([0.4, 0.4, 0.2])
    ours = srm_test(counts, shares)
    ref = stats.chisquare(counts, counts.sum() * shares)
    np.testing.assert_allclose([float(ours.statistic), float(ours.pvalue)], [ref.statistic, ref.pvalue], rtol=1e-10)


def test_delta_method_ratio_variance_matches_bootstrap() -> None:
    rng = np.random.default_rng(1)
    sim = {k: v[0] for k, v in _simulate(rng, 1, 3000, lift=0.1).items()}
    imp, clicks, arm = sim["impressions"], sim["clicks"], sim["arm"]
    _, var = ratio_of_sums(clicks, imp)
    idx = rng.integers(0, imp.size, (2000, imp.size))  # B = 2000 resamples: rel. sd of a variance ≈ 3%
    boot = clicks[idx].sum(1) / imp[idx].sum(1)
    np.testing.assert_allclose(var, boot.var(ddof=1), rtol=0.10)
    # The relative lift's delta-method variance, resampling users within each arm.
    cmp = compare(arm_moments(clicks, arm, n_arms=2, den=imp), treatment=1)
    lifts = []
    for _ in range(2):  # 2 × 1000 resamples keeps the index arrays small
        ic, it = (rng.choice(np.flatnonzero(arm == g), (1000, int((arm == g).sum()))) for g in (0, 1))
        lifts.append((clicks[it].sum(1) / imp[it].sum(1)) / (clicks[ic].sum(1) / imp[ic].sum(1)) - 1)
    np.testing.assert_allclose(float(cmp.lift_se) ** 2, np.concatenate(lifts).var(ddof=1), rtol=0.10)


def test_cuped_equals_ols_treatment_coefficient_and_shrinks_variance() -> None:
    rng = np.random.default_rng(2)
    sim = {k: v[0] for k, v in _simulate(rng, 1, 4000, lift=0.05).items()}
    y, x, arm = sim["clicks"].astype(float), sim["pre_clicks"].astype(float), sim["arm"]
    mo = arm_moments(y, arm, n_arms=2, pre=x)
    raw, cup = compare(mo, treatment=1), compare(mo, treatment=1, cuped=True)
    fit = sm.OLS(y, np.column_stack([np.ones_like(y), arm, x - x.mean()])).fit(cov_type="HC2")
    np.testing.assert_allclose(float(cup.diff), fit.params[1], rtol=1e-9)
    np.testing.assert_allclose(float(cup.theta), fit.params[2], rtol=1e-9)
    np.testing.assert_allclose(float(cup.se), fit.bse[1], rtol=0.02)  # θ treated as known: O(1/N) apart
    rho2 = np.corrcoef(y, x)[0, 1] ** 2
    assert float(cup.se) < float(raw.se)
    np.testing.assert_allclose(1 - float(cup.se**2 / raw.se**2), rho2, atol=0.03)  # Var shrinks by (1 − ρ²)
    # Three arms: θ pooled over all arms is the slope of y ~ arm dummies + x.
    arm3 = rng.integers(0, 3, y.size)
    cup3 = compare(arm_moments(y, arm3, n_arms=3, pre=x), treatment=2, control=0, cuped=True)
    X3 = np.column_stack([np.ones_like(y), arm3 == 1, arm3 == 2, x - x.mean()]).astype(float)
    fit3 = sm.OLS(y, X3).fit()
    np.testing.assert_allclose([float(cup3.diff), float(cup3.theta)], [fit3.params[2], fit3.params[3]], rtol=1e-9)


def test_holm_matches_statsmodels() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.5, 0.002])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=1e-12)
    assert np.isnan(holm(np.array([0.01, np.nan]))[1])


def test_fieller_interval_agrees_with_the_t_test_and_solves_its_quadratic() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(1.0, 2.0, (3000, 60))
    arm = np.tile(np.arange(60) % 2, (3000, 1))
    cmp = compare(arm_moments(y + 0.3 * arm, arm, n_arms=2), treatment=1)
    bounded = np.isfinite(cmp.lift_lo)
    assert 0.5 < bounded.mean() < 1  # with so few users the control mean is sometimes not significant
    excludes_zero = (cmp.lift_lo > 0) | (cmp.lift_hi < 0)
    np.testing.assert_array_equal(excludes_zero[bounded], cmp.pvalue[bounded] < ALPHA)
    assert np.all(np.isinf(cmp.lift_hi[~bounded]))
    q = stats.t.ppf(1 - ALPHA / 2, cmp.df)
    for end in (cmp.lift_lo, cmp.lift_hi):
        rho = end[bounded] + 1
        a, b, va, vb = (z[bounded] for z in (cmp.control_mean, cmp.treatment_mean, cmp.var_control, cmp.var_treatment))
        np.testing.assert_allclose((b - rho * a) ** 2, q[bounded] ** 2 * (vb + rho**2 * va), rtol=1e-8)


def test_msprt_likelihood_ratio_matches_the_mixture_integral() -> None:
    est, var, tau = 0.03, 0.0002, 0.05
    res = msprt([est], [var], tau=tau, alpha=ALPHA)

    def integrand(theta: float) -> float:
        lr = stats.norm.pdf(est, theta, math.sqrt(var)) / stats.norm.pdf(est, 0, math.sqrt(var))
        return float(lr * stats.norm.pdf(theta, 0, tau))

    lam = integrate.quad(integrand, -1, 1, points=[0, est])[0]
    np.testing.assert_allclose(float(res.log_lr[0]), math.log(lam), rtol=1e-7)
    np.testing.assert_allclose(float(res.pvalue[0]), min(1.0, 1 / lam), rtol=1e-7)
    for edge in (float(res.cs_lo[0]), float(res.cs_hi[0])):  # Λ(θ₀) = 1/α on the sequence's edges
        s = var + tau**2
        log_lam = 0.5 * math.log(var / s) + tau**2 * (est - edge) ** 2 / (2 * var * s)
        np.testing.assert_allclose(log_lam, math.log(1 / ALPHA), rtol=1e-9)


# ---- calibration by simulation --------------------------------------------------------------------


def test_aa_rejects_at_the_nominal_rate() -> None:
    runs = 1000
    sim = _simulate(np.random.default_rng(10), runs, 2000)
    tol = _tol(ALPHA, runs)
    for kw in ({"y": sim["clicks"], "pre": sim["pre_clicks"]},
               {"y": sim["clicks"], "den": sim["impressions"], "pre": sim["pre_clicks"], "pre_den": sim["pre_impressions"]},
               {"y": sim["revenue"], "pre": sim["pre_purchases"]}):
        mo = arm_moments(arm=sim["arm"], n_arms=2, **kw)
        for cuped in (False, True):
            rate = float((compare(mo, treatment=1, cuped=cuped).pvalue < ALPHA).mean())
            assert abs(rate - ALPHA) <= tol, (sorted(kw), cuped, rate, tol)


def test_peeking_inflates_the_t_test_but_not_the_msprt() -> None:
    rng = np.random.default_rng(11)
    runs, users, days = 500, 2000, 14
    arm = (rng.random((runs, users)) < 0.5).astype(np.int64)
    activity, ctr = rng.gamma(2.0, 1.0, (runs, users)), rng.beta(2, 38, (runs, users))
    arrival = rng.integers(0, days, (runs, users))
    clicks = np.zeros((runs, users))
    naive, lift, var = (np.empty((runs, days)) for _ in range(3))
    for day in range(days):
        exposed = arrival <= day
        clicks += rng.binomial(rng.poisson(2 * activity) * exposed, ctr)
        cmp = compare(arm_moments(clicks, arm, n_arms=2, mask=exposed), treatment=1)
        naive[:, day], lift[:, day], var[:, day] = cmp.pvalue, cmp.lift, cmp.lift_se**2
    seq = msprt(lift, var, tau=0.05, alpha=ALPHA)
    naive_rate = float((naive < ALPHA).any(1).mean())
    msprt_rate = float((seq.pvalue <= ALPHA).any(1).mean())
    cs_rate = float(((seq.cs_lo > 0) | (seq.cs_hi < 0)).any(1).mean())
    assert abs(float((naive[:, -1] < ALPHA).mean()) - ALPHA) <= _tol(ALPHA, runs)  # one look is fine
    assert naive_rate > ALPHA + _tol(ALPHA, runs) + 0.05, naive_rate  # ≈ 0.23 measured
    assert msprt_rate <= ALPHA + _tol(ALPHA, runs), msprt_rate  # ≈ 0.004 measured
    assert cs_rate == msprt_rate  # the sequence excludes 0 exactly when the always-valid p crosses α
    assert np.all(np.diff(seq.pvalue, axis=1) <= 0) and np.all(np.diff(seq.cs_hi - seq.cs_lo, axis=1) <= 1e-12)


def test_srm_fires_on_skewed_traffic_only() -> None:
    rng = np.random.default_rng(12)
    skewed = (rng.random(20_000) < 0.52).sum()
    assert float(srm_test([skewed, 20_000 - skewed], [0.5, 0.5]).pvalue) < 0.001
    runs = 20_000
    fair = rng.binomial(20_000, 0.5, runs)
    res = srm_test(np.stack([fair, 20_000 - fair], -1), [0.5, 0.5])
    assert abs(float((res.pvalue < ALPHA).mean()) - ALPHA) <= _tol(ALPHA, runs)
    assert float(res.mismatch.mean()) <= 0.001 + _tol(0.001, runs)


def test_planted_lift_is_detected_and_covered_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(13)
    one = {k: v[0] for k, v in _simulate(rng, 1, 20_000, lift=0.10).items()}  # z ≈ 6 with CUPED
    cmp = compare(arm_moments(one["clicks"], one["arm"], n_arms=2, pre=one["pre_clicks"]), treatment=1, cuped=True)
    assert float(cmp.pvalue) < 1e-4 and 0 < float(cmp.lift_lo) < 0.10 < float(cmp.lift_hi)
    runs = 1000
    sim = _simulate(rng, runs, 2000, lift=0.05)
    tol = _tol(1 - ALPHA, runs)
    for kw in ({"y": sim["clicks"], "pre": sim["pre_clicks"]},
               {"y": sim["clicks"], "den": sim["impressions"], "pre": sim["pre_clicks"], "pre_den": sim["pre_impressions"]}):
        mo = arm_moments(arm=sim["arm"], n_arms=2, **kw)
        for cuped in (False, True):
            cmp = compare(mo, treatment=1, cuped=cuped)
            for lo, hi in ((cmp.lift_lo, cmp.lift_hi), (cmp.lift_delta_lo, cmp.lift_delta_hi)):
                coverage = float(((lo <= 0.05) & (0.05 <= hi)).mean())
                assert abs(coverage - (1 - ALPHA)) <= tol, (sorted(kw), cuped, coverage)
            assert float(np.median(cmp.lift)) > 0


# ---- analyze(): one experiment's tables -----------------------------------------------------------


def _tables(seed: int = 20, users: int = 3000, arms: int = 2, lift: float = 0.05) -> tuple[pd.DataFrame, ...]:
    rng = np.random.default_rng(seed)
    sim = {k: v[0] for k, v in _simulate(rng, 1, users, lift=lift).items()}
    sim["arm"] = rng.integers(0, arms, users) if arms > 2 else sim["arm"]
    users_df = pd.DataFrame({"user_id": np.arange(users) * 7 + 3, **sim})
    day = rng.integers(0, 5, users)  # all of a user's activity on one day: daily sums = the users table
    daily = users_df[["user_id", "impressions", "clicks", "purchases", "revenue"]].assign(day=day)
    dom = rng.integers(0, 2, users)
    by_domain = users_df.drop(columns="arm").assign(domain=np.array(["feed", "search"])[dom])
    return users_df, daily, by_domain


def test_analyze_agrees_with_the_low_level_functions() -> None:
    users, daily, by_domain = _tables()
    cfg = _config()
    res = analyze(users, cfg, daily=daily, by_domain=by_domain, oracle={Metric.CTR: {"lmn": 0.05}})
    assert res.arms == ("control", "lmn") and sum(res.n_users) == len(users) and not bool(res.srm.mismatch)
    r = res.result(Metric.CLICKS_PER_USER, "lmn")
    ref = stats.ttest_ind(users.clicks[users.arm == 1], users.clicks[users.arm == 0], equal_var=False)
    np.testing.assert_allclose(float(r.raw.pvalue), ref.pvalue, rtol=1e-8)
    assert r.cuped is not None and r.variance_reduction is not None and r.variance_reduction > 0.1
    assert r.headline is r.cuped and r.significant == (r.pvalue_adjusted < ALPHA)
    assert res.result(Metric.CTR, "lmn").true_lift == 0.05
    # Every user acts on exactly one day, so the last cumulative look is the whole table.
    assert res.daily is not None and len(res.daily.days) == 5
    np.testing.assert_allclose(r.sequential.lift[-1], float(r.headline.lift), rtol=1e-10)
    assert np.all(np.diff(res.daily.n_users.sum(1)) >= 0) and res.daily.n_users[-1].sum() == len(users)
    assert {d.domain for d in res.domains} == {"feed", "search"} and len(res.domains) == 2 * len(cfg.metrics)
    out = res.to_dict()
    assert out["results"][0]["metric"] == "ctr" and out["srm"]["mismatch"] is False
    assert out["config"]["arms"][1]["name"] == "lmn"


def test_analyze_three_arms_applies_holm_and_flags_srm() -> None:
    users, _, _ = _tables(arms=3)
    cfg = _config(("control", "ads", "lmn"), metrics=(Metric.CLICKS_PER_USER, Metric.CTR))
    res = analyze(users, cfg)
    for m in cfg.metrics:
        raw = [float(res.result(m, t).headline.pvalue) for t in ("ads", "lmn")]
        np.testing.assert_allclose([res.result(m, t).pvalue_adjusted for t in ("ads", "lmn")], holm(raw))
        assert res.result(m, "lmn").sequential.days == ("final",)
    none = analyze(users, replace(cfg, correction=Correction.NONE))
    assert none.result(Metric.CTR, "ads").pvalue_adjusted == float(none.result(Metric.CTR, "ads").headline.pvalue)
    skewed = pd.concat([users, users[users.arm == 2].assign(user_id=lambda d: d.user_id + 1)])
    assert bool(analyze(skewed, cfg).srm.mismatch) and "Sample ratio mismatch" in analyze(skewed, cfg).caveats[0]


def test_analyze_without_pre_period_skips_cuped_with_a_caveat() -> None:
    users, _, _ = _tables()
    res = analyze(users.drop(columns=["pre_clicks"]), _config(metrics=(Metric.CLICKS_PER_USER,)))
    r = res.result(Metric.CLICKS_PER_USER, "lmn")
    assert r.cuped is None and r.variance_reduction is None and any("CUPED not applied" in c for c in res.caveats)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda u: u.drop(columns="clicks"), "lacks columns \\['clicks'\\]"),
        (lambda u: u.assign(arm=np.where(u.arm == 1, "lmn", "ctrl")), "arms \\['ctrl'\\] not in"),
        (lambda u: u.assign(user_id=0), "duplicate `user_id`"),
        (lambda u: u.assign(arm=np.r_[1, np.zeros(len(u) - 1, int)]), "at least 2 users"),
        (lambda u: u.assign(impressions=-u.impressions), "must be >= 0"),
        (lambda u: u.assign(revenue=np.nan), "finite numbers"),
    ],
)
def test_analyze_rejects_bad_tables(mutate: Any, match: str) -> None:
    users, _, _ = _tables(users=200)
    with pytest.raises(DataError, match=match):
        analyze(mutate(users), _config())


def test_analyze_rejects_daily_rows_of_unknown_users() -> None:
    users, daily, _ = _tables(users=200)
    with pytest.raises(DataError, match="not in the users table"):
        analyze(users, _config(), daily=daily.assign(user_id=daily.user_id + 1))


# ---- configs --------------------------------------------------------------------------------------


def test_config_defaults_and_from_dict() -> None:
    cfg = ABTestConfig.from_dict({
        "name": "lmn-vs-din", "control": "din",
        "arms": [{"name": "lmn", "model": "lmn", "version": 3, "share": 0.5}, {"name": "din", "model": "din", "share": 0.5}],
        "metrics": ["ctr", "revenue_per_user"], "correction": "none", "domains": ["feed"],
    })
    assert cfg.control_arm.name == "din" and [a.name for a in cfg.treatments] == ["lmn"]
    assert cfg.arms[0].version == "3" and cfg.primary_metric is Metric.CTR and cfg.correction is Correction.NONE
    with pytest.raises(ConfigError, match="unknown A/B test config keys \\['alhpa'\\]"):
        ABTestConfig.from_dict({"arms": [], "alhpa": 0.1})
    with pytest.raises(ConfigError, match="`metrics` must be one of"):
        ABTestConfig.from_dict({"arms": [], "metrics": ["ctrr"]})


_ARMS = (ArmConfig(name="a", model="din", share=0.5), ArmConfig(name="b", model="lmn", share=0.5))


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"arms": _ARMS[:1]}, "arms"),
        ({"arms": (_ARMS[0], replace(_ARMS[1], name="a"))}, "arms"),
        ({"arms": (_ARMS[0], replace(_ARMS[1], share=0.6))}, "arms"),
        ({"control": "c"}, "control"),
        ({"name": "bad name"}, "name"),
        ({"salt": ""}, "salt"),
        ({"seed": -1}, "seed"),
        ({"users": 3}, "users"),
        ({"days": 0}, "days"),
        ({"pre_days": -1}, "pre_days"),
        ({"pre_days": 0}, "cuped"),
        ({"domains": ("feed", "moon")}, "domains"),
        ({"requests_per_user_day": 0}, "requests_per_user_day"),
        ({"slate_size": 0}, "slate_size"),
        ({"candidates": 5}, "candidates"),
        ({"server": "localhost"}, "server"),
        ({"server": "localhost:70000"}, "server"),
        ({"deadline_s": 0}, "deadline_s"),
        ({"concurrency": 0}, "concurrency"),
        ({"metrics": ()}, "metrics"),
        ({"metrics": ("ctr",)}, "metrics"),
        ({"metrics": (Metric.CTR,)}, "primary_metric"),
        ({"alpha": 0.7}, "alpha"),
        ({"correction": "holm"}, "correction"),
        ({"cuped": 1}, "cuped"),
        ({"srm_alpha": 0}, "srm_alpha"),
        ({"msprt_tau": -0.1}, "msprt_tau"),
        ({"world_dir": None}, "world_dir"),
    ],
)
def test_config_errors_name_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"`{field}`"):
        ABTestConfig(**{"arms": _ARMS, **kw})


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"name": ""}, "name"), ({"model": "a b"}, "model"), ({"version": "v/1"}, "version"), ({"share": 0}, "share"),
     ({"share": 1.5}, "share")],
)
def test_arm_config_errors_name_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"`{field}`"):
        ArmConfig(**{"name": "a", "model": "din", "share": 0.5, **kw})
