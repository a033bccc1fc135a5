"""The one command line: ``seedrec <group> <command> [options]``.

Each command parses its options and calls one library function; heavy imports happen only inside
the command that needs them, so ``seedrec --help`` is instant. Errors of the
:class:`~seedrec.errors.SeedrecError` hierarchy are printed as one line (no traceback) and the
command exits with status 2.

Examples::

    seedrec data synth --out /tmp/w --users 2000 --items 500 --days 4 --seed 1
    seedrec data build --logs /tmp/w --out /tmp/s --seq-len 20
    seedrec train --config configs/lmn.yaml --data /tmp/s --out runs/lmn train.max_steps=200
    seedrec bench sample_build
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from seedrec.errors import SeedrecError
from seedrec.logs import setup_logging

__all__ = ["main"]

logger = logging.getLogger("seedrec")


# ---- data ------------------------------------------------------------------------------------
def _data_synth(args: argparse.Namespace) -> int:
    from feature_pipeline.world import WorldConfig, synth

    cfg = WorldConfig(users=args.users, items=args.items, days=args.days, domains=args.domains, seed=args.seed)
    synth(cfg, Path(args.out))
    logger.info("synthetic logs written to %s (ground truth in %s/world.json)", args.out, args.out)
    return 0


def _data_movielens(args: argparse.Namespace) -> int:
    from feature_pipeline.movielens import ingest_movielens

    summary = ingest_movielens(Path(args.out))
    logger.info("MovieLens-100k logs written to %s: %s", args.out, summary)
    return 0


def _data_build(args: argparse.Namespace) -> int:
    from feature_pipeline.build_config import BuildConfig
    from feature_pipeline.samples import build_samples

    cfg = BuildConfig(seq_len=args.seq_len, valid_days=args.valid_days, test_days=args.test_days,
                      min_freq=args.min_freq, embedding_dim=args.embedding_dim)
    spec = build_samples(Path(args.logs), Path(args.out), cfg)
    logger.info("samples written to %s: %s", args.out, spec.stats.get("rows", spec.stats))
    return 0


# ---- training --------------------------------------------------------------------------------
def _passthrough(module: str, func: str) -> Callable[[list[str]], int]:
    def run(rest: list[str]) -> int:
        fn = getattr(importlib.import_module(module), func)
        return int(fn(rest) or 0)

    return run


# ---- benchmarks ------------------------------------------------------------------------------
def _bench_names() -> list[str]:
    import benchmarks

    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))


def _bench(args: argparse.Namespace) -> int:
    from benchmarks._common import format_table, write_result

    names = _bench_names()
    if args.name not in names:
        raise SeedrecError(f"unknown benchmark {args.name!r}; available: {', '.join(names)}")
    mod = importlib.import_module(f"benchmarks.{args.name}")
    result = mod.run(quick=args.quick)
    path = write_result(result, args.out_dir)
    print(format_table(result))
    logger.info("wrote %s", path)
    return 0


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seedrec", description="Seedrec: recommender training and serving.")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    groups = p.add_subparsers(dest="group", required=True, metavar="<group>")

    data = groups.add_parser("data", help="logs and samples").add_subparsers(dest="command", required=True, metavar="<command>")
    s = data.add_parser("synth", help="synthetic world -> logged behaviour parquet (+ world.json ground truth)")
    s.add_argument("--out", required=True)
    s.add_argument("--users", type=int, default=2000)
    s.add_argument("--items", type=int, default=500)
    s.add_argument("--days", type=int, default=4)
    s.add_argument("--domains", type=int, default=3)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_data_synth)
    m = data.add_parser("movielens", help="MovieLens-100k (from the recbole wheel) -> the same log schema")
    m.add_argument("--out", required=True)
    m.set_defaults(func=_data_movielens)
    b = data.add_parser("build", help="point-in-time training samples, time splits, vocabularies, feature_spec.json")
    b.add_argument("--logs", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--seq-len", type=int, default=20)
    b.add_argument("--valid-days", type=int, default=1)
    b.add_argument("--test-days", type=int, default=1)
    b.add_argument("--min-freq", type=int, default=1)
    b.add_argument("--embedding-dim", type=int, default=16)
    b.set_defaults(func=_data_build)

    for name, module, func, help_ in (
        ("train", "recsys.train.cli", "train_main", "train a task: --config FILE --data DIR --out RUN [key=value ...]"),
        ("eval", "recsys.train.cli", "eval_main", "metrics of a trained run on a split: --run RUN --split test"),
        ("export", "serving.export", "export_main", "model package from a run's checkpoint: --checkpoint RUN --out REPO"),
        ("serve", "serving.cli", "serve_main", "run the gRPC scoring server: --repository REPO --port P"),
        ("push", "serving.cli", "push_main", "ship a model package to a server: --package PKG --server ADDR --activate"),
        ("score", "serving.cli", "score_main", "score items from the shell: --server ADDR --user U --domain D --items 1,2,3"),
    ):
        t = groups.add_parser(name, help=help_, add_help=False)
        t.set_defaults(passthrough=_passthrough(module, func))

    mem = groups.add_parser("memory", help="the LMN memory service: serve, load").add_subparsers(
        dest="command", required=True, metavar="<command>")
    for name, func, help_ in (
        ("serve", "serve_main", "run the memory service: [--redis URL] [--port P] [--token T]"),
        ("load", "load_main", "load a package's memory block: --package DIR --server ADDR [--version V] [--token T]"),
    ):
        t = mem.add_parser(name, help=help_, add_help=False)
        t.set_defaults(passthrough=_passthrough("memory_service.cli", func))

    ab = groups.add_parser("abtest", help="simulated A/B tests: run").add_subparsers(
        dest="command", required=True, metavar="<command>")
    t = ab.add_parser("run", help="a simulated A/B test against a scoring server: --config FILE --out DIR",
                      add_help=False)
    t.set_defaults(passthrough=_passthrough("abtest.cli", "run_main"))

    be = groups.add_parser("bench", help="run one benchmark; writes bench_results/NAME.json")
    be.add_argument("name")
    be.add_argument("--quick", action="store_true", help="a small run (seconds), for smoke tests")
    be.add_argument("--out-dir", default="bench_results")
    be.set_defaults(func=_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    args, rest = parser.parse_known_args(argv)
    setup_logging(args.log_level)
    try:
        if getattr(args, "passthrough", None) is not None:
            return args.passthrough(rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return int(args.func(args))
    except SeedrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
