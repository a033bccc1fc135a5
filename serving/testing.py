"""Stand-ins for tests and benchmarks: a tiny sample set, a small model and packages built from them.

Nothing here is used by the server itself. The stand-in ``toy`` model reads a real
:class:`~feature_pipeline.batch.Batch` built by the real :class:`FeatureTransform` from a
feature spec laid out like the sample builder's (``user_id, item_id, category_id, device, hour,
domain, hist_*, price, click, purchase``); with ``memory=True`` it also holds the real
:class:`recsys.modules.memory.ProductKeyMemory` (table ``lmn_memory``), so the serving memory
hook, the memory service path and the fallback are exercised exactly as for LMN.

Example:
    >>> import tempfile
    >>> samples = write_toy_samples(tempfile.mkdtemp())
    >>> pkg = write_toy_package(tempfile.mkdtemp(), samples, name="toy", version="1")
    >>> sorted(p.name for p in pkg.iterdir())
    ['feature_spec.json', 'manifest.json', 'model.safetensors', 'vocab']
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from feature_pipeline.batch import Batch
from feature_pipeline.spec import Feature, FeatureKind, FeatureSpec, TableSpec
from feature_pipeline.transform import Vocabulary
from recsys.configs import QueryNorm
from recsys.modules.memory import ProductKeyMemory
from recsys.outputs import ModelOutput
from serving.scorer import default_factory

__all__ = ["TOY_DOMAINS", "write_toy_samples", "ToyModel", "toy_factory", "write_toy_package"]

TOY_DOMAINS: tuple[str, ...] = ("feed", "search")
_DIM = 8


def write_toy_samples(
    out: str | Path, *, users: int = 50, items: int = 200, categories: int = 10, seq_len: int = 8, embedding_dim: int = _DIM
) -> Path:
    """Writes ``feature_spec.json`` + ``vocab/*.json`` like ``seedrec data build`` would (no parquet).

    Ids are ``0..users-1`` and ``0..items-1``; item ``i`` has category ``i % categories``.
    """
    out = Path(out)
    vocabs: dict[str, Vocabulary] = {
        "user": Vocabulary(list(range(users)), name="user"),
        "item": Vocabulary(list(range(items)), name="item"),
        "category": Vocabulary(list(range(categories)), name="category"),
        "device": Vocabulary(["ios", "android", "web"], name="device"),
        "hour": Vocabulary(list(range(24)), name="hour"),
        "domain": Vocabulary(list(TOY_DOMAINS), name="domain"),
        "action": Vocabulary(["click", "purchase", "like"], name="action"),
    }
    tables = []
    for name, v in vocabs.items():
        v.save(out / "vocab" / f"{name}.json")
        tables.append(TableSpec(name=name, num_embeddings=v.num_rows, embedding_dim=embedding_dim, vocab=f"vocab/{name}.json"))
    K = FeatureKind
    spec = FeatureSpec(
        seq_len=seq_len,
        tables=tuple(tables),
        features=(
            Feature(name="user_id", kind=K.SPARSE, table="user"),
            Feature(name="item_id", kind=K.SPARSE, table="item"),
            Feature(name="category_id", kind=K.SPARSE, table="category"),
            Feature(name="device", kind=K.SPARSE, table="device"),
            Feature(name="hour", kind=K.SPARSE, table="hour"),
            Feature(name="domain", kind=K.DOMAIN, table="domain"),
            Feature(name="hist_item_id", kind=K.SEQUENCE, table="item"),
            Feature(name="hist_category_id", kind=K.SEQUENCE, table="category"),
            Feature(name="hist_domain", kind=K.SEQUENCE, table="domain"),
            Feature(name="hist_action", kind=K.SEQUENCE, table="action"),
            Feature(name="price", kind=K.DENSE),
            Feature(name="click", kind=K.LABEL),
            Feature(name="purchase", kind=K.LABEL),
        ),
        domains=TOY_DOMAINS,
        stats={"dense": {"price": {"transform": "log1p", "mean": 3.0, "std": 1.0}}},
    )
    spec.save(out)
    return out


class ToyModel(nn.Module):
    """Sum of sparse embeddings + mean-pooled history + (optional) product-key memory read → MLP.

    Args:
        spec: the feature spec.
        memory: add a ProductKeyMemory (n = ``n_sub``², k slots) read with the candidate's item embedding.
        n_sub: √n of the memory.
    """

    def __init__(self, spec: FeatureSpec, *, memory: bool = False, n_sub: int = 8) -> None:
        super().__init__()
        self.sparse_keys = spec.sparse_keys
        self.sequence_keys = spec.sequence_keys
        self.table_of = {f.name: f.table or "" for f in spec.features}
        self.tables = nn.ModuleDict({t.name: nn.Embedding(t.num_embeddings, _DIM) for t in spec.tables})
        self.memory = (
            ProductKeyMemory(n_sub=n_sub, k=4, d_key=_DIM, d_value=_DIM, query_norm=QueryNorm.LAYERNORM) if memory else None
        )
        d_in = _DIM * (len(self.sparse_keys) + len(self.sequence_keys) + (1 if memory else 0)) + len(spec.dense_names)
        self.mlp = nn.Sequential(nn.Linear(d_in, 16), nn.ReLU(), nn.Linear(16, len(spec.label_names)))
        with torch.no_grad():
            for emb in self.tables.values():
                emb.weight.normal_(0.0, 0.5)
            if self.memory is not None:
                for p in self.memory.values.parameters():
                    p.normal_(0.0, 0.5)

    def forward(self, batch: Batch) -> ModelOutput:
        """logits (B, n_labels) from the batch (no input validation)."""
        B = batch.batch_size
        F_ = len(self.sparse_keys)
        sp = batch.sparse.values().view(F_, B)  # (F, B)
        parts = [self.tables[self.table_of[k]](sp[i]) for i, k in enumerate(self.sparse_keys)]  # F x (B, D)
        lengths = batch.sequence.lengths().view(len(self.sequence_keys), B)  # (S, B)
        per_key = torch.split(batch.sequence.values(), lengths.sum(dim=1).tolist())
        for i, k in enumerate(self.sequence_keys):
            offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths[i].cumsum(0)[:-1].long()])  # (B,)
            parts.append(F.embedding_bag(per_key[i], self.tables[self.table_of[k]].weight, offsets, mode="mean"))  # (B, D)
        if self.memory is not None:
            item = parts[self.sparse_keys.index("item_id")]  # (B, D)
            parts.append(self.memory(item).values)  # (B, d_v)
        x = torch.cat([*parts, batch.dense], dim=1)  # (B, d_in)
        return ModelOutput(logits=self.mlp(x))  # (B, n_labels)


def toy_factory(kind: str, config: Mapping[str, Any], spec: FeatureSpec) -> nn.Module:
    """Builds ``toy`` models; every other kind goes to the real registry."""
    if kind == "toy":
        return ToyModel(spec, memory=bool(config.get("memory", False)), n_sub=int(config.get("n_sub", 8)))
    return default_factory(kind, config, spec)


def write_toy_package(
    repo: str | Path,
    samples: str | Path,
    *,
    name: str = "toy",
    version: str = "1",
    seed: int = 0,
    memory: bool = False,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Builds a toy model with ``seed`` and writes its package to ``repo/name/version``."""
    from serving.export import write_package

    spec = FeatureSpec.load(samples)
    torch.manual_seed(seed)
    config = {"memory": memory, "n_sub": 8}
    model = ToyModel(spec, memory=memory, n_sub=8)
    out = Path(repo) / name / version
    write_package(out, name=name, version=version, kind="toy", model_config=config, model=model, samples=samples,
                  metrics=dict(metrics or {"test/auc": 0.5}), source={"seed": seed})
    return out
