"""Proto messages ↔ the plain objects of the scorer and manager (pure functions, no I/O).

Request validation that needs no model happens here (the field is named in the error); checks
that need the model's spec (domain, feature types, NaN) happen in the scorer.

Example:
    >>> from protos.seedrec.v1 import ranking_pb2 as pb
    >>> req = pb.ScoreRequest(user_id=7, domain="feed", candidates=pb.Candidates(item_ids=[1, 2]))
    >>> request_to_inputs(req).item_ids.tolist()
    [1, 2]
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from feature_pipeline.online_store import Behaviour
from protos.seedrec.v1 import model_admin_pb2 as admin_pb
from protos.seedrec.v1 import ranking_pb2 as pb
from seedrec.errors import ConfigError
from serving.configs import Arm, Experiment
from serving.errors import InvalidRequestError
from serving.manager import ModelStatus
from serving.scorer import HistorySource, ScoreInputs, ScoreOutputs

__all__ = [
    "request_to_inputs",
    "outputs_to_response",
    "status_to_proto",
    "experiment_from_proto",
    "experiment_to_proto",
    "HISTORY_SOURCE_TO_PROTO",
]

HISTORY_SOURCE_TO_PROTO: dict[HistorySource, int] = {
    HistorySource.REQUEST: pb.HISTORY_SOURCE_REQUEST,
    HistorySource.ONLINE_STORE: pb.HISTORY_SOURCE_ONLINE_STORE,
    HistorySource.NONE: pb.HISTORY_SOURCE_NONE,
    HistorySource.STORE_UNAVAILABLE: pb.HISTORY_SOURCE_STORE_UNAVAILABLE,
}


def _feature_value(name: str, v: pb.FeatureValue) -> Any:
    kind = v.WhichOneof("kind")
    if kind is None:
        raise InvalidRequestError(f"features[{name}]", "has no value; set int_value, float_value or string_value")
    value = getattr(v, kind)
    if kind == "float_value" and not math.isfinite(value):
        raise InvalidRequestError(f"features[{name}]", f"is {value}; send a finite number (omit the feature if unknown)")
    return value


def _column(name: str, col: pb.FeatureColumn) -> np.ndarray | list[str]:
    set_lists = [f for f in ("int_values", "float_values", "string_values") if len(getattr(col, f))]
    if len(set_lists) > 1:
        raise InvalidRequestError(f"candidates.features[{name}]", f"sets {set_lists}; set exactly one list")
    if not set_lists:
        return np.zeros(0, np.int64)
    if set_lists[0] == "int_values":
        return np.fromiter(col.int_values, np.int64, len(col.int_values))
    if set_lists[0] == "float_values":
        arr = np.fromiter(col.float_values, np.float64, len(col.float_values))
        if not np.isfinite(arr).all():
            bad = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise InvalidRequestError(f"candidates.features[{name}]", f"value {bad} is {arr[bad]}; send finite numbers")
        return arr
    return list(col.string_values)


def request_to_inputs(req: pb.ScoreRequest, *, deadline: float | None = None) -> ScoreInputs:
    """Converts a ScoreRequest; checks what needs no model.

    Args:
        req: the request.
        deadline: the call's absolute ``time.monotonic()`` deadline.

    Raises:
        InvalidRequestError: naming the field.
    """
    if not req.domain:
        raise InvalidRequestError("domain", "is empty; name the domain (e.g. 'feed') or give its index")
    ids = np.fromiter(req.candidates.item_ids, np.int64, len(req.candidates.item_ids))
    if ids.size == 0:
        raise InvalidRequestError("candidates.item_ids", "is empty; send at least one candidate")
    features = {name: _feature_value(name, v) for name, v in req.features.items()}
    cand = {name: _column(name, col) for name, col in req.candidates.features.items()}
    history = None
    if req.HasField("history"):
        history = [
            Behaviour(ts_ms=b.ts_ms, item_id=b.item_id, category_id=b.category_id if b.HasField("category_id") else None,
                      action=b.action, domain=b.domain)
            for b in req.history.behaviours
        ]
    return ScoreInputs(user_id=req.user_id, domain=req.domain, item_ids=ids, features=features,
                       candidate_features=cand, history=history, deadline=deadline)


def outputs_to_response(out: ScoreOutputs, *, model: str, version: str, arm: str, request_id: str) -> pb.ScoreResponse:
    """Builds the ScoreResponse (one HeadScores per head, aligned with the candidates)."""
    resp = pb.ScoreResponse(model=model, version=version, arm=arm, request_id=request_id,
                            memory_fallback=out.memory_fallback,
                            history_source=HISTORY_SOURCE_TO_PROTO[out.history_source],  # type: ignore[arg-type]  # proto enum ints
                            history_length=out.history_length)
    scores = np.ascontiguousarray(out.scores.T, dtype=np.float32)  # (H, C)
    for j, head in enumerate(out.heads):
        hs = resp.heads.add(head=head)
        hs.scores.extend(scores[j].tolist())
    return resp


def deadline_of(time_remaining: float | None) -> float | None:
    """``context.time_remaining()`` → an absolute ``time.monotonic()`` deadline."""
    return None if time_remaining is None else time.monotonic() + time_remaining


def experiment_from_proto(exp: admin_pb.Experiment) -> Experiment | None:
    """An Experiment proto → the config (``None`` when it has no arms).

    Raises:
        InvalidRequestError: a bad arm, share or salt (the field is named).
    """
    if not exp.arms:
        return None
    try:
        return Experiment(salt=exp.salt, name=exp.name,
                          arms=tuple(Arm(name=a.name, version=a.version, share=a.share) for a in exp.arms))
    except ConfigError as e:
        raise InvalidRequestError("experiment.arms", str(e)) from None


def experiment_to_proto(exp: Experiment | None) -> admin_pb.Experiment | None:
    if exp is None:
        return None
    return admin_pb.Experiment(name=exp.name, salt=exp.salt,
                               arms=[admin_pb.Arm(name=a.name, version=a.version, share=a.share) for a in exp.arms])


def status_to_proto(s: ModelStatus) -> admin_pb.ModelStatus:
    msg = admin_pb.ModelStatus(name=s.name, active_version=s.active_version, versions=s.versions,
                               loaded_versions=s.loaded_versions, history=s.history, is_default=s.is_default)
    exp = experiment_to_proto(s.experiment)
    if exp is not None:
        msg.experiment.CopyFrom(exp)
    return msg
