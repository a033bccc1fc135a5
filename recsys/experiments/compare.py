"""DIN vs ADS vs LMN on the synthetic world and MovieLens-100k: runs the experiments and writes the report.

Commands::

    # the full study (≈ 25 min on 2 loaded cores): 3 seeds × 3 models × 2 data sets, LMN memory
    # sweep 16² … 1024² and ADS chunk sweep on MovieLens, report into docs/results/
    python -m recsys.experiments.compare --seeds 3 --datasets synthetic,movielens --out docs/results

    # a smoke run (a tiny world, 20 steps per run, 1 seed) into runs/experiments_quick/results
    python -m recsys.experiments.compare --quick

Writes ``OUT/recsys.md`` (tables, the papers' claims against what was measured), ``OUT/recsys.json``
(every run's metrics and timings, the data sets' statistics, the configuration) and the plots
``OUT/lmn_memory_scaling.png`` and ``OUT/ads_chunks.png``. Every number in the markdown is read from
the JSON of the same run; the papers' numbers are quoted from ``shared/specs/lmn-ads.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from recsys.experiments.configs import DATASETS, ExperimentConfig, SyntheticDataConfig
from recsys.experiments.runner import RunRecord, mean_std, run_experiments, summarize_main
from seedrec.errors import SeedrecError

__all__ = ["quick_config", "write_report", "render_markdown", "verdict", "main"]

logger = logging.getLogger(__name__)

_MODEL_NAMES = {"din": "DIN", "ads": "ADS (DIN backbone)", "lmn": "LMN (DIN backbone)"}
_DATASET_NAMES = {"synthetic": "Synthetic world", "movielens": "MovieLens-100k"}


def quick_config(**changes: Any) -> ExperimentConfig:
    """A smoke-test configuration: a 400-user world, 20 steps per run, 1 seed, 2-point sweeps."""
    base: dict[str, Any] = {
        "seeds": 1,
        "work_dir": "runs/experiments_quick",
        "synthetic": SyntheticDataConfig(users=400, items=150, days=4),
        "memory_sizes": (16, 64),
        "chunk_counts": (1, None),
        "max_steps": 20,
    }
    base.update(changes)
    return ExperimentConfig(**base)


# ---- formatting helpers ---------------------------------------------------------------------------
def _f(x: float, digits: int = 4) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _pm(mean: float, std: float, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f}" if not math.isfinite(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _signed_pm(mean: float, std: float, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{mean:+.{digits}f}" if not math.isfinite(std) else f"{mean:+.{digits}f} ± {std:.{digits}f}"


def verdict(values: Sequence[float], *, higher_is_better: bool = True) -> str:
    """A paired-difference verdict over seeds: a one-sample t-test of the mean against 0 (95%).

    Example:
        >>> verdict([0.5, 0.6, 0.55])
        'better, significant (t = 19.05, n = 3)'
        >>> verdict([0.5])
        'better, 1 seed (no test)'
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return "not measured"
    mean = float(v.mean())
    good = mean > 0 if higher_is_better else mean < 0
    direction = "better" if good else "worse"
    if len(v) < 2:
        return f"{direction}, 1 seed (no test)"
    std = float(v.std(ddof=1))
    if std == 0.0:
        return f"{direction}, no seed variance"
    from scipy import stats

    t = mean / (std / math.sqrt(len(v)))
    crit = float(stats.t.ppf(0.975, len(v) - 1))
    sig = "significant" if abs(t) > crit else "not significant"
    return f"{direction}, {sig} (t = {t:.2f}, n = {len(v)})"


def _records(results: dict[str, Any], study: str, dataset: str | None = None) -> list[dict[str, Any]]:
    return [r for r in results["records"] if r["study"] == study and (dataset is None or r["dataset"] == dataset)]


def _metric(r: dict[str, Any], name: str) -> float:
    return float(r["metrics"].get(f"test/click/{name}", float("nan")))


# ---- plots --------------------------------------------------------------------------------------------
def _plot_memory(results: dict[str, Any], out: Path) -> Path | None:
    rows = sorted(_records(results, "memory"), key=lambda r: int(r["variant"].split("=")[1]))
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset = rows[0]["dataset"]
    n = np.array([int(r["variant"].split("=")[1]) ** 2 for r in rows], dtype=np.float64)
    aucs = np.array([_metric(r, "auc") for r in rows])
    steps = np.array([r["step_ms"] for r in rows])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(n, aucs, "o-", label="LMN, seed 0")
    din = [r for r in _records(results, "main", dataset) if r["model"] == "din"]
    if din:
        m, s = mean_std([_metric(r, "auc") for r in din])
        a1.axhline(m, color="gray", ls="--", label=f"DIN, mean of {len(din)} seed(s)")
        if math.isfinite(s):
            a1.axhspan(m - s, m + s, color="gray", alpha=0.15, label="DIN ± 1 std")
    a1.set_xscale("log", base=2)
    a1.set_xlabel("memory slots n = n_sub² (log2)")
    a1.set_ylabel("test click AUC")
    a1.set_title(f"LMN memory scaling, {_DATASET_NAMES.get(dataset, dataset)}")
    a1.legend(fontsize=8)
    a2.plot(n, steps, "s-", color="C1")
    a2.set_xscale("log", base=2)
    a2.set_xlabel("memory slots n = n_sub² (log2)")
    a2.set_ylabel(f"train step time, ms (batch {rows[0]['batch_size']})")
    a2.set_title("step time (1 CPU thread, shared machine)")
    fig.tight_layout()
    path = out / "lmn_memory_scaling.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _chunk_value(r: dict[str, Any]) -> str:
    return r["variant"].split("=")[1]


def _plot_chunks(results: dict[str, Any], out: Path, seq_len: int) -> Path | None:
    rows = _records(results, "chunks")
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: seq_len if _chunk_value(r) == "null" else int(_chunk_value(r)))
    g = [seq_len if _chunk_value(r) == "null" else int(_chunk_value(r)) for r in rows]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(g, [_metric(r, "auc") for r in rows], "o-", label="ADS, seed 0")
    dataset = rows[0]["dataset"]
    din = [r for r in _records(results, "main", dataset) if r["model"] == "din" and r["seed"] == 0]
    if din:
        ax.axhline(_metric(din[0], "auc"), color="gray", ls="--", label="DIN, seed 0")
    ax.set_xscale("log", base=2)
    ax.set_xticks(g, [str(x) if x != seq_len else f"{x} (=T)" for x in g])
    ax.set_xlabel("PCRG query chunks G")
    ax.set_ylabel("test click AUC")
    ax.set_title(f"ADS chunk sweep, {_DATASET_NAMES.get(dataset, dataset)}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "ads_chunks.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- markdown -------------------------------------------------------------------------------------------
def _main_table(results: dict[str, Any], dataset: str) -> tuple[list[str], list[dict[str, Any]]]:
    rows = summarize_main(results["records"], dataset)
    lines = [
        "| model | AUC | GAUC | LogLoss | RelaImpr vs DIN (%) | LogLoss vs DIN (%) | samples/s | step ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = r["model"] == "din"
        lines.append(
            f"| {_MODEL_NAMES.get(r['model'], r['model'])} | {_pm(r['auc_mean'], r['auc_std'])} | "
            f"{_pm(r['gauc_mean'], r['gauc_std'])} | {_pm(r['logloss_mean'], r['logloss_std'])} | "
            f"{'(baseline)' if base else _signed_pm(r['rela_impr_mean'], r['rela_impr_std'])} | "
            f"{'(baseline)' if base else _signed_pm(r['logloss_rel_mean'], r['logloss_rel_std'], 3)} | "
            f"{r['samples_per_s_mean']:,.0f} | {r['step_ms_mean']:.0f} |"
        )
    oracle = results["datasets"].get(dataset, {}).get("oracle")
    if oracle:
        lines.append(
            f"| *oracle: true p_click, position-blind* | {_f(oracle['position_blind_auc'])} | "
            f"{_f(oracle['position_blind_gauc'])} | — | | | | |"
        )
        lines.append(
            f"| *oracle: true p_click with position* | {_f(oracle['position_aware_auc'])} | "
            f"{_f(oracle['position_aware_gauc'])} | {_f(oracle['position_aware_logloss'])} | | | | |"
        )
    return lines, rows


def _domain_table(rows: list[dict[str, Any]]) -> list[str]:
    domains = sorted({d for r in rows for d in r["domains"]})
    if len(domains) < 2:
        return []
    lines = ["| model | " + " | ".join(domains) + " |", "|---" * (len(domains) + 1) + "|"]
    for r in rows:
        cells = [_pm(*r["domains"].get(d, (math.nan, math.nan))) for d in domains]
        lines.append(f"| {_MODEL_NAMES.get(r['model'], r['model'])} | " + " | ".join(cells) + " |")
    return lines


def _splits_line(info: dict[str, Any]) -> str:
    parts = []
    for split, s in info.get("splits", {}).items():
        extra = f", click rate {s['click_rate']:.3f}" if "click_rate" in s else ""
        hist = f", mean history {s['mean_hist_len']:.1f}" if "mean_hist_len" in s else ""
        days = s.get("days", "?")
        parts.append(f"{split} {s['rows']:,} rows ({days} day{'' if days == 1 else 's'}{extra}{hist})")
    return "; ".join(parts)


def render_markdown(results: dict[str, Any], *, plots: dict[str, str]) -> str:
    """The report as markdown; every number comes from ``results`` (the papers' from the spec)."""
    cfg = results["config"]
    L: list[str] = []
    add = L.append
    add("# Offline results: DIN vs ADS vs LMN")
    add("")
    add(f"Generated by `python -m recsys.experiments.compare {results.get('argv', '')}`".rstrip() + " "
        f"on {results.get('when', '?')} ({results.get('machine', '?')}; torch {results.get('torch', '?')}, "
        f"{cfg['threads']} torch thread(s) per run). Total wall time {results['wall_s'] / 60:.1f} min for "
        f"{len(results['records'])} result rows. Every number below is read from `recsys.json` next to this "
        "file; the papers' numbers are quoted from `shared/specs/lmn-ads.md` (§1.5, §2.6).")
    add("")
    add("Every run goes through `recsys.train.cli.run_training` (the `seedrec train` path) on the YAML configs "
        f"under `{cfg['config_dir']}/` (synthetic) and `{cfg['config_dir']}/movielens/`; the three models of a data "
        "set share embeddings, tower, optimizer, batch size and epochs, so differences are architectural. "
        "Metrics are the click head on the test split. RelaImpr = ((AUC − 0.5)/(AUC_DIN − 0.5) − 1)·100 "
        "(ADS eq. 14), computed per seed against DIN of the same seed; ± is the sample std over seeds.")
    add("")
    summaries: dict[str, list[dict[str, Any]]] = {}
    for dataset in cfg["datasets"]:
        info = results["datasets"].get(dataset, {})
        add(f"## {_DATASET_NAMES.get(dataset, dataset)}: {cfg['seeds']} seed(s)")
        add("")
        if dataset == "synthetic":
            s = cfg["synthetic"]
            add(f"World: {s['users']:,} users × {s['items']:,} items × {s['days']} days (world seed {s['seed']}), "
                f"T = {s['seq_len']}. {_splits_line(info)}.")
        else:
            m = cfg["movielens"]
            add(f"MovieLens-100k, click = rating ≥ 4, split by time (last {m['test_days']} rating days test, "
                f"{m['valid_days']} before valid), T = {m['seq_len']}. {_splits_line(info)}.")
        add("")
        lines, rows = _main_table(results, dataset)
        summaries[dataset] = rows
        L.extend(lines)
        add("")
        dom = _domain_table(rows)
        if dom:
            add("Per-domain test AUC (mean ± std over seeds):")
            add("")
            L.extend(dom)
            add("")

    mem = sorted(_records(results, "memory"), key=lambda r: int(r["variant"].split("=")[1]))
    if mem:
        ds = mem[0]["dataset"]
        add(f"## LMN memory scaling ({_DATASET_NAMES.get(ds, ds)}, seed 0)")
        add("")
        add("| n = n_sub² | slots | k | test AUC | GAUC | LogLoss | step ms | samples/s |")
        add("|---|---|---|---|---|---|---|---|")
        for r in mem:
            n_sub = int(r["variant"].split("=")[1])
            add(f"| {n_sub}² | {n_sub * n_sub:,} | {r.get('model_config', {}).get('k', '?')} | {_f(_metric(r, 'auc'))} | {_f(_metric(r, 'gauc'))} | "
                f"{_f(_metric(r, 'logloss'))} | {r['step_ms']:.0f} | {r['samples_per_s']:,.0f} |")
        add("")
        add("Step times are from a 2-core machine shared with other jobs: ±30% from run to run, compare their trend only.")
        add("")
        if "memory" in plots:
            add(f"![LMN memory scaling]({plots['memory']})")
            add("")
    chunks = _records(results, "chunks")
    if chunks:
        ds = chunks[0]["dataset"]
        T = cfg["movielens"]["seq_len"] if ds == "movielens" else cfg["synthetic"]["seq_len"]
        chunks = sorted(chunks, key=lambda r: T if _chunk_value(r) == "null" else int(_chunk_value(r)))
        add(f"## ADS chunk sweep ({_DATASET_NAMES.get(ds, ds)}, seed 0, T = {T})")
        add("")
        add("| num_chunks G | items per chunk | test AUC | GAUC | LogLoss | step ms |")
        add("|---|---|---|---|---|---|")
        for r in chunks:
            g = T if _chunk_value(r) == "null" else int(_chunk_value(r))
            label = f"{g} (None: one query per position)" if _chunk_value(r) == "null" else str(g)
            add(f"| {label} | {T / g:g} | {_f(_metric(r, 'auc'))} | {_f(_metric(r, 'gauc'))} | "
                f"{_f(_metric(r, 'logloss'))} | {r['step_ms']:.0f} |")
        add("")
        if "chunks" in plots:
            add(f"![ADS chunk sweep]({plots['chunks']})")
            add("")
    L.extend(_claims_section(results, summaries))
    return "\n".join(L) + "\n"


def _claims_section(results: dict[str, Any], summaries: dict[str, list[dict[str, Any]]]) -> list[str]:
    L: list[str] = ["## The papers' claims against what we measured", ""]
    add = L.append
    add("| claim (source) | paper | measured here | verdict |")
    add("|---|---|---|---|")
    for dataset, rows in summaries.items():
        by = {r["model"]: r for r in rows}
        name = _DATASET_NAMES.get(dataset, dataset)
        if "ads" in by:
            r = by["ads"]
            add(f"| ADS beats its DIN backbone, AUC (ADS §2.6, RelaImpr vs the second best of the DIN group) | "
                f"+0.05% … +0.47% | {name}: {_signed_pm(r['rela_impr_mean'], r['rela_impr_std'])}% | "
                f"{verdict(r['rela_impr_values'])} |")
        if "lmn" in by:
            r = by["lmn"]
            add(f"| LMN improves AUC (LMN §1.5, vs SIM/MIMN; probably relative, wording ambiguous [S]) | +4.68% | "
                f"{name}: RelaImpr {_signed_pm(r['rela_impr_mean'], r['rela_impr_std'])}% | "
                f"{verdict(r['rela_impr_values'])} |")
            add(f"| LMN improves LogLoss (LMN §1.5 [S]) | −1.46% | {name}: "
                f"{_signed_pm(r['logloss_rel_mean'], r['logloss_rel_std'], 3)}% | "
                f"{_logloss_verdict(results, dataset)} |")
    mem = sorted(_records(results, "memory"), key=lambda r: int(r["variant"].split("=")[1]))
    if len(mem) >= 2:
        lo, hi = mem[0], mem[-1]
        noise = _lmn_seed_std(summaries, lo["dataset"])
        diff = _metric(hi, "auc") - _metric(lo, "auc")
        monotone = all(_metric(b, "auc") >= _metric(a, "auc") for a, b in zip(mem, mem[1:], strict=False))
        add(f"| AUC grows with memory size up to million scale (LMN abstract) | monotone gain [gap: sizes and values not "
            f"retrievable] | {lo['variant']} → {hi['variant']}: ΔAUC {diff:+.4f} "
            f"({'monotone' if monotone else 'not monotone'}); LMN seed std {_f(noise)} | "
            f"{_noise_verdict(diff, noise)} |")
    chunks = _records(results, "chunks")
    if len(chunks) >= 2:
        full = [r for r in chunks if _chunk_value(r) == "null"]
        one = [r for r in chunks if _chunk_value(r) == "1"]
        if full and one:
            noise = _seed_std(summaries, full[0]["dataset"], "ads")
            diff = _metric(full[0], "auc") - _metric(one[0], "auc")
            add(f"| Unchunked PCRG (one query per position) is best; fewer items per chunk is better (ADS §2.6) | "
                f"chunk 1 > 2 > 5 > 10 items | unchunked − one chunk: ΔAUC {diff:+.4f}; ADS seed std {_f(noise)} | "
                f"{_noise_verdict(diff, noise)} |")
    add("")
    add("Verdicts: a one-sample t-test over the per-seed paired differences (95%, n = seeds); sweeps have one seed, "
        "so their differences are compared with the main study's seed std of that model (|Δ| ≤ 2·std = "
        "\"within seed noise\").")
    add("")
    add(_summary(summaries))
    add("")
    add("### Likely reasons where the claims did not reproduce")
    add("")
    add(_reasons(results, summaries))
    return L


def _min_detectable(std: float, n: int) -> float:
    """The smallest mean paired difference a two-sided one-sample t-test at 95% flags with n seeds."""
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)


def _summary(summaries: dict[str, list[dict[str, Any]]]) -> str:
    """One line per model and data set: did the AUC lift over DIN show up beyond seed noise?"""
    parts = []
    for d, rows in summaries.items():
        for r in rows:
            if r["model"] == "din":
                continue
            v = verdict(r["rela_impr_values"])
            if v.startswith("better, significant"):
                state = "lift reproduced in direction (significant)"
            elif v.startswith("better"):
                state = "same direction, not significant"
            else:
                state = "no lift: not reproduced"
            parts.append(f"{_MODEL_NAMES.get(r['model'], r['model']).split(' ')[0]} on {_DATASET_NAMES.get(d, d)}: "
                         f"RelaImpr {_signed_pm(r['rela_impr_mean'], r['rela_impr_std'])}%, {state}")
    return "**Summary.** " + "; ".join(parts) + "." if parts else ""


def _seed_std(summaries: dict[str, list[dict[str, Any]]], dataset: str, model: str) -> float:
    for r in summaries.get(dataset, []):
        if r["model"] == model:
            return float(r["auc_std"])
    return float("nan")


def _lmn_seed_std(summaries: dict[str, list[dict[str, Any]]], dataset: str) -> float:
    return _seed_std(summaries, dataset, "lmn")


def _noise_verdict(diff: float, noise: float) -> str:
    if not math.isfinite(noise):
        return f"{'gain' if diff > 0 else 'loss'}, no seed std to compare (1 seed)"
    if abs(diff) <= 2 * noise:
        return "within seed noise: not reproduced"
    return "reproduced (beyond 2·seed std)" if diff > 0 else "opposite (beyond 2·seed std)"


def _logloss_verdict(results: dict[str, Any], dataset: str) -> str:
    rows = summarize_main(results["records"], dataset)
    by = {r["model"]: r for r in rows}
    if "lmn" not in by or "din" not in by:
        return "not measured"
    din = {s: v for s, v in zip(by["din"]["seeds"], by["din"]["logloss_values"], strict=True)}
    diffs = [v - din[s] for s, v in zip(by["lmn"]["seeds"], by["lmn"]["logloss_values"], strict=True) if s in din]
    return verdict(diffs, higher_is_better=False)


def _reasons(results: dict[str, Any], summaries: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    sizes = {d: results["datasets"].get(d, {}).get("splits", {}).get("train", {}).get("rows") for d in summaries}
    max_n = max(results["config"]["memory_sizes"] or [0])
    size_txt = ", ".join(f"{_DATASET_NAMES.get(d, d)} {n:,}" for d, n in sizes.items() if n)
    lines.append(
        f"- **Scale.** The papers train on 1.73–3.6 billion samples over weeks (spec §1.5, §2.6); our runs see one "
        f"epoch of {size_txt} training rows. A product-key memory needs many reads per slot before its values mean "
        f"anything: with 10^5 rows most of the {max_n}² slots are read a handful of times, so the large end of the "
        "memory sweep measures under-trained slots, which is why the spec (§4.2) already expected saturation on ml-100k.")
    detect: list[tuple[str, float]] = []
    for d, rows in summaries.items():
        for r in rows:
            if r["model"] != "din" and r["n"] > 1 and math.isfinite(r["rela_impr_std"]):
                name = f"{_MODEL_NAMES.get(r['model'], r['model']).split(' ')[0]} on {_DATASET_NAMES.get(d, d)}"
                detect.append((name, _min_detectable(r["rela_impr_std"], r["n"])))
    if detect:
        hidden = [n for n, t in detect if t > 0.47]
        lines.append(
            "- **Effect size vs seed noise.** The smallest mean RelaImpr our paired test over seeds can flag "
            "(t-critical · paired std / √n) is " + ", ".join(f"{n} {t:.2f}%" for n, t in detect) + ". "
            + (f"A lift of ADS's published size (≤ +0.47%) would go unnoticed for {', '.join(hidden)}; " if hidden else "")
            + "the papers evaluate on 10^8–10^9 rows, where seed noise is negligible.")
    syn = results["datasets"].get("synthetic", {}).get("oracle")
    if syn and "synthetic" in summaries:
        best = max(r["auc_mean"] for r in summaries["synthetic"])
        lines.append(
            f"- **What the models learn on the synthetic world.** The best model reaches AUC {best:.4f} against a "
            f"position-blind oracle of {syn['position_blind_auc']:.4f} (the true p_click without the slot's "
            f"examination bias; position alone scores {syn['position_only_auc']:.4f}). All three models are about "
            "equally far from it, so the missing signal is not one that ADS's or LMN's modules recover at this scale; "
            "our guess is too little data per user (tens of impressions each) for the user×item and short-term "
            "terms of the world, and no position feature in the samples.")
    lines.append(
        "- **Data.** ADS's gains come from heterogeneous business domains (live-stream vs short-video, 9,439 Taobao "
        "categories) and LMN's from long lifelong sequences in e-commerce search; MovieLens has no real domains (our "
        "genre groups are a proxy) and T = 20, and the synthetic world's domains differ only in a few scalar weights.")
    lines.append(
        "- **Reconstruction gaps.** LMN's method section was not available: the query fusion, where the read enters, "
        "the write target and λ are our choices (spec §1.3); ADS's η, d_h and generator sizes are not given (§2.7). "
        "The papers train with Adam (ADS: lr 2e-5, TensorFlow) at production batch sizes; we use one tuned optimizer "
        "setting shared by all three models.")
    lines.append(
        "- **Baselines.** LMN's +4.68% is against SIM/MIMN (long-sequence models), not against the DIN used here, and "
        "its table was not retrievable (the figure is from an AI summary [S]). ADS's lifts are against the second best "
        "model of its backbone group (DIN + FRNet / PEPNet), a stronger baseline than plain DIN, so a larger lift over "
        "plain DIN is not in itself a contradiction.")
    return "\n".join(lines)


def write_report(results: dict[str, Any], out: Path) -> Path:
    """Writes ``recsys.json``, the plots and ``recsys.md`` into ``out``; returns the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "recsys.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    plots: dict[str, str] = {}
    p = _plot_memory(results, out)
    if p is not None:
        plots["memory"] = p.name
    seq_len = results["config"]["movielens"]["seq_len"]
    chunk_rows = _records(results, "chunks")
    if chunk_rows and chunk_rows[0]["dataset"] == "synthetic":
        seq_len = results["config"]["synthetic"]["seq_len"]
    p = _plot_chunks(results, out, seq_len)
    if p is not None:
        plots["chunks"] = p.name
    md = out / "recsys.md"
    md.write_text(render_markdown(results, plots=plots))
    return md


# ---- CLI ------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recsys.experiments.compare", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny world, 20 steps per run, 1 seed (a smoke test)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds per model (default 3; quick 1)")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: synthetic,movielens")
    p.add_argument("--out", type=Path, default=None, help="report folder (default docs/results; quick: runs/experiments_quick/results)")
    p.add_argument("--work-dir", default=None, help="data and run folders (default runs/experiments)")
    p.add_argument("--config-dir", default="configs")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--max-steps", type=int, default=None, help="cap every run (default: the configs' epochs)")
    p.add_argument("--memory-sizes", default=None, help="LMN sweep, comma-separated n_sub (default 16,64,256,1024)")
    p.add_argument("--memory-dataset", default=None)
    p.add_argument("--chunks", default=None, help="ADS sweep, comma-separated num_chunks, 'none' = per position (default 1,2,4,none)")
    p.add_argument("--chunk-dataset", default=None)
    p.add_argument("--from-json", type=Path, default=None,
                   help="re-render the report from an earlier run's recsys.json (no training)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides for every run, e.g. train.lr=0.01")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the experiments and writes the report; see the module docstring for the commands."""
    from seedrec.logs import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    setup_logging()
    changes: dict[str, Any] = {"datasets": tuple(d for d in args.datasets.split(",") if d),
                               "config_dir": args.config_dir, "threads": args.threads, "overrides": tuple(args.overrides)}
    for key, value in (("seeds", args.seeds), ("work_dir", args.work_dir), ("max_steps", args.max_steps),
                       ("memory_dataset", args.memory_dataset), ("chunk_dataset", args.chunk_dataset)):
        if value is not None:
            changes[key] = value
    if args.memory_sizes is not None:
        changes["memory_sizes"] = tuple(int(x) for x in args.memory_sizes.split(",") if x)
    if args.chunks is not None:
        changes["chunk_counts"] = tuple(None if x.lower() in ("none", "null") else int(x) for x in args.chunks.split(",") if x)
    out = args.out or Path("runs/experiments_quick/results" if args.quick else "docs/results")
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        md = write_report(results, out)
        logger.info("re-rendered %s from %s", md, args.from_json)
        return 0
    try:
        cfg = quick_config(**changes) if args.quick else ExperimentConfig(**changes)
        partial = Path(cfg.work_dir) / "records.jsonl"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("")

        def checkpoint(record: RunRecord) -> None:
            with partial.open("a") as f:
                f.write(json.dumps(asdict(record)) + "\n")

        results = run_experiments(cfg, on_record=checkpoint)
    except SeedrecError as e:
        logger.error("%s", e)
        return 2
    results["argv"] = " ".join(argv)
    results["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["machine"] = f"{platform.machine()}, {_cpu_count()} CPUs"
    md = write_report(results, out)
    logger.info("wrote %s (%.1f min)", md, results["wall_s"] / 60)
    return 0


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())
