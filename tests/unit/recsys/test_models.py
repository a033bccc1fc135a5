"""DIN, DIN-MHA, ADS and LMN end to end: registry, meta builds, shapes, config checks, learning.

The learning tests train on a planted signal: click = 1 iff the target item's category appears in
the user's history (5% of labels flipped), purchase = click in domain 1. Target attention can read
it off by matching the candidate's category against the history; the per-sample features are noise.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score
from torchrec import KeyedJaggedTensor
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from feature_pipeline.batch import Batch
from feature_pipeline.spec import FeatureKind, FeatureSpec, TableSpec
from recsys.configs import (
    ADSConfig,
    DINConfig,
    EmbeddingLayerConfig,
    LMNConfig,
    MemoryRead,
    MemoryTarget,
    ModelConfig,
    QueryFusion,
    QueryNorm,
    model_config_from_dict,
)
from recsys.models.registry import MODEL_KINDS, build_model
from recsys.modules.memory import MEMORY_TABLE
from recsys.outputs import ModelOutput
from seedrec.errors import ConfigError

T = 8
N_ITEMS, N_CATS, N_USERS = 120, 8, 40
ROWS = {"user": N_USERS + 1, "item": N_ITEMS + 1, "category": N_CATS + 1, "domain": 4, "action": 3, "hour": 25,
        "device": 4, "age_bucket": 7, "gender": 3, "activity": 4}
SPARSE = [("user_id", "user"), ("item_id", "item"), ("category_id", "category"), ("hour", "hour"),
          ("device", "device"), ("age_bucket", "age_bucket"), ("gender", "gender"), ("activity", "activity")]
SEQUENCE = [("hist_item_id", "item"), ("hist_category_id", "category"), ("hist_domain", "domain"), ("hist_action", "action")]


def make_spec(seq_len: int = T, dim: int = 8) -> FeatureSpec:
    """The sample builder's typical spec: shared item/category/domain tables, price, click + purchase."""
    F = FeatureSpec.Feature
    return FeatureSpec(
        seq_len=seq_len,
        tables=tuple(TableSpec(name=n, num_embeddings=r, embedding_dim=dim, hashed=True) for n, r in ROWS.items()),
        features=(
            *(F(name=n, kind=FeatureKind.SPARSE, table=t) for n, t in SPARSE),
            F(name="domain", kind=FeatureKind.DOMAIN, table="domain"),
            *(F(name=n, kind=FeatureKind.SEQUENCE, table=t) for n, t in SEQUENCE),
            F(name="price", kind=FeatureKind.DENSE),
            F(name="click", kind=FeatureKind.LABEL),
            F(name="purchase", kind=FeatureKind.LABEL),
        ),
        domains=("feed", "search", "mall"),
    )


def planted_batch(B: int, g: torch.Generator, seq_len: int = T) -> Batch:
    """B samples of the planted category-in-history signal (see the module docstring)."""
    def ints(lo: int, hi: int, *shape: int) -> torch.Tensor:
        return torch.randint(lo, hi, shape, generator=g)

    item = ints(1, N_ITEMS + 1, B)
    category = 1 + item % N_CATS
    domain = ints(1, 4, B)
    lengths = ints(0, seq_len + 1, B)
    hist_item = ints(1, N_ITEMS + 1, B, seq_len)
    hist_category = 1 + hist_item % N_CATS
    valid = torch.arange(seq_len)[None, :] < lengths[:, None]  # (B, T) oldest first
    click = ((hist_category == category[:, None]) & valid).any(dim=1)
    click ^= torch.rand(B, generator=g) < 0.05
    purchase = click & (domain == 1)
    sparse_cols = [ints(1, N_USERS + 1, B), item, category, ints(1, 25, B), ints(1, 4, B), ints(1, 7, B),
                   ints(1, 3, B), ints(1, 4, B), domain]
    seq_cols = [hist_item, hist_category, ints(1, 4, B, seq_len), ints(1, 3, B, seq_len)]
    return Batch(
        sparse=KeyedJaggedTensor.from_lengths_sync(
            keys=[n for n, _ in SPARSE] + ["domain"], values=torch.cat(sparse_cols),
            lengths=torch.ones(len(sparse_cols) * B, dtype=torch.long),
        ),
        sequence=KeyedJaggedTensor.from_lengths_sync(
            keys=[n for n, _ in SEQUENCE], values=torch.cat([c[valid] for c in seq_cols]), lengths=lengths.repeat(len(seq_cols)),
        ),
        dense=torch.rand(B, 1, generator=g) * 100.0,  # price: noise on a raw scale
        labels=torch.stack([click, purchase], dim=1).float(),
        domain=domain - 1,
        user=sparse_cols[0],
    )


SMALL = {"embedding": EmbeddingLayerConfig(dim=8), "attention_hidden": (16,), "tower_hidden": (32, 16),
         "num_heads": 2, "head_dim": 8}
VARIANTS: dict[str, ModelConfig] = {
    "din": DINConfig(**SMALL),
    "din-mha": DINConfig(backbone="mha", **SMALL),
    "ads": ADSConfig(hidden_dim=16, **SMALL),
    "ads-mha-chunked": ADSConfig(backbone="mha", num_chunks=4, hidden_dim=16, **SMALL),
    "lmn": LMNConfig(n_sub=16, k=4, d_key=16, d_value=8, **SMALL),
    "lmn-mha": LMNConfig(backbone="mha", n_sub=16, k=4, d_key=16, d_value=8, **SMALL),
}


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return make_spec()


def _loss(out: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels)
    return bce + sum(out.aux_losses.values(), torch.zeros(()))


# ---- registry, builds, shapes ------------------------------------------------------------------
def test_registry_kinds() -> None:
    assert set(MODEL_KINDS) == {"din", "ads", "lmn"}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_forward_shapes_and_backward(name: str, spec: FeatureSpec) -> None:
    torch.manual_seed(0)
    model = build_model(VARIANTS[name], spec, device="cpu")
    batch = planted_batch(16, torch.Generator().manual_seed(0))
    out = model(batch)
    assert out.logits.shape == (16, len(spec.label_names))
    assert torch.isfinite(out.logits).all()
    if name.startswith("lmn"):
        assert set(out.aux_losses) == {"memory"} and out.aux_losses["memory"].ndim == 0
        assert set(out.extras) == {"memory_loss", "memory_unique_slots"}
    _loss(out, batch.labels).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


@pytest.mark.parametrize("name", list(VARIANTS))
def test_builds_on_meta(name: str, spec: FeatureSpec) -> None:
    model = build_model(VARIANTS[name], spec, device="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {b.device.type for b in model.buffers()} <= {"meta"}


def test_empty_histories_are_fine(spec: FeatureSpec) -> None:
    batch = planted_batch(6, torch.Generator().manual_seed(1))
    empty = Batch(
        sparse=batch.sparse,
        sequence=KeyedJaggedTensor.from_lengths_sync(
            keys=spec.sequence_keys, values=torch.zeros(0, dtype=torch.long), lengths=torch.zeros(4 * 6, dtype=torch.long)
        ),
        dense=batch.dense, labels=batch.labels, domain=batch.domain, user=batch.user,
    )
    for cfg in VARIANTS.values():
        out = build_model(cfg, spec)(empty)
        assert torch.isfinite(out.logits).all()
        for v in out.aux_losses.values():
            assert v == 0


@pytest.mark.parametrize("fusion", list(QueryFusion))
@pytest.mark.parametrize("read", list(MemoryRead))
@pytest.mark.parametrize("norm", list(QueryNorm))
def test_lmn_alternatives(fusion: QueryFusion, read: MemoryRead, norm: QueryNorm, spec: FeatureSpec) -> None:
    cfg = LMNConfig(n_sub=8, k=2, d_key=8, d_value=8, query_fusion=fusion, memory_read=read, query_norm=norm, **SMALL)
    model = build_model(cfg, spec)
    batch = planted_batch(8, torch.Generator().manual_seed(2))
    out = model(batch)
    _loss(out, batch.labels).backward()
    assert model.memory.keys1.grad is not None and model.memory.keys1.grad.abs().sum() > 0
    assert model.query.item.weight.grad is not None and model.query.item.weight.grad.abs().sum() > 0


def test_lmn_detached_target(spec: FeatureSpec) -> None:
    d_item = 4 * 8  # four sequence features of width 8
    cfg = LMNConfig(n_sub=8, k=2, d_key=8, d_value=d_item, memory_target=MemoryTarget.DETACHED, **SMALL)
    model = build_model(cfg, spec)
    assert model.target is None
    out = model(planted_batch(8, torch.Generator().manual_seed(3)))
    assert out.aux_losses["memory"] > 0
    with pytest.raises(ConfigError, match="`d_value` must equal the item width 32"):
        build_model(LMNConfig(d_value=16, memory_target="detached", **SMALL), spec)


def test_lmn_memory_weight_scales_the_aux_loss(spec: FeatureSpec) -> None:
    batch = planted_batch(8, torch.Generator().manual_seed(4))
    outs = []
    for weight in (0.1, 0.5):
        torch.manual_seed(0)
        outs.append(build_model(LMNConfig(n_sub=8, k=2, d_key=8, d_value=8, memory_weight=weight, **SMALL), spec)(batch))
    torch.testing.assert_close(outs[1].aux_losses["memory"], 5 * outs[0].aux_losses["memory"])
    torch.testing.assert_close(outs[0].extras["memory_loss"] * 0.1, outs[0].aux_losses["memory"])


# ---- config checks -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (LMNConfig, {"n_sub": 4, "k": 8}, "k"),
        (LMNConfig, {"n_sub": 0}, "n_sub"),
        (LMNConfig, {"d_key": 7}, "d_key"),
        (LMNConfig, {"d_value": 0}, "d_value"),
        (LMNConfig, {"memory_weight": -1.0}, "memory_weight"),
        (LMNConfig, {"smooth_l1_beta": 0.0}, "smooth_l1_beta"),
        (LMNConfig, {"query_norm": "rmsnorm"}, "query_norm"),
        (LMNConfig, {"query_fusion": "gate"}, "query_fusion"),
        (LMNConfig, {"memory_read": "both"}, "memory_read"),
        (LMNConfig, {"memory_target": "raw"}, "memory_target"),
        (LMNConfig, {"user_features": ()}, "user_features"),
        (DINConfig, {"attention_hidden": ()}, "attention_hidden"),
        (DINConfig, {"tower_hidden": (8, 0)}, "tower_hidden"),
        (DINConfig, {"num_heads": 0}, "num_heads"),
        (DINConfig, {"head_dim": 0}, "head_dim"),
        (DINConfig, {"dropout": 1.0}, "dropout"),
        (DINConfig, {"activation": "gelu"}, "activation"),
        (DINConfig, {"embedding": 3}, "embedding"),
    ],
)
def test_config_errors(cls: type, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"`{field}`"):
        cls(**kwargs)


def test_unknown_user_features_are_named(spec: FeatureSpec) -> None:
    with pytest.raises(ConfigError, match=r"`user_features` names \['uid'\]"):
        build_model(LMNConfig(user_features=("user_id", "uid"), **SMALL), spec)


def test_spec_without_sequence_is_refused() -> None:
    F = FeatureSpec.Feature
    spec = FeatureSpec(seq_len=2, tables=(TableSpec(name="item", num_embeddings=3, embedding_dim=2, hashed=True),),
                       features=(F(name="item_id", kind=FeatureKind.SPARSE, table="item"), F(name="click", kind=FeatureKind.LABEL)))
    with pytest.raises(ConfigError, match="`sequence`"):
        build_model(DINConfig(), spec)


def test_model_config_from_dict() -> None:
    cfg = model_config_from_dict({"kind": "ads", "backbone": "mha", "domain_features": ["activity"],
                                  "tower_hidden": [8], "embedding": {"dim": 4}})
    assert isinstance(cfg, ADSConfig) and cfg.domain_features == ("activity",) and cfg.tower_hidden == (8,)
    assert cfg.embedding == EmbeddingLayerConfig(dim=4)
    with pytest.raises(ConfigError, match="`kind`"):
        model_config_from_dict({"kind": "sim"})
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['eta'\]"):
        model_config_from_dict({"kind": "din", "eta": 2.0})


# ---- learning ----------------------------------------------------------------------------------
@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small ops on a shared 2-core machine: one intra-op thread is ~10× faster than two that spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", ["din", "din-mha", "ads", "lmn"])
def test_learns_the_planted_signal(name: str, spec: FeatureSpec) -> None:
    torch.manual_seed(0)
    model = build_model(VARIANTS[name], spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(10)
    bce_curve = []
    for _ in range(300):
        batch = planted_batch(128, g)
        out = model(batch)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch.labels)
        opt.zero_grad()
        (bce + sum(out.aux_losses.values(), torch.zeros(()))).backward()
        opt.step()
        bce_curve.append(float(bce.detach()))
    model.eval()
    with torch.no_grad():
        held_out = [planted_batch(512, torch.Generator().manual_seed(99 + i)) for i in range(2)]
        logits = torch.cat([model(b).logits for b in held_out])
        labels = torch.cat([b.labels for b in held_out])
    auc = roc_auc_score(labels[:, 0].numpy(), logits[:, 0].numpy())
    print(f"{name}: held-out click AUC {auc:.3f}")
    assert auc > 0.7, f"{name}: held-out click AUC {auc:.3f}"
    assert sum(bce_curve[-30:]) / 30 < sum(bce_curve[:30]) / 30 - 0.05, f"{name}: loss did not fall"


# ---- the million-slot memory -------------------------------------------------------------------
def test_million_slot_lmn_trains_a_step(spec: FeatureSpec) -> None:
    """n = 1024² slots × d_v = 32: builds, takes one step, and the step touches only the read rows."""
    t0 = time.perf_counter()
    model = build_model(LMNConfig(n_sub=1024, k=32, d_key=32, d_value=32, **SMALL), spec)
    table = model.memory.values.embeddings[MEMORY_TABLE].weight
    assert table.shape == (1024**2, 32)
    values = list(model.memory.values.parameters())
    dense = [p for n, p in model.named_parameters() if not n.startswith("memory.values.")]
    sgd, adam = torch.optim.SGD(values, lr=0.1), torch.optim.Adam(dense, lr=1e-3)
    batch = planted_batch(64, torch.Generator().manual_seed(5))
    reads: list[torch.Tensor] = []
    model.memory.register_forward_hook(lambda _m, _i, out: reads.append(out.indices))
    before = table.detach().clone()
    out = model(batch)
    _loss(out, batch.labels).backward()
    sgd.step()
    adam.step()
    changed = (table.detach() != before).any(dim=1)
    read = torch.zeros(1024**2, dtype=torch.bool)
    read[reads[0].reshape(-1)] = True
    assert changed.any() and not changed[~read].any()  # only rows the step read (and got gradient) moved
    elapsed = time.perf_counter() - t0
    assert elapsed < 60
    print(f"1024² LMN build+step {elapsed:.2f}s, max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


# ---- DMP: build on meta, shard, materialise, train ----------------------------------------------
@pytest.fixture(scope="module")
def process_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A one-rank gloo group (file rendezvous: no port to collide with parallel runs)."""
    store = tmp_path_factory.mktemp("pg") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.usefixtures("process_group", "one_thread")
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore:fbgemm.*autograd kernel was not registered:UserWarning")
@pytest.mark.parametrize("name", ["din-mha", "ads", "lmn"])
def test_dmp_shards_a_meta_model_and_trains(name: str, spec: FeatureSpec) -> None:
    """The Trainer's path: meta build → DMP (row-wise EC, LMN memory included) → fused sparse + Adam dense."""
    model = build_model(VARIANTS[name], spec, device="meta")
    tables = [p for n, p in model.named_parameters() if n.startswith(("embedding.", "memory.values."))]
    apply_optimizer_in_backward(torch.optim.SGD, tables, {"lr": 0.1})
    dmp = DistributedModelParallel(
        model, device=torch.device("cpu"), sharders=[EmbeddingCollectionSharder(), EmbeddingBagCollectionSharder()]
    )
    sharding = {t: p.sharding_type for module_plan in dmp.plan.plan.values() for t, p in module_plan.items()}
    assert sharding["item"] == "row_wise" and (name != "lmn" or sharding[MEMORY_TABLE] == "row_wise")
    dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    assert all(torch.isfinite(p).all() for p in dense.values())  # every meta block was materialised and reset
    if name == "ads":  # the blocks' own init won over their children's defaults: ADS starts as its backbone
        ads = dmp.module
        assert ads.pcrg.w_q2.abs().sum() == 0 and ads.psrg.private[-1].weight.abs().sum() == 0
        torch.testing.assert_close(ads.psrg.w_shared, torch.eye(ads.psrg.d_seq) * (2.0 / ads.psrg.eta))
    opt = KeyedOptimizerWrapper(dense, lambda params: torch.optim.Adam(params, lr=1e-2))
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        batch = planted_batch(32, g)
        out = dmp(batch)
        loss = _loss(out, batch.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    if name == "lmn":
        memory = dmp.module.memory
        assert memory.keys1.grad is not None and memory.keys1.grad.abs().sum() > 0  # through the sharded read
