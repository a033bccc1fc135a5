"""Over-Encoding n-gram ids, moduli, slices and scale against hand computations; Over-Decoding (spec §5.2)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from research.configs import LMConfig
from research.models.lm import LM
from research.nn.over_tokenized import OverDecoding, OverEncoding, ngram_ids


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_ngram_ids_hand_example() -> None:
    # V = 10, tokens 3 1 2 5; x^{(-2)}_t = x_t + 10·x_{t-1}; x^{(-3)} adds 100·x_{t-2}; zeros before the start
    idx = torch.tensor([[3, 1, 2, 5]])
    assert ngram_ids(idx, 1, 10).tolist() == [[3, 1, 2, 5]]
    assert ngram_ids(idx, 2, 10).tolist() == [[3, 31, 12, 25]]
    assert ngram_ids(idx, 3, 10).tolist() == [[3, 31, 312, 125]]


def test_ngram_ids_match_brute_force_and_use_int64() -> None:
    torch.manual_seed(0)
    V, n = 50_000, 3
    idx = torch.randint(0, V, (2, 7))
    got = ngram_ids(idx, n, V)
    assert got.dtype == torch.int64
    for b in range(2):
        for t in range(7):
            want = sum(int(idx[b, t - j]) * V**j if t - j >= 0 else 0 for j in range(n))
            assert int(got[b, t]) == want
    assert int(got.max()) > 2**31  # would have overflowed int32


def test_tables_moduli_widths_and_order() -> None:
    oe = OverEncoding(10, 8, n=3, m=7, k=2)
    assert oe.moduli == [7, 9, 11, 13]  # m + 2·idx, idx = (i-2)·k + j
    assert [t.num_embeddings for t in oe.tables] == [7, 9, 11, 13]
    assert all(t.embedding_dim == 2 for t in oe.tables)  # D / (k(n-1)) = 8 / 4
    assert oe.scale == pytest.approx(1 / 5)  # 1 / (1 + k(n-1))


def test_forward_equals_the_app_a_pseudo_code_by_hand() -> None:
    torch.manual_seed(0)
    V, D, n, m, k = 10, 8, 3, 7, 2
    oe = OverEncoding(V, D, n=n, m=m, k=k)
    wte = torch.nn.Embedding(V, D)
    idx = torch.tensor([[3, 1, 2, 5], [0, 9, 9, 4]])
    with torch.no_grad():
        x = wte(idx).clone()
        for b in range(2):
            for t in range(4):
                tok = lambda s, b=b: int(idx[b, s]) if s >= 0 else 0  # noqa: E731  # zero padding
                for i in range(2, n + 1):
                    gram = sum(tok(t - j) * V**j for j in range(i))
                    for j in range(k):
                        ti = (i - 2) * k + j
                        row = oe.tables[ti].weight[gram % (m + 2 * ti)]
                        x[b, t] += oe.projs[ti].weight @ row
        want = x / (1 + k * (n - 1))
        torch.testing.assert_close(oe(idx, wte(idx)), want)


def test_m1_makes_every_ngram_collide() -> None:
    oe = OverEncoding(10, 4, n=2, m=1, k=1)
    with torch.no_grad():
        a = oe(torch.tensor([[1, 2, 3]]), torch.zeros(1, 3, 4))
        b = oe(torch.tensor([[7, 8, 9]]), torch.zeros(1, 3, 4))
    torch.testing.assert_close(a, b)


def test_over_decoding_losses_are_next_j_cross_entropies() -> None:
    torch.manual_seed(0)
    od = OverDecoding(8, 10, n=3)
    h = torch.randn(2, 5, 8)
    targets = torch.randint(0, 10, (2, 5))
    losses = od.losses(h, targets)
    want2 = F.cross_entropy(od.heads[0](h[:, :4]).flatten(0, 1), targets[:, 1:].flatten())  # token t+2
    want3 = F.cross_entropy(od.heads[1](h[:, :3]).flatten(0, 1), targets[:, 2:].flatten())  # token t+3
    torch.testing.assert_close(losses["od_2"], want2)
    torch.testing.assert_close(losses["od_3"], want3)


CFG = LMConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, d_model=16)


def test_lm_with_over_tokenization_adds_the_weighted_od_loss() -> None:
    torch.manual_seed(0)
    model = LM(replace(CFG, over_encoding=True, oe_n=3, oe_m=11, oe_k=2, over_decoding=True, od_n=2, od_weight=0.1))
    idx, targets = torch.randint(0, 16, (2, 8)), torch.randint(0, 16, (2, 8))
    logits, loss, terms = model.forward_with_terms(idx, targets)
    assert loss is not None
    torch.testing.assert_close(terms["ce"], F.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    torch.testing.assert_close(loss, terms["ce"] + 0.1 * terms["od_2"])


def test_embedding_parameter_count_and_tied_head() -> None:
    model = LM(replace(CFG, over_encoding=True, oe_n=3, oe_m=11, oe_k=2))
    counts = model.num_params()
    assert counts["embedding"] == 16 * 16 + (11 + 13 + 15 + 17) * 4  # V·D + Σ (m + 2i)·D/(k(n-1))
    vd = [n for n, p in model.named_parameters() if p.shape == (16, 16) and "blocks" not in n]
    assert vd == ["wte.weight"]  # the head has no weight of its own: it is tied to wte
    idx = torch.randint(0, 16, (1, 8))
    logits, _ = model(idx)
    logits.sum().backward()
    assert model.wte.weight.grad is not None
