"""The scoring server over real gRPC: scores, status codes, auth, health, reflection, metrics, deadlines."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from serving.client import AdminClient, RankingClient, ServingRpcError, build_score_request
from serving.scorer import LoadedModel, ScoreInputs
from serving.server import BackgroundServer
from serving.testing import toy_factory
from serving.wire import request_to_inputs

pytestmark = pytest.mark.integration
Code = grpc.StatusCode
TOKEN = "s3cret"  # the conftest server's admin token
ITEMS = list(range(0, 60, 3))
HISTORY = [{"item_id": i, "action": "click", "domain": "feed", "ts_ms": 1000 + i, "category_id": i % 10} for i in (4, 8, 15)]


def _rpc_error(fn: object, **kw: object) -> ServingRpcError:
    with pytest.raises(ServingRpcError) as e:
        fn(**kw)  # type: ignore[operator]  # a client method
    return e.value


def test_health_and_reflection(server: BackgroundServer) -> None:
    with RankingClient(server.address) as rc:
        assert rc.health() == "SERVING" and rc.health("seedrec.v1.RankingService") == "SERVING"
        services = set(ProtoReflectionDescriptorDatabase(rc._channel).get_services())
    assert {"seedrec.v1.RankingService", "seedrec.v1.ModelAdmin", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= services


def test_scores_match_the_in_process_scorer(server: BackgroundServer, packages: dict[str, Path]) -> None:
    kw = dict(user_id=3, domain="feed", item_ids=ITEMS, features={"device": "ios", "hour": 7},
              candidate_features={"price": np.linspace(5, 50, len(ITEMS)), "category_id": np.array(ITEMS) % 10},
              history=HISTORY, request_id="r-1")
    with RankingClient(server.address) as rc:
        got = rc.score(model="toy", **kw)  # type: ignore[arg-type]
    assert (got.model, got.version, got.arm, got.request_id) == ("toy", "1", "", "r-1")
    assert got.history_source == "request" and got.history_length == 3 and not got.memory_fallback
    offline = LoadedModel.load(packages["1"], factory=toy_factory)
    want = offline.score(request_to_inputs(build_score_request(**kw)))  # type: ignore[arg-type]
    for j, head in enumerate(want.heads):
        np.testing.assert_allclose(got.heads[head], want.scores[:, j], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("kw", "code", "needle"),
    [
        (dict(item_ids=[]), Code.INVALID_ARGUMENT, "`candidates.item_ids`"),
        (dict(domain="nowhere"), Code.INVALID_ARGUMENT, "`domain`"),
        (dict(domain=""), Code.INVALID_ARGUMENT, "`domain`"),
        (dict(candidate_features={"price": [float("nan")] * 3}), Code.INVALID_ARGUMENT, "`candidates.features[price]`"),
        (dict(features={"hour": float("inf")}), Code.INVALID_ARGUMENT, "`features[hour]`"),
        (dict(candidate_features={"price": [1.0]}), Code.INVALID_ARGUMENT, "has 1 values for 3 candidates"),
        (dict(model="nope"), Code.NOT_FOUND, "'nope' is not served"),
        (dict(version="42"), Code.NOT_FOUND, "version '42' is not loaded"),
    ],
)
def test_bad_requests_get_the_right_status(server: BackgroundServer, kw: dict[str, object], code: grpc.StatusCode, needle: str) -> None:
    base: dict[str, object] = dict(user_id=1, domain="feed", item_ids=[1, 2, 3])
    with RankingClient(server.address) as rc:
        err = _rpc_error(rc.score, **{**base, **kw})
        assert err.code == code and needle in err.details
        assert rc.score(user_id=1, domain="feed", item_ids=[1]).version  # the server is still fine


def test_too_many_candidates_is_invalid(server: BackgroundServer) -> None:
    with RankingClient(server.address) as rc:
        err = _rpc_error(rc.score, user_id=1, domain="feed", item_ids=np.arange(100_001))
    assert err.code == Code.INVALID_ARGUMENT and "at most 100000" in err.details


def test_deadlines_are_honoured(server: BackgroundServer) -> None:
    with RankingClient(server.address) as rc:
        err = _rpc_error(rc.score, user_id=1, domain="feed", item_ids=np.arange(20_000), timeout=0.001)
    assert err.code == Code.DEADLINE_EXCEEDED


def test_admin_calls_need_the_token(server: BackgroundServer) -> None:
    assert _rpc_error(AdminClient(server.address).list).code == Code.UNAUTHENTICATED
    assert _rpc_error(AdminClient(server.address, token="wrong").list).code == Code.PERMISSION_DENIED
    with AdminClient(server.address, token=TOKEN) as ac:
        (status,) = ac.list("toy")
    assert status.name == "toy" and status.is_default and "1" in status.versions
    with AdminClient(server.address, token=TOKEN) as ac:
        assert _rpc_error(ac.activate, name="toy", version="99").code == Code.NOT_FOUND
        assert _rpc_error(ac.rollback, name="nope").code == Code.NOT_FOUND


def test_metrics_endpoint(server: BackgroundServer) -> None:
    with RankingClient(server.address) as rc:
        rc.score(user_id=1, domain="feed", item_ids=[1, 2])
    assert server.server is not None and server.server.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=5).read().decode()
    for name in ("seedrec_serving_requests_total", "seedrec_serving_request_seconds_bucket", "seedrec_serving_model_version",
                 "seedrec_serving_errors_total", "seedrec_serving_candidates_total"):
        assert name in text
    assert 'seedrec_serving_model_version{model="toy",version="1"} 1.0' in text


def test_score_inputs_carry_the_deadline() -> None:
    req = build_score_request(user_id=1, domain="feed", item_ids=[1], history=[])
    inputs: ScoreInputs = request_to_inputs(req, deadline=123.0)
    assert inputs.deadline == 123.0 and inputs.history == []  # an empty history is "no history", not "read the store"
