"""Shared by every benchmark: the result file format and the machine description.

Each ``benchmarks/<name>.py`` defines ``run(*, quick: bool = False) -> BenchResult`` and is run by
``seedrec bench <name>``, which prints a table and writes ``bench_results/<name>.json`` =
``{name, params, results, peer, ratio, machine}``. A speed claim always compares against a peer
or a limit measured in the same run (``ratio``), since absolute times on shared machines drift.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BenchResult", "machine_info", "write_result", "format_table"]


@dataclass(kw_only=True)
class BenchResult:
    name: str
    params: dict[str, Any]
    results: dict[str, Any]
    peer: dict[str, Any]
    ratio: float | None
    notes: str = ""
    machine: dict[str, Any] = field(default_factory=lambda: machine_info())


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(result: BenchResult, out_dir: str | Path = "bench_results") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{result.name}.json"
    path.write_text(json.dumps(asdict(result), indent=2, default=float) + "\n")
    return path


def format_table(result: BenchResult) -> str:
    rows = [("metric", "ours", "peer")]
    for k, v in result.results.items():
        rows.append((k, _fmt(v), _fmt(result.peer.get(k, ""))))
    rows.append(("ratio (ours/peer)", _fmt(result.ratio), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"== {result.name} ==  params: {json.dumps(result.params)}"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    if result.notes:
        lines.append(result.notes)
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)
