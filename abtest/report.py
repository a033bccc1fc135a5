"""The A/B test report: ``report.md`` for a product manager, ``report.json`` with every number, PNG plots.

Everything here is presentation: the numbers come from an :class:`~abtest.stats.ABAnalysis`, and
the verdicts are read off it (the headline comparison, its corrected p-value, the SRM gate, the
always-valid test). Plots use matplotlib's Agg backend, so no display is needed.

Files written by :func:`write_report` into ``out``::

    report.md        verdicts, trust checks, tables, plots, method, caveats
    report.json      ABAnalysis.to_dict() + the verdict sentences
    lift_forest.png  relative lift and CI per metric × treatment
    daily.png        cumulative metric per arm by day; lift with fixed-horizon CI and always-valid CS
    domains.png      relative lift and CI per domain (when per-domain data was analysed)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from abtest.configs import Correction, Metric
from abtest.stats import METRIC_DEFS, ABAnalysis, Comparison, MetricResult

__all__ = ["ReportFiles", "write_report", "render_markdown", "verdict", "plot_forest", "plot_daily", "plot_domains"]

logger = logging.getLogger(__name__)

_GREEN, _RED, _GREY = "#1a9850", "#d73027", "#7f7f7f"
_ARM_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")


@dataclass(frozen=True, kw_only=True)
class ReportFiles:
    """The paths :func:`write_report` wrote."""

    markdown: Path
    json: Path
    plots: tuple[Path, ...]


# ---- formatting ----------------------------------------------------------------------------------


def _minus(text: str) -> str:
    return text.replace("-", "−")


def _pct(x: float | None, decimals: int = 1) -> str:
    """``0.031`` → ``+3.1%``; None/NaN → ``n/a``; ±inf → ``±∞`` (an unbounded Fieller interval)."""
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "+∞" if x > 0 else "−∞"
    return _minus(f"{x * 100:+.{decimals}f}%")


def _decimals(*xs: float) -> int:
    finite = [abs(x) for x in xs if math.isfinite(x)]
    return 2 if finite and max(finite) < 0.01 else 1


def _p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.2g}" if p < 0.01 else f"{p:.3f}"


def _p_eq(p: float | None) -> str:
    """``p = 0.003`` or ``p < 0.0001``."""
    text = _p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _value(metric: Metric, v: float, ref: float) -> str:
    """A metric value with 4 significant digits of ``ref`` (the control's value), so a row lines up."""
    if not math.isfinite(v):
        return "n/a"
    pct = METRIC_DEFS[metric].denominator is not None
    scale = 100.0 if pct else 1.0
    mag = abs(ref * scale) if math.isfinite(ref) and ref != 0 else 1.0
    decimals = min(6, max(0, 3 - math.floor(math.log10(mag))))
    return f"{v * scale:,.{decimals}f}" + ("%" if pct else "")


def _ci(c: Comparison) -> tuple[float, float, float, int]:
    lift, lo, hi = float(c.lift), float(c.lift_lo), float(c.lift_hi)
    return lift, lo, hi, _decimals(lift, lo, hi)


def _day_label(day: Any) -> str:
    return f"day {day}" if isinstance(day, int | np.integer) else str(day)


def verdict(result: MetricResult, analysis: ABAnalysis) -> str:
    """The one-sentence verdict on one metric × treatment, e.g.

    ``lmn lifts clicks/user by +3.1% (95% CI +1.2% … +5.0%), significant (p = 0.0021)``.
    """
    lift, lo, hi, d = _ci(result.headline)
    label = METRIC_DEFS[result.metric].label
    conf = f"{100 * (1 - analysis.config.alpha):.0f}%"
    if not math.isfinite(lift):
        return f"{result.treatment} vs {result.control} on {label}: no estimate (the control mean is 0 or undefined)"
    verb = "changes" if not result.significant else "lifts" if lift > 0 else "lowers"
    corrected = (analysis.config.correction is Correction.HOLM and len(analysis.arms) > 2)
    p_txt = f"{_p_eq(result.pvalue_adjusted)}{', Holm-adjusted' if corrected else ''}"
    text = (f"{result.treatment} {verb} {label} by {_pct(lift, d)} ({conf} CI {_pct(lo, d)} … {_pct(hi, d)}), "
            f"{'significant' if result.significant else 'not significant'} ({p_txt})")
    if bool(analysis.srm.mismatch):
        text = "UNRELIABLE (sample ratio mismatch): " + text
    return text


def _sequential_status(result: MetricResult, planned_days: int, *, srm: bool = False) -> str:
    seq = result.sequential
    if srm:
        return "not usable either: the sample ratio mismatch biases every comparison, sequential or not"
    day = seq.first_significant_day
    p = float(seq.pvalue[-1])
    if day is not None:
        since = "" if len(seq.days) == 1 else f" since {_day_label(day)}"
        return f"always-valid test significant{since} ({_p_eq(p)}): safe to stop and act on it"
    if len(seq.days) == 1 or len(seq.days) >= planned_days:
        return (f"always-valid test not significant ({_p_eq(p)}); the test ran its planned {planned_days} days, "
                "so the fixed-horizon verdict above is the one to use")
    return (f"always-valid test not conclusive after {len(seq.days)} of {planned_days} planned days ({_p_eq(p)}): "
            "keep running; acting on the fixed-horizon p-value of a test that is looked at daily inflates false positives")


# ---- markdown ------------------------------------------------------------------------------------


def render_markdown(analysis: ABAnalysis, *, plots: Sequence[str] = ()) -> str:
    """The ``report.md`` text.

    Args:
        analysis: the analysed experiment.
        plots: file names of plots to embed (relative to the report).
    """
    cfg = analysis.config
    conf = f"{100 * (1 - cfg.alpha):.0f}%"
    control = cfg.control_arm.name
    lines: list[str] = [f"# A/B test report: {cfg.name}", ""]
    arms_txt = ", ".join(f"**{a.name}** = model `{a.model}`{' v' + a.version if a.version else ''} ({a.share:.0%})"
                         for a in cfg.arms)
    n_days = len(analysis.daily.days) if analysis.daily is not None else cfg.days
    lines += [f"{sum(analysis.n_users):,} users randomised by user over {n_days} days; arms: {arms_txt}; "
              f"control: **{control}**; α = {cfg.alpha}.", ""]

    primary = [r for r in analysis.results if r.metric is cfg.primary_metric]
    lines += ["## Verdict", ""]
    if bool(analysis.srm.mismatch):
        lines += [f"> **Do not use these results.** The sample-ratio-mismatch check failed ({_p_eq(float(analysis.srm.pvalue))}): "
                  "users did not reach the arms in the configured proportions, so the arms are not comparable. "
                  "Fix assignment or logging and rerun.", ""]
    for r in primary:
        lines.append(f"- **{verdict(r, analysis)}.**")
        lines.append(f"  - Sequential: {_sequential_status(r, cfg.days, srm=bool(analysis.srm.mismatch))}.")
    lines += ["", "## All metrics", ""]
    lines += [f"- {verdict(r, analysis)}." for r in analysis.results]
    lines += ["", _results_table(analysis, conf), ""]

    lines += ["## Trust checks", ""]
    srm = analysis.srm
    status = "**MISMATCH**" if bool(srm.mismatch) else "OK"
    lines += [f"Sample ratio: {status} (χ² = {float(srm.statistic):.2f}, {_p_eq(float(srm.pvalue))}; "
              f"the gate fires below p = {cfg.srm_alpha}).", "",
              "| Arm | Model | Configured share | Users | Observed share |", "|---|---|---:|---:|---:|"]
    total = max(sum(analysis.n_users), 1)
    for a, n in zip(cfg.arms, analysis.n_users):
        lines.append(f"| {a.name} | `{a.model}`{' v' + a.version if a.version else ''} | {a.share:.1%} | {n:,} | {n / total:.2%} |")
    lines.append("")

    lines += ["## Sequential test (safe to peek)", "",
              f"The mSPRT (mixture τ = {cfg.msprt_tau:.0%} relative lift) gives p-values and {conf} intervals that stay "
              "valid however often the results are looked at. The fixed-horizon p-value is valid only at a "
              "pre-planned end.", "",
              f"| Metric | Arm | Fixed-horizon p (last look) | Always-valid p | Always-valid {conf} CI | First significant look |",
              "|---|---|---:|---:|---|---|"]
    for r in analysis.results:
        s = r.sequential
        lo, hi = float(s.cs_lo[-1]), float(s.cs_hi[-1])
        d = _decimals(lo, hi)
        first = s.first_significant_day
        lines.append(f"| {METRIC_DEFS[r.metric].label} | {r.treatment} | {_p(float(s.pvalue_naive[-1]))} | "
                     f"{_p(float(s.pvalue[-1]))} | {_pct(lo, d)} … {_pct(hi, d)} | "
                     f"{'—' if first is None else _day_label(first)} |")
    lines.append("")

    if analysis.domains:
        lines += ["## Per-domain lifts", "", "Exploratory: not corrected for the number of domains.", "",
                  f"| Domain | Metric | Arm | Lift | {conf} CI | p | Users ({control} / arm) |", "|---|---|---|---:|---|---:|---:|"]
        for dr in analysis.domains:
            lift, lo, hi, d = _ci(dr.comparison)
            lines.append(f"| {dr.domain} | {METRIC_DEFS[dr.metric].label} | {dr.treatment} | {_pct(lift, d)} | "
                         f"{_pct(lo, d)} … {_pct(hi, d)} | {_p(float(dr.comparison.pvalue))} | "
                         f"{int(dr.comparison.n_control):,} / {int(dr.comparison.n_treatment):,} |")
        lines.append("")

    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem.replace('_', ' ')}]({p})" for p in plots] + [""]

    lines += ["## Method", "",
              "- Users are randomised to arms; every metric is computed per arm over its users. CTR and "
              "purchases/click are ratios of sums (variance by the delta method); the others are means per user.",
              "- Arms are compared by Welch's t-test. The lift is relative to the control; its interval is "
              "Fieller's (it excludes 0 exactly when the t-test is significant); the delta-method interval is in "
              "`report.json`.",
              "- CUPED: each user's metric is adjusted by the same metric in the pre-period "
              f"({cfg.pre_days} days), with one coefficient θ pooled over arms; "
              "the variance reduction is 1 − Var(adjusted)/Var(raw) of the difference.",
              "- Sample ratio mismatch: a chi-square test of users per arm against the configured shares.",
              "- Sequential: mSPRT with a normal mixture (Johari et al., KDD 2017), one look per day on cumulative data.",
              f"- {'Holm' if cfg.correction is Correction.HOLM else 'No'} correction across treatment arms of each metric.",
              ""]
    caveats = list(analysis.caveats) + [
        "The users are simulated: effects measure how the simulated world responds to each model, "
        "not how real users would.",
        "Intervals and p-values rely on large-sample normal approximations (delta method, plug-in mSPRT variance).",
    ]
    lines += ["## Caveats", ""] + [f"- {c}" for c in caveats] + [""]
    return "\n".join(lines)


def _results_table(analysis: ABAnalysis, conf: str) -> str:
    has_truth = any(r.true_lift is not None for r in analysis.results)
    head = (f"| Metric | Arm | {analysis.config.control_arm.name} | Arm value | Lift | {conf} CI | p | Significant | "
            "CUPED variance reduction | Always-valid p |" + (" True lift |" if has_truth else ""))
    rows = [head, "|---|---|---:|---:|---:|---|---:|---|---:|---:|" + ("---:|" if has_truth else "")]
    for r in analysis.results:
        h = r.headline
        lift, lo, hi, d = _ci(h)
        vr = "not applied" if r.variance_reduction is None else f"{r.variance_reduction:.0%}"
        ref = float(r.raw.control_mean)
        row = (f"| {METRIC_DEFS[r.metric].label} | {r.treatment} | {_value(r.metric, ref, ref)} | "
               f"{_value(r.metric, float(r.raw.treatment_mean), ref)} | {_pct(lift, d)} | {_pct(lo, d)} … {_pct(hi, d)} | "
               f"{_p(r.pvalue_adjusted)} | {'yes' if r.significant else 'no'} | {vr} | {_p(float(r.sequential.pvalue[-1]))} |")
        if has_truth:
            row += f" {_pct(r.true_lift, d)} |"
        rows.append(row)
    return "\n".join(rows)


# ---- plots ---------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def _color(lift: float, lo: float, hi: float) -> str:
    return _GREEN if lo > 0 else _RED if hi < 0 else _GREY


def plot_forest(analysis: ABAnalysis, path: str | Path) -> Path:
    """Relative lift with its CI for every metric × treatment (a forest plot)."""
    plt = _pyplot()
    rows = list(analysis.results)
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.6))
    ys = np.arange(len(rows))[::-1]
    for y, r in zip(ys, rows):
        lift, lo, hi, d = _ci(r.headline)
        col = _color(lift, lo, hi) if r.significant or not math.isfinite(lo) else _GREY
        if math.isfinite(lo) and math.isfinite(hi):
            ax.plot([lo * 100, hi * 100], [y, y], color=col, lw=2.5, solid_capstyle="round")
        ax.plot([lift * 100], [y], "o", color=col, ms=8, zorder=3)
        if r.true_lift is not None:
            ax.plot([r.true_lift * 100], [y], "x", color="black", ms=8, mew=2, zorder=4)
        ax.annotate(f"{_pct(lift, d)}  [{_pct(lo, d)} … {_pct(hi, d)}]", xy=(1.01, y), xycoords=("axes fraction", "data"),
                    va="center", fontsize=9, color=col)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(ys, [f"{METRIC_DEFS[r.metric].label} · {r.treatment}" for r in rows])
    truth = "   (× = true lift of the simulator)" if any(r.true_lift is not None for r in rows) else ""
    ax.set_xlabel(f"relative lift vs {analysis.config.control_arm.name} (%){truth}")
    ax.set_title(f"{analysis.config.name}: lift with {100 * (1 - analysis.config.alpha):.0f}% CI "
                 "(CUPED where applied; green/red = significant)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if bool(analysis.srm.mismatch):
        ax.text(0.5, 0.5, "SAMPLE RATIO MISMATCH", transform=ax.transAxes, ha="center", va="center",
                fontsize=22, color=_RED, alpha=0.35, rotation=15)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_daily(analysis: ABAnalysis, path: str | Path) -> Path | None:
    """Per metric: the cumulative metric per arm by day, and the lift with its fixed-horizon CI
    (light) and always-valid confidence sequence (dark) by day. None without daily data."""
    if analysis.daily is None:
        return None
    plt = _pyplot()
    daily, cfg = analysis.daily, analysis.config
    metrics = list(cfg.metrics)
    x = np.arange(len(daily.days))
    fig, axes = plt.subplots(len(metrics), 2, figsize=(12, 2.9 * len(metrics)), squeeze=False)
    ticks = [str(d) for d in daily.days]
    step = max(1, len(ticks) // 10)
    for i, m in enumerate(metrics):
        left, right = axes[i]
        scale = 100.0 if METRIC_DEFS[m].denominator is not None else 1.0
        for k, arm in enumerate(analysis.arms):
            left.plot(x, daily.values[m][:, k] * scale, "o-", ms=3, color=_ARM_COLORS[k % len(_ARM_COLORS)], label=arm)
        left.set_ylabel(METRIC_DEFS[m].label + (" (%)" if scale == 100 else ""))
        left.set_title(f"{METRIC_DEFS[m].label}: cumulative per arm", fontsize=10)
        bounds: list[float] = []
        for r in (r for r in analysis.results if r.metric is m):
            s = r.sequential
            k = analysis.arms.index(r.treatment)
            col = _ARM_COLORS[k % len(_ARM_COLORS)]
            right.fill_between(x, s.lift_lo * 100, s.lift_hi * 100, color=col, alpha=0.18, lw=0)
            right.plot(x, s.cs_lo * 100, "--", color=col, lw=1.3)
            right.plot(x, s.cs_hi * 100, "--", color=col, lw=1.3)
            right.plot(x, s.lift * 100, "o-", ms=3, color=col, label=r.treatment)
            first = s.first_significant_day
            if first is not None and len(s.days) > 1:
                right.axvline(s.days.index(first), color=col, ls=":", lw=1.2)
            tail = slice(len(x) // 3, None)
            bounds += [*(s.lift_lo[tail] * 100), *(s.lift_hi[tail] * 100), float(s.cs_lo[-1]) * 100, float(s.cs_hi[-1]) * 100]
        right.axhline(0, color="black", lw=1)
        finite = [b for b in bounds if math.isfinite(b)]
        if finite:
            lo, hi = min(finite + [0.0]), max(finite + [0.0])
            pad = 0.25 * (hi - lo or 1.0)
            right.set_ylim(lo - pad, hi + pad)
        right.set_ylabel("lift (%)")
        right.set_title(f"{METRIC_DEFS[m].label}: lift vs {cfg.control_arm.name} by day (dotted: first always-valid win)",
                        fontsize=10)
        for ax in (left, right):
            ax.set_xticks(x[::step], ticks[::step], rotation=30 if len(ticks[0]) > 3 else 0, fontsize=8)
            ax.grid(alpha=0.3)
    axes[-1][0].set_xlabel("day (cumulative)")
    axes[-1][1].set_xlabel("day (cumulative)")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color=_ARM_COLORS[k % len(_ARM_COLORS)], marker="o", ms=4, label=a)
               for k, a in enumerate(analysis.arms)]
    handles += [Patch(color=_GREY, alpha=0.3, label="fixed-horizon CI (invalid if peeked at)"),
                Line2D([], [], color=_GREY, ls="--", label="always-valid CI (mSPRT)")]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return _save(fig, path, plt)


def plot_domains(analysis: ABAnalysis, path: str | Path) -> Path | None:
    """Relative lift with its CI per domain, one panel per metric. None without per-domain results."""
    if not analysis.domains:
        return None
    plt = _pyplot()
    metrics = [m for m in analysis.config.metrics if any(d.metric is m for d in analysis.domains)]
    domains = list(dict.fromkeys(d.domain for d in analysis.domains))
    treatments = list(dict.fromkeys(d.treatment for d in analysis.domains))
    ncols = min(2, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 0.6 * len(domains) * len(treatments) + 1.8 * nrows),
                             squeeze=False)
    offsets = np.linspace(0.2, -0.2, len(treatments)) if len(treatments) > 1 else np.zeros(1)  # first on top
    for ax, m in zip(axes.flat, metrics):
        for j, t in enumerate(treatments):
            k = analysis.arms.index(t)
            for i, dom in enumerate(domains):
                hit = [d for d in analysis.domains if d.metric is m and d.treatment == t and d.domain == dom]
                if not hit:
                    continue
                lift, lo, hi, _ = _ci(hit[0].comparison)
                y = len(domains) - 1 - i + offsets[j]
                col = _ARM_COLORS[k % len(_ARM_COLORS)]
                if math.isfinite(lo) and math.isfinite(hi):
                    ax.plot([lo * 100, hi * 100], [y, y], color=col, lw=2.2)
                ax.plot([lift * 100], [y], "o", color=col, ms=7, mfc=col if (lo > 0 or hi < 0) else "white")
        ax.axvline(0, color="black", lw=1)
        ax.set_yticks(np.arange(len(domains))[::-1], domains)
        ax.set_title(f"{METRIC_DEFS[m].label}: lift by domain (filled = significant)", fontsize=10)
        ax.set_xlabel(f"relative lift vs {analysis.config.control_arm.name} (%)")
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_ARM_COLORS[analysis.arms.index(t) % len(_ARM_COLORS)], marker="o", lw=2.2, label=t)
               for t in treatments]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return _save(fig, path, plt)


def _save(fig: Any, path: str | Path, plt: Any) -> Path:
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ---- files ---------------------------------------------------------------------------------------


def write_report(analysis: ABAnalysis, out: str | Path, *, plots: bool = True) -> ReportFiles:
    """Writes ``report.md``, ``report.json`` and (with ``plots``) the PNG plots into ``out``.

    Args:
        analysis: the analysed experiment (:func:`abtest.stats.analyze`).
        out: the output folder; created if missing, files in it overwritten.
        plots: render the PNG plots.

    Returns:
        The written paths.

    Example:
        >>> import tempfile
        >>> from abtest.configs import ABTestConfig, ArmConfig, Metric
        >>> from abtest.stats import analyze
        >>> cfg = ABTestConfig(arms=(ArmConfig(name="control", model="din", share=0.5),
        ...                          ArmConfig(name="lmn", model="lmn", share=0.5)),
        ...                    metrics=(Metric.CLICKS_PER_USER,), pre_days=0, cuped=False)
        >>> users = {"user_id": np.arange(6), "arm": np.array([0, 1] * 3), "clicks": np.array([1, 2, 0, 3, 1, 2])}
        >>> files = write_report(analyze(users, cfg), tempfile.mkdtemp(), plots=False)
        >>> "lmn lifts clicks/user" in files.markdown.read_text()
        True
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if plots:
        for name, fn in (("lift_forest.png", plot_forest), ("daily.png", plot_daily), ("domains.png", plot_domains)):
            p = fn(analysis, folder / name)
            if p is not None:
                written.append(p)
    md = folder / "report.md"
    md.write_text(render_markdown(analysis, plots=[p.name for p in written]), encoding="utf-8")
    payload = analysis.to_dict()
    payload["verdicts"] = [verdict(r, analysis) for r in analysis.results]
    payload["plots"] = [p.name for p in written]
    js = folder / "report.json"
    js.write_text(json.dumps(payload, indent=1, allow_nan=False), encoding="utf-8")
    logger.info("wrote %s, %s and %d plots", md, js, len(written))
    return ReportFiles(markdown=md, json=js, plots=tuple(written))
