"""``seedrec serve | push | score`` from the command line; SIGTERM stops the server gracefully."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seedrec.cli import main as seedrec_main
from seedrec.redis_server import free_port
from serving.client import RankingClient, ServingRpcError
from serving.server import BackgroundServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def test_serve_answers_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SEEDREC_LOG_LEVEL": "WARNING"}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "seedrec.cli", "serve", "--repository", str(tmp_path / "repo"),
                             "--port", str(port), "--token", "t", "--grace-s", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        with RankingClient(f"127.0.0.1:{port}", timeout_s=1.0) as rc:
            while True:
                try:
                    status = rc.health("seedrec.v1.RankingService")
                    break
                except ServingRpcError:
                    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                    assert time.monotonic() < deadline, "the server did not come up"
                    time.sleep(0.2)
            assert status == "NOT_SERVING"  # an empty repository: up, but no model to serve
            with pytest.raises(ServingRpcError) as e:
                rc.score(user_id=1, domain="feed", item_ids=[1])
            assert e.value.code.name == "NOT_FOUND" and "no model is loaded yet" in e.value.details
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_push_and_score_commands(server: BackgroundServer, packages: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert seedrec_main(["push", "--package", str(packages["2"]), "--server", server.address, "--token", "s3cret", "--activate"]) == 0
    size = sum(p.stat().st_size for p in packages["2"].rglob("*") if p.is_file())
    assert json.loads(capsys.readouterr().out) == {"name": "toy", "version": "2", "bytes": size, "activated": True}
    assert seedrec_main(["score", "--server", server.address, "--user", "3", "--domain", "feed", "--items", "4,5",
                         "--feature", "device=ios", "--feature", "hour=7"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == "2" and len(out["scores"]["purchase"]) == 2 and out["history_source"] == "none"

    bad = Path(shutil.copytree(packages["3"], tmp_path / "bad"))
    (bad / "model.safetensors").write_bytes(b"junk")
    assert seedrec_main(["push", "--package", str(bad), "--server", server.address, "--token", "s3cret"]) == 2
    assert "model.safetensors: sha256 mismatch" in capsys.readouterr().err
    assert seedrec_main(["push", "--package", str(packages["3"]), "--server", server.address, "--token", "nope"]) == 2
    assert "PERMISSION_DENIED" in capsys.readouterr().err
