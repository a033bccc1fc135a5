"""The A/B report: verdict wording, markdown sections, JSON numbers and PNG plots."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from abtest import report
from abtest.configs import ABTestConfig, ArmConfig, Metric
from abtest.stats import ABAnalysis, analyze

PNG = b"\x89PNG\r\n\x1a\n"
METRICS = (Metric.CTR, Metric.CLICKS_PER_USER)


def _experiment(*, lift: float, users: int = 4000, days: int = 5, seed: int = 0) -> dict[str, Any]:
    """A small two-arm, two-domain experiment with a pre-period; the treatment scales clicks by 1 + lift."""
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 2, users)
    activity, ctr = rng.gamma(2.0, 1.0, users), rng.beta(2, 38, users)
    imp = rng.poisson(3 * activity[:, None, None], (users, days, 2))  # (U, T, domains)
    clicks = rng.binomial(imp, np.minimum(1, ctr * (1 + lift * arm))[:, None, None])
    pre_imp = rng.poisson(15 * activity)
    totals = {"impressions": imp.sum((1, 2)), "clicks": clicks.sum((1, 2))}
    users_df = pd.DataFrame({"user_id": np.arange(users), "arm": np.array(["control", "lmn"])[arm], **totals,
                             "pre_impressions": pre_imp, "pre_clicks": rng.binomial(pre_imp, ctr)})
    u, t = np.nonzero(imp.sum(2) > 0)
    daily = pd.DataFrame({"user_id": u, "day": t + 1, "impressions": imp.sum(2)[u, t], "clicks": clicks.sum(2)[u, t]})
    ud, dd = np.nonzero(imp.sum(1) > 0)
    by_domain = pd.DataFrame({"user_id": ud, "domain": np.array(["feed", "search"])[dd],
                              "impressions": imp.sum(1)[ud, dd], "clicks": clicks.sum(1)[ud, dd]})
    return {"users": users_df, "daily": daily, "by_domain": by_domain}


def _config(**kw: Any) -> ABTestConfig:
    arms = (ArmConfig(name="control", model="din", version="7", share=0.5),
            ArmConfig(name="lmn", model="lmn", version="3", share=0.5))
    return ABTestConfig(name="lmn-vs-din", arms=arms, metrics=METRICS, primary_metric=Metric.CLICKS_PER_USER, days=5, **kw)


@pytest.fixture(scope="module")
def lifted() -> ABAnalysis:
    exp = _experiment(lift=0.15)
    oracle = {m: {"lmn": 0.15} for m in METRICS}
    return analyze(exp["users"], _config(), daily=exp["daily"], by_domain=exp["by_domain"], oracle=oracle)


def test_write_report_writes_markdown_json_and_plots(lifted: ABAnalysis, tmp_path: Path) -> None:
    files = report.write_report(lifted, tmp_path / "out")
    assert [p.name for p in files.plots] == ["lift_forest.png", "daily.png", "domains.png"]
    for p in files.plots:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 10_000
    md = files.markdown.read_text(encoding="utf-8")
    for section in ("## Verdict", "## All metrics", "## Trust checks", "## Sequential test", "## Per-domain lifts",
                    "## Plots", "## Method", "## Caveats"):
        assert section in md
    for p in files.plots:
        assert f"]({p.name})" in md
    headline = re.search(r"\*\*(lmn lifts clicks/user by \+\d+\.\d% \(95% CI \+\d+\.\d% … \+\d+\.\d%\), significant "
                         r"\(p [<=] [\d.]+\))\.\*\*", md)
    assert headline is not None, md[:800]
    assert headline.group(1) == report.verdict(lifted.result(Metric.CLICKS_PER_USER, "lmn"), lifted)
    assert "Sample ratio: OK" in md and "| lmn | `lmn` v3 | 50.0% |" in md and "True lift" in md
    data = json.loads(files.json.read_text(encoding="utf-8"))
    res = lifted.result(Metric.CLICKS_PER_USER, "lmn")
    row = next(r for r in data["results"] if r["metric"] == "clicks_per_user")
    assert row["cuped"]["lift"] == pytest.approx(float(res.headline.lift)) and row["headline"] == "cuped"
    assert row["sequential"]["pvalue"][-1] == pytest.approx(float(res.sequential.pvalue[-1]))
    assert data["srm"]["mismatch"] is False and data["plots"] == [p.name for p in files.plots]
    assert len(data["daily"]["days"]) == 5 and data["verdicts"][1] == headline.group(1)


def test_verdict_words_follow_sign_significance_and_srm(lifted: ABAnalysis) -> None:
    res = lifted.result(Metric.CTR, "lmn")
    assert report.verdict(res, lifted).startswith("lmn lifts CTR by +")
    down = replace(res, cuped=replace(res.headline, lift=np.asarray(-0.031), lift_lo=np.asarray(-0.05),
                                      lift_hi=np.asarray(-0.012)))
    assert report.verdict(down, lifted).startswith("lmn lowers CTR by −3.1% (95% CI −5.0% … −1.2%), significant")
    flat = replace(res, significant=False, pvalue_adjusted=0.4)
    assert ", not significant (p = 0.400)" in report.verdict(flat, lifted) and " changes CTR " in report.verdict(flat, lifted)
    srm = replace(lifted, srm=replace(lifted.srm, pvalue=np.asarray(1e-9)))
    assert report.verdict(res, srm).startswith("UNRELIABLE (sample ratio mismatch): ")
    assert "**Do not use these results.**" in report.render_markdown(srm)


def test_sequential_status_distinguishes_early_stop_horizon_and_peeking(lifted: ABAnalysis) -> None:
    res = lifted.result(Metric.CLICKS_PER_USER, "lmn")
    assert res.sequential.first_significant_day is not None
    assert "safe to stop" in report._sequential_status(res, planned_days=5)
    never = replace(res, sequential=replace(res.sequential, pvalue=np.full(5, 0.5)))
    assert "not conclusive after 5 of 14 planned days" in report._sequential_status(never, planned_days=14)
    assert "ran its planned 5 days" in report._sequential_status(never, planned_days=5)
    assert "not usable" in report._sequential_status(res, planned_days=5, srm=True)


def test_report_without_daily_or_domains_or_plots(tmp_path: Path) -> None:
    exp = _experiment(lift=0.0, users=600, seed=1)
    res = analyze(exp["users"].drop(columns=["pre_clicks", "pre_impressions"]), _config(cuped=True))
    assert report.plot_daily(res, tmp_path / "d.png") is None and report.plot_domains(res, tmp_path / "x.png") is None
    files = report.write_report(res, tmp_path, plots=False)
    md = files.markdown.read_text(encoding="utf-8")
    assert files.plots == () and "## Plots" not in md and "## Per-domain lifts" not in md
    assert "not applied" in md and "CUPED not applied to CTR" in md and "Small arms" in md
    assert json.loads(files.json.read_text())["results"][0]["sequential"]["days"] == ["final"]


def test_forest_plot_renders_an_srm_warning(lifted: ABAnalysis, tmp_path: Path) -> None:
    srm = replace(lifted, srm=replace(lifted.srm, pvalue=np.asarray(1e-9)))
    assert report.plot_forest(srm, tmp_path / "f.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    ("x", "decimals", "text"),
    [(0.031, 1, "+3.1%"), (-0.0042, 2, "−0.42%"), (0.0, 1, "+0.0%"), (float("inf"), 1, "+∞"), (float("-inf"), 1, "−∞"),
     (float("nan"), 1, "n/a"), (None, 1, "n/a")],
)
def test_percent_format(x: float | None, decimals: int, text: str) -> None:
    assert report._pct(x, decimals) == text


def test_value_and_p_formats() -> None:
    assert report._value(Metric.CTR, 0.05254, 0.05254) == "5.254%"
    assert report._value(Metric.CLICKS_PER_USER, 9.19, 8.991) == "9.190"
    assert report._value(Metric.REVENUE_PER_USER, 17.544, 17.21) == "17.54"
    assert report._p_eq(3e-6) == "p < 0.0001" and report._p_eq(0.0031) == "p = 0.0031" and report._p_eq(0.5) == "p = 0.500"
