"""Product-key memory: exact top-k, gradients to keys/query, sparse value updates, masked loss, 1024²."""

from __future__ import annotations

import pytest
import torch
from torchrec import EmbeddingCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from recsys.configs import QueryNorm
from recsys.modules.memory import (
    MEMORY_FEATURE,
    MEMORY_TABLE,
    ProductKeyMemory,
    masked_smooth_l1,
    pkm_topk,
    pkm_topk_bruteforce,
)


@pytest.mark.parametrize(("n_sub", "k"), [(8, 4), (8, 8), (8, 1), (16, 5)])
def test_pkm_topk_equals_brute_force(n_sub: int, k: int) -> None:
    g = torch.Generator().manual_seed(n_sub * 100 + k)
    d_key = 10
    q = torch.randn(256, d_key, generator=g, dtype=torch.float64)  # float64: no ties
    k1 = torch.randn(n_sub, d_key // 2, generator=g, dtype=torch.float64)
    k2 = torch.randn(n_sub, d_key // 2, generator=g, dtype=torch.float64)
    scores, idx = pkm_topk(q, k1, k2, k)
    ref_scores, ref_idx = pkm_topk_bruteforce(q, k1, k2, k)
    assert torch.equal(idx, ref_idx)
    assert torch.equal(scores, ref_scores)
    # Slot ids decode to (a, b) with score q1·K1[a] + q2·K2[b].
    a, b = idx // n_sub, idx % n_sub
    manual = (q[:, None, : d_key // 2] * k1[a]).sum(-1) + (q[:, None, d_key // 2 :] * k2[b]).sum(-1)
    torch.testing.assert_close(scores, manual)


def _memory(query_norm: QueryNorm = QueryNorm.LAYERNORM, **kw: int) -> ProductKeyMemory:
    args = {"n_sub": 8, "k": 4, "d_key": 6, "d_value": 5} | kw
    return ProductKeyMemory(query_norm=query_norm, **args)


def test_value_table_is_a_torchrec_collection() -> None:
    mem = _memory()
    assert isinstance(mem.values, EmbeddingCollection)
    (cfg,) = mem.values.embedding_configs()
    assert (cfg.name, cfg.num_embeddings, cfg.embedding_dim, cfg.feature_names) == (MEMORY_TABLE, 64, 5, [MEMORY_FEATURE])


def test_read_is_the_softmax_weighted_sum_of_the_selected_rows() -> None:
    mem = _memory()
    q = torch.randn(7, 6)
    out = mem(q)
    assert out.values.shape == (7, 5) and out.indices.shape == (7, 4) and out.weights.shape == (7, 4)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(7))
    table = mem.values.embeddings[MEMORY_TABLE].weight
    torch.testing.assert_close(out.values, (out.weights[..., None] * table[out.indices]).sum(1))
    _, ref = pkm_topk(mem.query_norm(q), mem.keys1, mem.keys2, 4)
    assert torch.equal(out.indices, ref)


@pytest.mark.parametrize("norm", list(QueryNorm))
def test_keys_and_query_net_get_gradient_from_the_read(norm: QueryNorm) -> None:
    torch.manual_seed(0)
    query_net = torch.nn.Linear(3, 6)
    mem = _memory(norm)
    read = mem(query_net(torch.randn(16, 3))).values
    (read * torch.randn_like(read)).sum().backward()
    for name, p in [("keys1", mem.keys1), ("keys2", mem.keys2), ("query.weight", query_net.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert mem.values.embeddings[MEMORY_TABLE].weight.grad.abs().sum() > 0


def test_sgd_changes_only_the_selected_value_rows() -> None:
    torch.manual_seed(1)
    mem = _memory(n_sub=16, k=3)
    table = mem.values.embeddings[MEMORY_TABLE].weight
    before = table.detach().clone()
    opt = torch.optim.SGD(mem.values.parameters(), lr=0.5)
    out = mem(torch.randn(5, 6))
    out.values.pow(2).sum().backward()
    opt.step()
    selected = torch.zeros(256, dtype=torch.bool)
    selected[out.indices.reshape(-1)] = True
    assert torch.equal(table.detach()[~selected], before[~selected])  # bit-identical
    assert (table.detach()[selected] != before[selected]).any(dim=1).all()


def test_fused_in_backward_optimizer_changes_only_the_selected_rows() -> None:
    """TorchRec's in-backward optimizer (what DMP fuses into the sharded table) on the value table."""
    torch.manual_seed(2)
    mem = _memory(n_sub=16, k=3)
    table = mem.values.embeddings[MEMORY_TABLE].weight
    apply_optimizer_in_backward(torch.optim.SGD, mem.values.parameters(), {"lr": 0.5})
    before = table.detach().clone()
    out = mem(torch.randn(5, 6))
    out.values.pow(2).sum().backward()  # the update happens inside backward
    selected = torch.zeros(256, dtype=torch.bool)
    selected[out.indices.reshape(-1)] = True
    assert torch.equal(table.detach()[~selected], before[~selected])
    assert (table.detach()[selected] != before[selected]).any(dim=1).all()


def test_masked_smooth_l1_ignores_padding() -> None:
    torch.manual_seed(3)
    pred = torch.randn(2, 4, 3, requires_grad=True)
    target = torch.randn(2, 4, 3)
    mask = torch.tensor([[False, True, True, True], [False, False, False, True]])
    loss = masked_smooth_l1(pred, target, mask, beta=0.5)
    # Reference: mean over d_v, then over the 4 real positions only.
    per = torch.nn.functional.smooth_l1_loss(pred, target, reduction="none", beta=0.5).mean(-1)
    torch.testing.assert_close(loss, per[mask].mean())
    # Whatever padded positions hold changes neither the loss nor any gradient.
    garbage_pred = pred.detach().clone()
    garbage_pred[~mask] = float("nan")
    garbage_target = target.clone()
    garbage_target[~mask] = 1e6
    assert torch.equal(masked_smooth_l1(garbage_pred, garbage_target, mask, beta=0.5), loss.detach())
    loss.backward()
    assert pred.grad is not None
    assert pred.grad[~mask].abs().sum() == 0 and pred.grad[mask].abs().sum() > 0
    # No real position at all: 0, not NaN.
    assert masked_smooth_l1(pred, target, torch.zeros(2, 4, dtype=torch.bool)) == 0


def test_builds_on_meta() -> None:
    mem = ProductKeyMemory(n_sub=1024, k=32, d_key=32, d_value=64, query_norm=QueryNorm.BATCHNORM, device="meta")
    assert {p.device.type for p in mem.parameters()} == {"meta"}
    assert mem.num_slots == 1024**2
