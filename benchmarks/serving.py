"""Online scoring: QPS and latency of ``RankingService.Score`` with 200 candidates per request.

Run: ``seedrec bench serving`` (``--quick`` for a seconds-long smoke run).

Set-up (one process for the server, one for the load generator, so they do not share a GIL):

* models: the real LMN (``recsys.models.lmn``: a 256² × 32 product-key memory, k = 32, read in
  process from the package's table) and DIN (``recsys.models.din``, default sizes), untrained, over
  a synthetic spec of 10k users and 20k items, T = 20, 16-wide tables; packaged with
  :func:`serving.export.write_package` like an exported run.
* server: :class:`serving.server.BackgroundServer` (2 score threads, 1 torch thread each).
* load: a spawned process with prebuilt requests (200 random candidates with category and price,
  a 20-event history, context features); ``saturation`` keeps ``concurrency`` calls in flight;
  ``fixed rate`` sends open-loop at half the measured saturation QPS (a rate the machine holds)
  and reports p50 / p99 / p999 of the client-side latency.
* peer: the same loaded model's forward on a prebuilt 200-candidate batch, in this process, before
  the server starts (no transform, no gRPC), by 2 threads at once like the server's 2 score
  threads. ``ratio`` = served candidates/s at saturation ÷ the peer's candidates/s; the target is
  ≥ 0.5, with p99 ≤ 20 ms at the fixed rate.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import BenchResult

__all__ = ["run"]

C, T = 200, 20


def _requests(n: int, *, users: int, items: int, seed: int) -> list[bytes]:
    from serving.client import build_score_request

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ids = rng.choice(items, size=C, replace=False)
        hist = rng.integers(0, items, size=T)
        req = build_score_request(
            user_id=int(rng.integers(users)), domain=("feed", "search")[i % 2], item_ids=ids,
            features={"device": "ios", "hour": int(rng.integers(24))},
            candidate_features={"category_id": ids % 50, "price": rng.lognormal(3.0, 0.7, C)},
            history=[{"item_id": int(h), "category_id": int(h % 50), "action": "click", "domain": "feed", "ts_ms": 1000 * j}
                     for j, h in enumerate(hist)],
            request_id=f"b{i}",
        )
        out.append(req.SerializeToString())
    return out


def _load_generator(address: str, payloads: list[bytes], mode: str, seconds: float, rate: float, concurrency: int,
                    conn: Any) -> None:
    """(child process) sends Score calls; returns (latencies in s, completed, errors, elapsed) through ``conn``."""
    import grpc

    from protos.seedrec.v1 import ranking_pb2 as pb
    from protos.seedrec.v1 import ranking_pb2_grpc as pb_grpc

    reqs = [pb.ScoreRequest.FromString(p) for p in payloads]
    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = pb_grpc.RankingServiceStub(channel)
    stub.Score(reqs[0], timeout=10)  # connect
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    t_start = time.perf_counter()
    t_end = t_start + seconds
    if mode == "saturation":
        def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                try:
                    stub.Score(reqs[i % len(reqs)], timeout=2.0)
                    with lock:
                        lat.append(time.perf_counter() - t0)
                except grpc.RpcError:
                    with lock:
                        errors += 1
                i += concurrency

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    else:  # open loop at a fixed rate: send times do not wait for answers
        pending: list[Any] = []
        i = 0
        while True:
            due = t_start + i / rate
            if due >= t_end:
                break
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            fut = stub.Score.future(reqs[i % len(reqs)], timeout=2.0)

            def done(f: Any, t0: float = due) -> None:
                nonlocal errors
                with lock:
                    if f.exception() is None:
                        lat.append(time.perf_counter() - t0)  # from the scheduled send: includes client-side queueing
                    else:
                        errors += 1

            fut.add_done_callback(done)
            pending.append(fut)
            i += 1
        for f in pending:
            try:
                f.result()
            except grpc.RpcError:
                pass
    elapsed = time.perf_counter() - t_start
    channel.close()
    conn.send((lat, len(lat), errors, elapsed))
    conn.close()


def _drive(address: str, payloads: list[bytes], *, mode: str, seconds: float, rate: float = 0.0, concurrency: int = 2) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_load_generator, args=(address, payloads, mode, seconds, rate, concurrency, child))
    proc.start()
    lat, done, errors, elapsed = parent.recv()
    proc.join(timeout=60)
    ms = np.asarray(lat) * 1000.0
    return {
        "qps": done / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "p999_ms": float(np.percentile(ms, 99.9)) if len(ms) else float("nan"),
        "requests": float(done),
        "errors": float(errors),
    }


def _package(root: Path, *, kind: str, quick: bool) -> Path:
    import torch

    from feature_pipeline.spec import FeatureSpec
    from recsys.configs import DINConfig, LMNConfig
    from recsys.models.registry import build_model
    from serving.export import write_package
    from serving.testing import write_toy_samples

    samples = root / "samples"
    if not samples.exists():
        write_toy_samples(samples, users=10_000, items=20_000, categories=50, seq_len=T, embedding_dim=16)
    cfg = LMNConfig(n_sub=64 if quick else 256, k=32, d_key=32, d_value=32) if kind == "lmn" else DINConfig()
    torch.manual_seed(0)
    model = build_model(cfg, FeatureSpec.load(samples), device="cpu")
    return write_package(root / "repo" / kind / "1", name=kind, version="1", kind=kind, model_config=asdict(cfg),
                         model=model, samples=samples, metrics={})


def _forward_peer(pkg: Path, payload: bytes, *, seconds: float, threads: int) -> float:
    """Candidates/s of the loaded model's forward alone on a prebuilt 200-candidate batch, run by
    ``threads`` threads at once (as many as the server's score threads, 1 torch thread each)."""
    import torch

    from protos.seedrec.v1 import ranking_pb2 as pb
    from serving.scorer import LoadedModel, broadcast_user
    from serving.wire import request_to_inputs

    loaded = LoadedModel.load(pkg)
    inputs = request_to_inputs(pb.ScoreRequest.FromString(payload))
    user = loaded.transform.to_batch(loaded._user_table(inputs, inputs.domain, list(inputs.history or []), {}))
    cand_table = loaded._candidate_table(inputs, inputs.domain)
    sparse_mask, dense_mask = loaded._candidate_masks(cand_table.column_names)
    batch = broadcast_user(user, loaded.transform.to_batch(cand_table), sparse_from_cand=sparse_mask, dense_from_cand=dense_mask)
    counts = [0] * threads
    with torch.inference_mode():
        loaded.model(batch)
    t0 = time.perf_counter()

    def loop(k: int) -> None:
        with torch.inference_mode():
            while time.perf_counter() - t0 < seconds:
                loaded.model(batch)
                counts[k] += 1

    workers = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) * C / (time.perf_counter() - t0)


def _measure(root: Path, kind: str, payloads: list[bytes], *, quick: bool, seconds: float) -> dict[str, float]:
    from serving.configs import ServerConfig
    from serving.server import BackgroundServer

    pkg = _package(root, kind=kind, quick=quick)
    peer_cps = _forward_peer(pkg, payloads[0], seconds=min(seconds, 5.0), threads=2)
    cfg = ServerConfig(repository=str(root / "repo"), models=(kind,), score_threads=2, torch_threads=1)
    with BackgroundServer(cfg) as srv:
        sat = _drive(srv.address, payloads, mode="saturation", seconds=seconds, concurrency=2)
        rate = max(1.0, round(0.5 * sat["qps"], 1))
        fixed = _drive(srv.address, payloads, mode="fixed", seconds=seconds, rate=rate)
    return {
        "saturation_qps": sat["qps"],
        "saturation_p50_ms": sat["p50_ms"],
        "saturation_p99_ms": sat["p99_ms"],
        "fixed_rate_qps_target": rate,
        "fixed_rate_qps": fixed["qps"],
        "fixed_rate_p50_ms": fixed["p50_ms"],
        "fixed_rate_p99_ms": fixed["p99_ms"],
        "fixed_rate_p999_ms": fixed["p999_ms"],
        "errors": sat["errors"] + fixed["errors"],
        "served_candidates_per_s": sat["qps"] * C,
        "forward_ms_per_request": 2 * C / peer_cps * 1000.0,  # 2 threads at once
        "peer_candidates_per_s": peer_cps,
    }


def run(*, quick: bool = False) -> BenchResult:
    """Measures LMN (the headline) and DIN: the server at saturation and at a fixed rate, and the
    in-process forward peer of each."""
    import torch

    torch.set_num_threads(1)
    seconds = 2.0 if quick else 10.0
    payloads = _requests(64 if quick else 256, users=10_000, items=20_000, seed=0)
    with tempfile.TemporaryDirectory(prefix="seedrec-bench-serving-") as tmp:
        lmn = _measure(Path(tmp), "lmn", payloads, quick=quick, seconds=seconds)
        din = _measure(Path(tmp), "din", payloads, quick=quick, seconds=seconds)
    results: dict[str, Any] = {k: v for k, v in lmn.items() if k != "peer_candidates_per_s"}
    results.update({f"din_{k}": v for k, v in din.items() if k != "peer_candidates_per_s"})
    ratio = lmn["served_candidates_per_s"] / lmn["peer_candidates_per_s"]
    din_ratio = din["served_candidates_per_s"] / din["peer_candidates_per_s"]
    results["din_ratio"] = din_ratio
    return BenchResult(
        name="serving",
        params={"candidates": C, "history": T, "models": ["lmn", "din"], "lmn_n_sub": 64 if quick else 256, "lmn_k": 32,
                "lmn_d_value": 32, "score_threads": 2, "torch_threads": 1, "saturation_concurrency": 2,
                "fixed_rate": "0.5 x saturation", "seconds_per_phase": seconds, "quick": quick},
        results=results,
        peer={"served_candidates_per_s": lmn["peer_candidates_per_s"], "din_served_candidates_per_s": din["peer_candidates_per_s"],
              "note": "in-process forward of the same loaded model on a prebuilt 200-candidate batch, 2 threads"},
        ratio=ratio,
        notes=(f"targets: fixed-rate p99 ≤ 20 ms — LMN {lmn['fixed_rate_p99_ms']:.1f} ms at {lmn['fixed_rate_qps_target']:g} req/s, "
               f"DIN {din['fixed_rate_p99_ms']:.1f} ms at {din['fixed_rate_qps_target']:g} req/s; ratio ≥ 0.5 — "
               f"LMN {ratio:.2f}, DIN {din_ratio:.2f}. Forward alone: LMN {lmn['forward_ms_per_request']:.1f} ms, "
               f"DIN {din['forward_ms_per_request']:.1f} ms per request."),
    )
