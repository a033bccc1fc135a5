"""``make demo``: the main job end to end on the embedded default, in under 10 minutes on 2 cores.

::

    python -m seedrec.demo [--out runs/demo] [--steps 100] [--ab-days 4]

Stages (progress bar over them; each logs what it did)::

    1. synthetic world → logged behaviour parquet      OUT/logs (+ world.json, the ground truth)
    2. point-in-time samples                            OUT/samples
    3. train DIN, LMN and ADS briefly (one process)     OUT/runs/{din,lmn,ads}
    4. export them as versions of one model `ranker`    OUT/outbox/ranker/{1: din, 2: lmn, 3: ads}
    5. embedded redis-server (online store + memory) ← events of the logs;
       `seedrec memory serve` and `seedrec serve` in subprocesses on free ports;
       LMN's memory block → memory service; push the three packages (DIN active)
    6. A/B test DIN vs LMN (configs/abtest/demo.yaml) through the server   OUT/abtest/report.md

Everything it started (redis-server, the memory service, the scoring server) is stopped on exit,
also after an error or Ctrl-C. The server's and memory service's logs are in ``OUT/*.log``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from seedrec.errors import SeedrecError, ServiceUnavailableError
from seedrec.logs import setup_logging

__all__ = ["main", "run_demo"]

logger = logging.getLogger("seedrec.demo")

_ROOT = Path(__file__).resolve().parent.parent
_MARKER = ".seedrec-demo"
_MODELS = (("din", "1"), ("lmn", "2"), ("ads", "3"))  # kind, version of `ranker`


@contextmanager
def _subprocess(name: str, argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Runs ``python -m seedrec.cli ARGV`` until the block exits, then SIGTERM (graceful), SIGKILL after 15 s."""
    env = {**os.environ, "SEEDREC_LOG_LEVEL": os.environ.get("SEEDREC_LOG_LEVEL", "INFO"), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "seedrec.cli", *argv], stdout=fh, stderr=subprocess.STDOUT,
                                cwd=_ROOT, env=env, start_new_session=True)
    logger.info("started %s (pid %d), log %s", name, proc.pid, log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        logger.info("stopped %s (exit %s)", name, proc.returncode)


def _wait_healthy(address: str, proc: subprocess.Popen[bytes], log: Path, *, timeout_s: float = 180.0) -> None:
    """Blocks until ``address`` answers a gRPC health check (any status)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:]
                raise ServiceUnavailableError(f"the process serving {address} exited with {proc.returncode}:\n{tail}")
            try:
                stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                return
            except grpc.RpcError:
                time.sleep(0.3)
    raise ServiceUnavailableError(f"{address} did not answer a health check within {timeout_s:.0f} s; see {log}")


def _prepare(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / _MARKER).exists():
            raise SeedrecError(f"{out} exists and is not a demo folder; pass --out to an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("written by python -m seedrec.demo; removed by the next demo run\n")


def run_demo(
    out: Path,
    *,
    users: int = 2000,
    items: int = 500,
    steps: int = 100,
    ab_days: int = 4,
    ab_pre_days: int = 2,
    config: Path = _ROOT / "configs" / "abtest" / "demo.yaml",
) -> Path:
    """Runs every stage (see the module docstring); returns the report's path."""
    import torch
    from tqdm import tqdm

    from abtest.cli import load_config
    from abtest.harness import run_abtest
    from feature_pipeline.build_config import BuildConfig
    from feature_pipeline.configs import WorldConfig
    from feature_pipeline.online_store import load_logs
    from feature_pipeline.samples import build_samples
    from feature_pipeline.world import synth
    from memory_service.cli import load_main as memory_load
    from recsys.train.cli import run_training
    from recsys.train.run_config import load_run_config
    from seedrec.redis_server import EmbeddedRedis, free_port
    from serving.client import AdminClient
    from serving.export import export_checkpoint

    t0 = time.perf_counter()
    _prepare(out)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    stages = tqdm(total=6, desc="demo", unit="stage", position=0)
    timings: dict[str, float] = {}

    def done(name: str, t: float) -> None:
        timings[name] = round(time.perf_counter() - t, 1)
        stages.update(1)
        logger.info("stage %s done in %.1f s", name, timings[name])

    try:
        t = time.perf_counter()
        logs, samples = out / "logs", out / "samples"
        world = synth(WorldConfig(users=users, items=items, days=4, domains=3, seed=0), logs, progress=False)
        done("synthetic logs", t)

        t = time.perf_counter()
        spec = build_samples(logs, samples, BuildConfig(seq_len=20, min_freq=1, embedding_dim=16, progress=False))
        logger.info("samples: %s rows", {k: v["rows"] for k, v in spec.stats.items() if isinstance(v, dict) and "rows" in v})
        done("samples", t)

        t = time.perf_counter()
        runs: dict[str, Path] = {}
        for kind, _ in _MODELS:
            runs[kind] = out / "runs" / kind
            overrides = [f"task.data_dir={samples}", f"train.out_dir={runs[kind]}", f"train.max_steps={steps}", "task.batch_size=512",
                         f"train.warmup_steps={min(20, steps)}", f"train.checkpoint_every={steps}",
                         "train.tensorboard=false", "train.final_splits=[test]", "task.eval_batch_size=4096", f"train.log_every={max(steps // 4, 1)}",
                         "train.progress_bar=true"]
            if kind == "lmn":
                overrides += ["model.n_sub=64", "model.k=16"]  # 4,096 memory slots: quick to train, load and serve
            logger.info("training %s for %d steps", kind, steps)
            metrics = run_training(load_run_config(_ROOT / "configs" / f"{kind}.yaml", overrides))
            logger.info("%s: test click AUC %.4f", kind, metrics.get("test/click/auc", float("nan")))
        done("training", t)

        t = time.perf_counter()
        outbox = out / "outbox"
        packages = {kind: export_checkpoint(runs[kind], outbox, name="ranker", version=version)
                    for kind, version in _MODELS}
        done("export", t)

        t = time.perf_counter()
        token, mem_token = secrets.token_hex(8), secrets.token_hex(8)
        with ExitStack() as stack:
            redis_server = stack.enter_context(EmbeddedRedis())
            n = load_logs(logs, redis_url=redis_server.url)
            logger.info("online store: %s from the logs", n)
            mem_port, srv_port = free_port(), free_port()
            mem_log, srv_log = out / "memory_service.log", out / "server.log"
            mem = stack.enter_context(_subprocess(
                "memory service", ["memory", "serve", "--redis", redis_server.url, "--port", str(mem_port),
                                   "--token", mem_token, "--grace", "2"], mem_log))
            mem_addr = f"127.0.0.1:{mem_port}"
            srv = stack.enter_context(_subprocess(
                "scoring server", ["serve", "--repository", str(out / "serving_repo"), "--port", str(srv_port),
                                   "--memory", mem_addr, "--memory-token", mem_token, "--memory-deadline-ms", "200",
                                   "--redis", redis_server.url, "--store-deadline-ms", "200", "--token", token, "--grace-s", "2",
                                   "--score-threads", "2"], srv_log))
            srv_addr = f"127.0.0.1:{srv_port}"
            _wait_healthy(mem_addr, mem, mem_log)
            memory_load(["--package", str(packages["lmn"]), "--server", mem_addr, "--token", mem_token])
            _wait_healthy(srv_addr, srv, srv_log)
            with AdminClient(srv_addr, token=token) as admin:
                for kind, version in _MODELS:
                    reply = admin.push(packages[kind], activate=kind == "din")
                    logger.info("pushed ranker/%s (%s, %d bytes)%s", version, kind, reply.bytes,
                                ", active" if reply.activated else "")
            done("serving stack", t)

            t = time.perf_counter()
            cfg = load_config(config, overrides={"server": srv_addr, "world_dir": str(logs), "users": users,
                                                 "days": ab_days, "pre_days": ab_pre_days})
            run = run_abtest(cfg, out / "abtest", world=world, redis_url=redis_server.url, admin_token=token)
            done("A/B test", t)
    finally:
        stages.close()
    wall = time.perf_counter() - t0
    _summary(run, out, wall, timings)
    return run.files.markdown


def _summary(run: Any, out: Path, wall: float, timings: dict[str, float]) -> None:
    from abtest.report import verdict

    a = run.analysis
    head = [r for r in a.results if r.metric is a.config.primary_metric]
    st = run.stats.to_dict()
    lines = ["", "=" * 100, f"Seedrec demo finished in {wall / 60:.1f} min ({json.dumps(timings)})", ""]
    for r in head:
        truth = "" if r.true_lift is None else f"; true lift from the world's ground truth {r.true_lift * 100:+.2f}%"
        lines.append(f"  {verdict(r, a)}{truth}")
    lines += [f"  users per arm {dict(zip(a.arms, a.n_users))}, SRM p = {float(a.srm.pvalue):.3f}; Score requests "
              f"{st['requests']:,} ({st['failed_total']} failed), p50 {st['latency_ms'].get('p50', float('nan')):.1f} ms; "
              f"histories from the online store: {st['history_sources']}",
              "", f"  report: {run.files.markdown}", f"  numbers: {run.files.json}", f"  logs for the next model: {out / 'abtest' / 'logs'}",
              "=" * 100, ""]
    sys.stdout.write("\n".join(lines))
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m seedrec.demo [--out DIR] [--users N] [--steps N] [--ab-days N]``."""
    ap = argparse.ArgumentParser(prog="python -m seedrec.demo", description="Seedrec end to end: logs → models → serving → A/B test.")
    ap.add_argument("--out", type=Path, default=_ROOT / "runs" / "demo", help="working folder (replaced on each run)")
    ap.add_argument("--users", type=int, default=2000, help="users of the world (all of them are in the A/B test)")
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--steps", type=int, default=100, help="training steps per model (batch 512)")
    ap.add_argument("--ab-days", type=int, default=4, help="days of the A/B test")
    ap.add_argument("--ab-pre-days", type=int, default=2, help="pre-period days (CUPED covariates)")
    ap.add_argument("--config", type=Path, default=_ROOT / "configs" / "abtest" / "demo.yaml")
    args = ap.parse_args(list(argv) if argv is not None else None)
    setup_logging()
    try:
        run_demo(args.out.resolve(), users=args.users, items=args.items, steps=args.steps, ab_days=args.ab_days,
                 ab_pre_days=args.ab_pre_days, config=args.config)
    except SeedrecError as e:
        logger.error("%s", e)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
