"""A loaded model version: request (raw ids) → the training transform → forward → scores.

Loading (:meth:`LoadedModel.load`) checks before it trusts: the manifest and the sha256 of every
file (:func:`serving.package.verify_files`), safetensors only, a valid feature spec equal to the
manifest's, vocabularies that fit the tables, a state dict whose keys and shapes match the built
model exactly; then it warms up on synthetic candidates. Any failure raises and leaves the caller's
current model untouched.

Scoring (:meth:`LoadedModel.score`) builds Arrow tables of raw ids and runs the SAME
:meth:`FeatureTransform.to_batch` as training, split so that user-side work happens once::

    user table (1 row)       user_id, domain, user/context features, hist_* lists  ─► to_batch ─┐
    candidate table (C rows) item_id, per-candidate features (category_id, price), domain ─► to_batch ─┤
                                                                                                 ▼
    Batch for C samples: candidate-side keys from the candidate batch; user-side keys, sequences
    and dense columns broadcast from the 1-row batch (tensor repeats, no per-row Python)

``to_batch`` maps each row independently, so this equals ``to_batch`` on the C-row table with the
user columns repeated (``tests/unit/serving/test_scorer.py`` checks it). The history comes from the
request or, when the request has none, from the online feature store (read once per request).

LMN memory hook: a model holding a :class:`recsys.modules.memory.ProductKeyMemory` gets that
module's ``forward`` replaced at load time by one that computes the slot ids and softmax weights
with the module's own query norm and sub-keys (``pkm_topk``) and asks a
:class:`serving.memory.MemoryBackend` for ``Σ_k w_k V[i_k]`` (the memory service's
``ReadWeighted``, or the packaged table). The models code is not changed.
"""

from __future__ import annotations

import json
import logging
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, unique
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torchrec import KeyedJaggedTensor

from feature_pipeline.batch import Batch
from feature_pipeline.online_store import Behaviour
from feature_pipeline.spec import FeatureKind, FeatureSpec
from feature_pipeline.transform import FeatureTransform, Vocabulary
from seedrec.errors import PackageError, SeedrecError
from serving import memory as mem
from serving.configs import ScorerConfig
from serving.errors import InvalidRequestError, LoadError
from serving.package import (
    MANIFEST_FILE,
    MEMORY_FILE,
    MEMORY_TENSOR,
    MODEL_FILE,
    SPEC_FILE,
    Manifest,
    verify_files,
)

__all__ = [
    "HistorySource",
    "ScoreInputs",
    "ScoreOutputs",
    "ModelFactory",
    "default_factory",
    "LoadedModel",
    "CANDIDATE_COLUMNS",
    "HISTORY_COLUMNS",
]

logger = logging.getLogger(__name__)

ModelFactory = Callable[[str, Mapping[str, Any], FeatureSpec], nn.Module]
"""(kind, model config mapping, spec) → an unsharded model on CPU."""

#: Sample columns that are per candidate even when the request gives no column for them.
CANDIDATE_COLUMNS: tuple[str, ...] = ("item_id", "category_id", "price")
#: History list column → the Behaviour field it comes from.
HISTORY_COLUMNS: dict[str, str] = {
    "hist_item_id": "item_id",
    "hist_category_id": "category_id",
    "hist_domain": "domain",
    "hist_action": "action",
    "hist_ts": "ts_ms",
}
_FORWARD_CHUNK = 4096  # candidates per forward: bounds the (C, T, D) activations of huge requests


@unique
class HistorySource(str, Enum):  # noqa: UP042  (STYLE §3 asks for str, Enum; StrEnum changes str())
    """Where a request's history came from (mirrors the proto enum)."""

    REQUEST = "request"
    ONLINE_STORE = "online_store"
    NONE = "none"
    STORE_UNAVAILABLE = "store_unavailable"


@dataclass
class ScoreInputs:
    """One scoring request in plain Python / numpy (the wire layer converts from the proto).

    Attributes:
        user_id: raw user id.
        domain: domain name (or its index as decimal text).
        item_ids: (C,) int64 raw candidate ids.
        features: user/context feature name → value (int, float or str).
        candidate_features: feature name → C values (ints, floats or strings).
        history: the user's behaviours, oldest first; ``None`` = read the online store.
        deadline: absolute ``time.monotonic()`` deadline, or ``None``.
    """

    user_id: int
    domain: str
    item_ids: np.ndarray
    features: dict[str, Any] = field(default_factory=dict)
    candidate_features: dict[str, Sequence[Any] | np.ndarray] = field(default_factory=dict)
    history: Sequence[Behaviour] | None = None
    deadline: float | None = None


@dataclass
class ScoreOutputs:
    """Scores of one request.

    Attributes:
        scores: (C, H) float32 probabilities, heads in ``heads`` order.
        heads: label names.
        memory_fallback: an LMN memory read answered from the fallback.
        history_source: where the history came from.
        history_length: behaviours used (after the ``seq_len`` cut).
    """

    scores: np.ndarray
    heads: tuple[str, ...]
    memory_fallback: bool
    history_source: HistorySource
    history_length: int


class HistoryProvider:
    """What the scorer needs from the online store (``serving.feature_store.FeatureStore``)."""

    def read(self, user_id: int, *, limit: int, deadline: float | None) -> tuple[Any, HistorySource]:
        """Returns (``UserFeatures`` or None, source)."""
        raise NotImplementedError


def default_factory(kind: str, config: Mapping[str, Any], spec: FeatureSpec) -> nn.Module:
    """Builds a real recsys model (din / ads / lmn) with ``recsys.models.registry.build_model``."""
    from recsys.configs import model_config_from_dict
    from recsys.models.registry import build_model

    cfg = model_config_from_dict({**dict(config), "kind": kind})
    return build_model(cfg, spec, device="cpu")


# ==== the LMN memory hook ======================================================================
def _memory_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    try:
        from recsys.modules.memory import ProductKeyMemory
    except ImportError:  # pragma: no cover  (the models package is part of the distribution)
        return []
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ProductKeyMemory)]


def install_memory_backend(model: nn.Module, backend: mem.MemoryBackend) -> int:
    """Routes every product-key memory read of ``model`` through ``backend``.

    The module keeps its query norm and sub-keys; only the value lookup + weighted sum moves.

    Returns:
        The number of memory modules patched.
    """
    from recsys.modules.memory import MemoryReadout, pkm_topk

    def forward(self: nn.Module, query: torch.Tensor) -> MemoryReadout:
        # Queries repeat within a request (the user's history queries are the same for every
        # candidate; padded positions are all alike), so read each distinct query once.
        uq, inverse = unique_rows(query)  # (U, d_k), (N,)
        q = self.query_norm(uq)  # (U, d_k); eval-mode norms are per row, so dedup is exact
        scores, idx = pkm_topk(q, self.keys1, self.keys2, self.k)  # (U, K), (U, K)
        w = torch.softmax(scores, dim=-1)  # (U, K)
        read = backend.read_weighted(idx, w)  # (U, d_v)
        return MemoryReadout(values=read[inverse], indices=idx[inverse], weights=w[inverse])  # (N, ·)

    found = _memory_modules(model)
    for _, module in found:
        module.forward = types.MethodType(forward, module)  # type: ignore[method-assign]  # instance-level hook
    return len(found)


_ROW_HASH = torch.randint(1, 2**62, (4096,), generator=torch.Generator().manual_seed(0)) | 1  # odd multipliers


def unique_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows of a 2-D float tensor and the index of each row among them (exact).

    ``torch.unique(dim=0)`` compares rows one by one (tens of ms for a few thousand rows); here each
    row's bits are hashed to one int64, the 1-D keys are uniqued, and the result is checked to
    rebuild ``x`` exactly; on a hash collision (or NaN) the rows are returned undeduplicated.

    Returns:
        ``(rows (U, D), inverse (N,))`` with ``rows[inverse] == x``.

    Example:
        >>> rows, inv = unique_rows(torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]]))
        >>> rows.shape[0], torch.equal(rows[inv], torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]]))
        (2, True)
    """
    N, D = x.shape
    if D > _ROW_HASH.numel() or x.dtype != torch.float32:
        return x, torch.arange(N)
    bits = x.contiguous().view(torch.int32).to(torch.int64)  # (N, D) exact bit patterns
    keys = (bits * _ROW_HASH[:D]).sum(dim=1)  # (N,) wrapping int64 hash
    uniq, inverse = torch.unique(keys, return_inverse=True)  # (U,), (N,)
    first = torch.empty(len(uniq), dtype=torch.long).scatter_(0, inverse, torch.arange(N))  # a representative row each
    rows = x[first]  # (U, D)
    if not torch.equal(rows[inverse], x):  # a collision: correctness first
        return x, torch.arange(N)
    return rows, inverse


def _memory_param(model: nn.Module) -> str | None:
    """State-dict key of the LMN value table, if the model has one."""
    found = _memory_modules(model)
    if not found:
        return None
    if len(found) > 1:
        raise LoadError(f"the model has {len(found)} product-key memories ({[n for n, _ in found]}); serving supports one")
    name, module = found[0]
    keys = [k for k in module.state_dict() if k.endswith(".weight") and "values" in k]
    if len(keys) != 1:
        raise LoadError(f"memory module `{name}`: cannot find its value table among {list(module.state_dict())}")
    return f"{name}.{keys[0]}" if name else keys[0]


# ==== the loaded model =========================================================================
class LoadedModel:
    """One package version in memory, ready to score.

    Build it with :meth:`load`; :meth:`score` is thread-safe (no state is written while scoring).

    Example:
        >>> m = LoadedModel.load("repo/lmn/3")                                    # doctest: +SKIP
        >>> out = m.score(ScoreInputs(user_id=7, domain="feed", item_ids=np.array([1, 2, 3]), history=[]))  # doctest: +SKIP
        >>> out.scores.shape, out.heads                                             # doctest: +SKIP
        ((3, 2), ('click', 'purchase'))
    """

    def __init__(
        self,
        *,
        manifest: Manifest,
        path: Path,
        model: nn.Module,
        transform: FeatureTransform,
        config: ScorerConfig,
        memory_backend: mem.MemoryBackend | None,
    ) -> None:
        self.manifest = manifest
        self.path = path
        self.model = model
        self.transform = transform
        self.config = config
        self.memory_backend = memory_backend
        self.spec = transform.spec
        self.heads = tuple(self.spec.label_names)
        self.loaded_at = time.time()
        history_actions = (self.spec.stats.get("config") or {}).get("history_actions")
        self._actions = set(history_actions) if history_actions else None
        self._user_columns: dict[str, str] = dict(self.spec.stats.get("user_columns") or {})
        self._seq_sources = {self.spec.feature(k).source for k in self.spec.sequence_keys}
        self._col_types = self._column_types()

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def __repr__(self) -> str:
        return f"LoadedModel({self.name}/{self.version}, kind={self.manifest.kind})"

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        config: ScorerConfig | None = None,
        factory: ModelFactory | None = None,
        memory: Callable[[Manifest, torch.Tensor | None], mem.MemoryBackend] | None = None,
        expect_name: str | None = None,
        expect_version: str | None = None,
    ) -> LoadedModel:
        """Verifies, builds and warms up one package.

        Args:
            path: the package folder.
            config: request limits and warm-up; defaults to ``ScorerConfig()``.
            factory: builds the model from (kind, config, spec); defaults to :func:`default_factory`.
            memory: for LMN packages, (manifest, packaged value table) → the backend the model's
                memory reads go to; ``None`` reads the packaged table in process.
            expect_name: the name the manifest must declare.
            expect_version: the version the manifest must declare.

        Raises:
            PackageError: a file is missing, unlisted, altered or not JSON/safetensors.
            LoadError: the spec, vocabularies, model or warm-up fail.
        """
        path = Path(path)
        config = config or ScorerConfig()
        factory = factory or default_factory
        manifest = verify_files(path, expect_name=expect_name, expect_version=expect_version)
        try:
            spec = FeatureSpec.from_json((path / SPEC_FILE).read_text(), origin=str(path / SPEC_FILE))
            if FeatureSpec.from_json(json.dumps(manifest.feature_spec), origin="manifest.json feature_spec") != spec:
                raise LoadError(f"{path / SPEC_FILE}: differs from the feature spec in manifest.json")
            vocabs = {t.name: Vocabulary.load(path / t.vocab) for t in spec.tables if t.vocab is not None}
            transform = FeatureTransform(spec, vocabs)
        except SeedrecError as e:
            if isinstance(e, (LoadError, PackageError)):
                raise
            raise LoadError(f"{path}: {e}") from None
        try:
            model = factory(manifest.kind, manifest.model_config, spec)
        except SeedrecError as e:
            raise LoadError(f"{path}: cannot build a {manifest.kind!r} model from the manifest ({e})") from None
        except (KeyError, ValueError, TypeError, ImportError) as e:
            raise LoadError(f"{path}: cannot build a {manifest.kind!r} model ({type(e).__name__}: {e})") from None
        model.eval()
        memory_param = _memory_param(model)
        state = _read_safetensors(path / MODEL_FILE)
        values = None
        if memory_param is not None:
            if manifest.memory is None:
                raise PackageError(f"{path / MANIFEST_FILE}: the {manifest.kind!r} model has a memory but the manifest describes none")
            values = _read_safetensors(path / MEMORY_FILE).get(MEMORY_TENSOR)
            if values is None:
                raise PackageError(f"{path / MEMORY_FILE}: no tensor {MEMORY_TENSOR!r}")
            if memory_param not in state:
                state[memory_param] = values  # the value table travels in memory.safetensors only
        _load_state(model, state, origin=path / MODEL_FILE)
        backend: mem.MemoryBackend | None = None
        if memory_param is not None:
            assert values is not None  # read above
            backend = memory(manifest, values) if memory is not None else mem.LocalMemory(values)
            install_memory_backend(model, backend)
        loaded = cls(manifest=manifest, path=path, model=model, transform=transform, config=config, memory_backend=backend)
        loaded.warm_up()
        return loaded

    def warm_up(self) -> None:
        """Scores synthetic candidates ``warmup_requests`` times; checks shapes and finiteness.

        Raises:
            LoadError: a warm-up call failed or returned non-finite scores.
        """
        inputs = self._synthetic_inputs(min(self.config.warmup_candidates, self.config.max_candidates))
        for _ in range(self.config.warmup_requests):
            try:
                out = self.score(inputs)
            except Exception as e:  # noqa: BLE001  any failure here means the model cannot serve
                raise LoadError(f"{self.path}: warm-up failed ({type(e).__name__}: {e})") from e
            C = len(inputs.item_ids)
            if out.scores.shape != (C, len(self.heads)) or not np.isfinite(out.scores).all():
                raise LoadError(f"{self.path}: warm-up gave scores of shape {out.scores.shape} (expected {(C, len(self.heads))}) or non-finite values")

    def _synthetic_inputs(self, n: int) -> ScoreInputs:
        items = self.transform.vocabs.get(self.spec.feature("item_id").table or "") if "item_id" in self.spec.sparse_keys else None
        ids = [int(v) for v in items.values[:n]] if isinstance(items, Vocabulary) and items.dtype == "int64" else []
        ids = (ids + list(range(n)))[:n]
        actions = self.transform.vocabs.get("action")
        action = str(actions.values[0]) if isinstance(actions, Vocabulary) and len(actions) else "click"
        domain = self.spec.domains[0] if self.spec.domains else ""
        history = [Behaviour(ts_ms=1000 * i, item_id=ids[i % len(ids)], category_id=None, action=action, domain=domain) for i in range(3)]
        return ScoreInputs(user_id=0, domain=domain, item_ids=np.asarray(ids, np.int64), history=history)

    # ---- scoring ---------------------------------------------------------------------------
    def score(self, inputs: ScoreInputs, *, store: HistoryProvider | None = None) -> ScoreOutputs:
        """Scores the candidates of one request.

        Args:
            inputs: the request.
            store: the online feature store, read when ``inputs.history`` is None.

        Raises:
            InvalidRequestError: naming the bad field (no candidates, more than ``max_candidates``,
                unknown domain, NaN, ...).
        """
        C = len(inputs.item_ids)
        if C == 0:
            raise InvalidRequestError("candidates.item_ids", "is empty; send at least one candidate")
        if C > self.config.max_candidates:
            raise InvalidRequestError("candidates.item_ids", f"{C} candidates; this server takes at most {self.config.max_candidates}")
        domain = self._domain(inputs.domain)
        history, attributes, source = self._history(inputs, store)
        user_table = self._user_table(inputs, domain, history, attributes)
        cand_table = self._candidate_table(inputs, domain)
        mem.begin_request(inputs.deadline)
        user_batch = self.transform.to_batch(user_table)
        outs: list[torch.Tensor] = []
        with torch.inference_mode():
            for lo in range(0, C, _FORWARD_CHUNK):
                chunk = cand_table.slice(lo, _FORWARD_CHUNK)
                sparse_mask, dense_mask = self._candidate_masks(chunk.column_names)
                batch = broadcast_user(user_batch, self.transform.to_batch(chunk), sparse_from_cand=sparse_mask, dense_from_cand=dense_mask)
                logits = self.model(batch).logits  # (c, H)
                outs.append(torch.sigmoid(logits.float()))
        scores = torch.cat(outs).numpy()  # (C, H)
        return ScoreOutputs(
            scores=scores,
            heads=self.heads,
            memory_fallback=mem.fell_back(),
            history_source=source,
            history_length=min(len(history), self.spec.seq_len),
        )

    def _domain(self, domain: str) -> str:
        domains = self.spec.domains
        if domain in domains:
            return domain
        if domain.isdigit() and int(domain) < len(domains):
            return domains[int(domain)]
        raise InvalidRequestError("domain", f"{domain!r} is not a domain of model {self.name}; use one of {list(domains)} (or its index)")

    def _history(self, inputs: ScoreInputs, store: HistoryProvider | None) -> tuple[list[Behaviour], dict[str, Any], HistorySource]:
        attributes: dict[str, Any] = {}
        if inputs.history is not None:
            history, source = list(inputs.history), HistorySource.REQUEST
            if len(history) > self.config.max_history:
                raise InvalidRequestError("history.behaviours", f"{len(history)} behaviours; at most {self.config.max_history}")
        elif store is None:
            history, source = [], HistorySource.NONE
        else:
            limit = 4 * self.spec.seq_len if self._actions else self.spec.seq_len
            user, source = store.read(inputs.user_id, limit=limit, deadline=inputs.deadline)
            history = list(user.history) if user is not None else []
            attributes = dict(user.attributes) if user is not None else {}
        if self._actions is not None:
            history = [b for b in history if b.action in self._actions]  # as the sample builder's `history_actions`
        return history, attributes, source

    def _column_types(self) -> dict[str, pa.DataType]:
        types_: dict[str, pa.DataType] = {}
        for f in self.spec.features:
            if f.kind in (FeatureKind.SPARSE, FeatureKind.DOMAIN):
                v = self.transform.vocabs[f.table or ""]
                types_[f.source] = pa.string() if isinstance(v, Vocabulary) and v.dtype == "string" else pa.int64()
            elif f.kind is FeatureKind.DENSE:
                types_[f.source] = pa.float64()
        return types_

    def _typed(self, name: str, values: Sequence[Any] | np.ndarray, where: str) -> pa.Array:
        t = self._col_types[name]
        arr = np.asarray(values) if not isinstance(values, np.ndarray) else values
        if pa.types.is_string(t):
            if arr.dtype.kind not in "UO":
                raise InvalidRequestError(where, f"expects strings (the vocabulary of `{name}` holds strings), got {arr.dtype}")
            return pa.array([str(v) for v in arr.tolist()], pa.string())
        if pa.types.is_int64(t):
            if arr.dtype.kind not in "iub":
                raise InvalidRequestError(where, f"expects integer ids, got {arr.dtype}")
            return pa.array(arr.astype(np.int64))
        if arr.dtype.kind not in "iuf":
            raise InvalidRequestError(where, f"expects numbers, got {arr.dtype}")
        f = arr.astype(np.float64)
        if not np.isfinite(f).all():
            raise InvalidRequestError(where, "holds NaN or infinity; send finite numbers (omit the feature if unknown)")
        return pa.array(f)

    def _user_table(self, inputs: ScoreInputs, domain: str, history: list[Behaviour], attributes: dict[str, Any]) -> pa.Table:
        cols: dict[str, pa.Array] = {
            "user_id": self._typed("user_id", [inputs.user_id], "user_id") if "user_id" in self._col_types else pa.array([inputs.user_id]),
            "domain": pa.array([domain], pa.string()),
        }
        values: dict[str, Any] = {}
        for col, src in self._user_columns.items():  # attributes from the store, request features win
            if src in attributes:
                values[col] = attributes[src]
        values.update(inputs.features)
        for name, value in values.items():
            if name in self._col_types and name not in cols and name not in CANDIDATE_COLUMNS:
                cols[name] = self._typed(name, [value], f"features[{name}]")
        tail = history[-self.spec.seq_len :]
        for col, attr in HISTORY_COLUMNS.items():
            if col not in self._seq_sources:
                continue
            vals = [getattr(b, attr) for b in tail]
            t = pa.string() if attr in ("domain", "action") else pa.int64()
            cols[col] = pa.array([vals], pa.list_(t))
        return pa.table(cols)

    def _candidate_table(self, inputs: ScoreInputs, domain: str) -> pa.Table:
        C = len(inputs.item_ids)
        ids = np.asarray(inputs.item_ids)
        if ids.dtype.kind not in "iu":
            raise InvalidRequestError("candidates.item_ids", f"expects integer ids, got {ids.dtype}")
        cols: dict[str, pa.Array] = {"item_id": pa.array(ids.astype(np.int64, copy=False))}
        for name, values in inputs.candidate_features.items():
            where = f"candidates.features[{name}]"
            if len(values) != C:
                raise InvalidRequestError(where, f"has {len(values)} values for {C} candidates")
            if name in self._col_types and name not in ("item_id", "domain"):
                cols[name] = self._typed(name, values, where)
        cols["domain"] = pa.array(np.full(C, domain, dtype=object), pa.string())
        return pa.table(cols)

    def _candidate_masks(self, columns: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Which sparse keys / dense columns are candidate-side for a table with ``columns``."""
        cand = set(columns) | set(CANDIDATE_COLUMNS)
        sparse = [f.source in cand or f.kind is FeatureKind.DOMAIN for f in (self.spec.feature(k) for k in self.spec.sparse_keys)]
        dense = [f.source in cand for f in self.spec.of_kind(FeatureKind.DENSE)]
        return torch.tensor(sparse, dtype=torch.bool), torch.tensor(dense, dtype=torch.bool)


# ==== broadcasting the user side ================================================================
def broadcast_user(user: Batch, cand: Batch, *, sparse_from_cand: torch.Tensor, dense_from_cand: torch.Tensor) -> Batch:
    """Combines a 1-sample user batch with a C-sample candidate batch into one C-sample batch.

    Sparse keys and dense columns flagged as candidate-side come from ``cand``; every other sparse
    key, every sequence and the remaining dense columns are repeated from ``user``.

    Args:
        user: to_batch of the 1-row user table.
        cand: to_batch of the C-row candidate table (no history columns).
        sparse_from_cand: (F,) bool per key of ``spec.sparse_keys`` (the domain is candidate-side).
        dense_from_cand: (F_dense,) bool per dense column.

    Returns:
        The batch ``to_batch`` would give for the C-row table with the user columns repeated.
    """
    C = cand.batch_size
    keys = cand.sparse.keys()
    F = len(keys)
    u_sp = user.sparse.values().view(F, 1)  # (F, 1): every sparse length is 1
    c_sp = cand.sparse.values().view(F, C)  # (F, C)
    sp_vals = torch.where(sparse_from_cand[:, None], c_sp, u_sp.expand(F, C))  # (F, C)
    sparse = KeyedJaggedTensor(keys=keys, values=sp_vals.reshape(-1), lengths=torch.ones(F * C, dtype=torch.int32))

    lens = user.sequence.lengths()  # (S,): one sample per key
    per_key = torch.split(user.sequence.values(), lens.tolist())
    sequence = KeyedJaggedTensor(
        keys=user.sequence.keys(),
        values=torch.cat([v.repeat(C) for v in per_key]) if per_key else user.sequence.values(),  # (S·C·L,)
        lengths=lens.repeat_interleave(C).to(torch.int32),  # (S·C,)
    )
    dense = torch.where(dense_from_cand[None, :], cand.dense, user.dense.expand_as(cand.dense))  # (C, F_dense)
    return Batch(
        sparse=sparse,
        sequence=sequence,
        dense=dense,
        labels=cand.labels,
        domain=cand.domain,
        user=user.user.expand(C).contiguous(),
    )


# ==== file helpers ==============================================================================
def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Reads a safetensors file (never pickle); a malformed one raises PackageError naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:  # parses the header: fails fast on junk
            _ = list(f.keys())
        return load_file(str(path))
    except (OSError, ValueError, RuntimeError) as e:  # safetensors raises SafetensorError (a ValueError subclass) or OSError
        raise PackageError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001  SafetensorError's base class varies by version
        raise PackageError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], *, origin: Path) -> None:
    """Loads a state dict whose keys and shapes must match the model exactly."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise LoadError(f"{origin}: state dict does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        k, got, want = bad[0]
        raise LoadError(f"{origin}: tensor {k!r} has shape {got}, the model needs {want}")
    model.load_state_dict(dict(state), strict=True)
