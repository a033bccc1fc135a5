"""Shipping models to a running server: push, activate under load, corrupt packages, rollback, experiments."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos.seedrec.v1 import model_admin_pb2 as admin_pb
from serving.client import AdminClient, RankingClient, ServingRpcError
from serving.package import MANIFEST_FILE, sha256_file
from serving.server import BackgroundServer

pytestmark = pytest.mark.integration
Code = grpc.StatusCode
TOKEN = "s3cret"


class _Traffic:
    """A client thread scoring continuously; records every answer (send time, receive time, version)
    and every error."""

    def __init__(self, address: str) -> None:
        self.client = RankingClient(address, timeout_s=10.0)
        self.versions: list[str] = []
        self.calls: list[tuple[float, float, str]] = []
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        u = 0
        while not self._stop.is_set():
            try:
                sent = time.monotonic()
                r = self.client.score(user_id=u % 50, domain="feed", item_ids=list(range(30)), history=[])
                self.calls.append((sent, time.monotonic(), r.version))
                self.versions.append(r.version)
            except Exception as e:  # noqa: BLE001  every failure is a test failure, recorded
                self.errors.append(e)
            u += 1

    def __enter__(self) -> _Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.client.close()

    def answered(self, *, sent_after: float, received_before: float = float("inf")) -> set[str]:
        """Versions of the calls sent after one moment and answered before another."""
        return {v for s, r, v in self.calls if s > sent_after and r < received_before}

    def wait_for(self, n: int) -> None:
        start = len(self.versions)
        while len(self.versions) < start + n and not self.errors:
            threading.Event().wait(0.01)


@pytest.fixture(scope="module")
def admin(server: BackgroundServer) -> Iterator[AdminClient]:
    with AdminClient(server.address, token=TOKEN) as ac:
        yield ac


def _corrupt_copy(src: Path, dst: Path, how: str) -> Path:
    pkg = Path(shutil.copytree(src, dst))
    if how == "altered":
        (pkg / "vocab" / "item.json").write_text(json.dumps({"values": [1, 2, 3]}))  # manifest sha256 no longer matches
    elif how == "missing":
        (pkg / "vocab" / "user.json").unlink()
    return pkg


def test_push_and_activate_under_load_then_rollback(server: BackgroundServer, admin: AdminClient,
                                                    packages: dict[str, Path], tmp_path: Path) -> None:
    repo = Path(server.cfg.repository)
    with _Traffic(server.address) as traffic:
        traffic.wait_for(5)
        reply = admin.push(packages["2"], activate=False)  # installed and warmed up, not yet active
        assert (reply.name, reply.version, reply.activated) == ("toy", "2", False)
        traffic.wait_for(5)
        assert set(traffic.versions) == {"1"}

        status = admin.activate("toy", "2")
        t_activated = time.monotonic()
        assert status.active_version == "2" and list(status.history) == ["1"]
        traffic.wait_for(10)

        for how in ("altered", "missing"):  # refused, naming the file; v2 keeps serving
            bad = _corrupt_copy(packages["3"], tmp_path / how, how)
            with pytest.raises(ServingRpcError) as e:
                admin.push(bad, activate=True)
            assert e.value.code == Code.INVALID_ARGUMENT
            assert ("vocab/item.json: sha256 mismatch" if how == "altered" else "vocab/user.json: missing") in e.value.details
        traffic.wait_for(10)

        t_rollback = time.monotonic()
        status = admin.rollback("toy")
        t_rolled_back = time.monotonic()
        assert status.active_version == "1"
        traffic.wait_for(10)

    assert traffic.errors == []
    assert set(traffic.versions) == {"1", "2"}
    assert traffic.answered(sent_after=t_activated, received_before=t_rollback) == {"2"}  # only v2 after Activate
    assert traffic.answered(sent_after=t_rolled_back) == {"1"}
    assert sorted(p.name for p in (repo / "toy").iterdir() if p.is_dir()) == ["1", "2"]  # nothing half-applied
    assert not any((repo / ".staging").iterdir())


def test_a_transfer_that_does_not_match_its_header_is_refused(admin: AdminClient, packages: dict[str, Path]) -> None:
    pkg = packages["3"]
    files = sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file())
    header = admin_pb.PushHeader(name="toy", version="3", files=[
        admin_pb.PackageFile(path=f, size=(pkg / f).stat().st_size, sha256=sha256_file(pkg / f)) for f in files])

    def stream(tamper: str) -> Iterator[admin_pb.PushChunk]:
        yield admin_pb.PushChunk(header=header)
        for f in files:
            data = (pkg / f).read_bytes()
            if f == tamper:
                data = data[:-1] + bytes([data[-1] ^ 1])  # one flipped bit in transit
            yield admin_pb.PushChunk(chunk=admin_pb.FileChunk(path=f, offset=0, data=data))

    with pytest.raises(ServingRpcError) as e:
        admin.push_stream(stream("model.safetensors"))
    assert e.value.code == Code.INVALID_ARGUMENT and "model.safetensors: sha256 mismatch" in e.value.details
    with pytest.raises(ServingRpcError) as e:
        admin.push_stream(iter([admin_pb.PushChunk(chunk=admin_pb.FileChunk(path=MANIFEST_FILE, data=b"{}"))]))
    assert e.value.code == Code.INVALID_ARGUMENT and "header" in e.value.details


def test_a_duplicate_version_is_refused(admin: AdminClient, packages: dict[str, Path]) -> None:
    with pytest.raises(ServingRpcError) as e:
        admin.push(packages["1"])
    assert e.value.code == Code.ALREADY_EXISTS


def test_experiment_arms_split_users_stably(server: BackgroundServer, admin: AdminClient) -> None:
    status = admin.set_experiment("toy", [("control", "1", 0.5), ("treatment", "2", 0.5)], salt="exp-1", name="t1")
    assert [a.name for a in status.experiment.arms] == ["control", "treatment"]
    with RankingClient(server.address) as rc:
        seen = {u: (r.arm, r.version) for u in range(40) for r in [rc.score(user_id=u, domain="feed", item_ids=[1, 2])]}
        again = {u: (r.arm, r.version) for u in range(40) for r in [rc.score(user_id=u, domain="feed", item_ids=[1, 2])]}
        assert seen == again
        assert set(seen.values()) == {("control", "1"), ("treatment", "2")}
        assert 8 < Counter(a for a, _ in seen.values())["control"] < 32
        with pytest.raises(ServingRpcError) as e:
            admin.set_experiment("toy", [("a", "1", 0.5)], salt="s")
        assert e.value.code == Code.INVALID_ARGUMENT and "sum to 0.5" in e.value.details
        admin.set_experiment("toy", [], salt="")
        assert {rc.score(user_id=u, domain="feed", item_ids=[1]).arm for u in range(10)} == {""}


def test_a_package_that_cannot_load_is_refused_and_nothing_changes(server: BackgroundServer, admin: AdminClient,
                                                                   packages: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from serving.package import read_manifest, write_manifest

    pkg = Path(shutil.copytree(packages["3"], tmp_path / "nan"))
    state = load_file(str(pkg / "model.safetensors"))
    state["mlp.2.bias"] = torch.full_like(state["mlp.2.bias"], float("nan"))  # checksums fine, scores NaN
    save_file(state, str(pkg / "model.safetensors"))
    m = read_manifest(pkg)
    write_manifest(pkg, name=m.name, version=m.version, kind=m.kind, model_config=m.model_config, feature_spec=m.feature_spec)
    before = admin.list("toy")[0]
    with pytest.raises(ServingRpcError) as e:
        admin.push(pkg, activate=True)
    assert e.value.code == Code.FAILED_PRECONDITION and "warm-up" in e.value.details
    after = admin.list("toy")[0]
    assert after.active_version == before.active_version and "3" not in after.versions
    with RankingClient(server.address) as rc:
        assert rc.score(user_id=1, domain="feed", item_ids=[1]).version == before.active_version
