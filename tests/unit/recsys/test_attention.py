"""DIN activation unit, multi-head target attention and ADS's position-wise (diagonal) attention."""

from __future__ import annotations

import math

import pytest
import torch

from recsys.configs import Activation, DINConfig
from recsys.modules.attention import (
    DINAttention,
    MultiHeadTargetAttention,
    build_target_attention,
    masked_softmax,
)

B, T, D = 3, 5, 6


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[False, False, True, True, True], [True] * 5, [False] * 5])  # last: empty history
    return torch.randn(B, D, generator=g), torch.randn(B, T, D, generator=g), mask


def test_masked_softmax_zeroes_masked_and_empty_rows() -> None:
    scores = torch.randn(2, 4)
    mask = torch.tensor([[True, False, True, False], [False] * 4])
    z = masked_softmax(scores, mask, dim=-1)
    assert z[0, [1, 3]].abs().sum() == 0 and torch.isclose(z[0].sum(), torch.tensor(1.0))
    assert torch.equal(z[1], torch.zeros(4))


@pytest.mark.parametrize("activation", list(Activation))
def test_din_unit_matches_the_formula(inputs: tuple[torch.Tensor, ...], activation: Activation) -> None:
    q, keys, mask = inputs
    att = DINAttention(D, hidden=(8, 4), activation=activation).eval()
    out = att(q, keys, mask)
    assert out.shape == (B, D)
    qt = q[:, None, :].expand(B, T, D)
    w = att.unit(torch.cat([qt, keys, qt - keys, qt * keys], dim=-1))[..., 0] * mask  # no softmax
    torch.testing.assert_close(out, (w[..., None] * keys).sum(1))
    assert torch.equal(out[2], torch.zeros(D))  # empty history pools nothing


def test_din_ignores_padded_positions_and_tiles_a_2d_query(inputs: tuple[torch.Tensor, ...]) -> None:
    q, keys, mask = inputs
    att = DINAttention(D, hidden=(8,), activation=Activation.PRELU)
    garbage = keys.clone()
    garbage[~mask] = 1e3
    torch.testing.assert_close(att(q, garbage, mask), att(q, keys, mask))
    torch.testing.assert_close(att(q[:, None, :].expand(B, T, D), keys, mask), att(q, keys, mask))


def test_mha_matches_reference_attention(inputs: tuple[torch.Tensor, ...]) -> None:
    q, keys, mask = inputs
    H, Dh = 2, 4
    att = MultiHeadTargetAttention(D, D, num_heads=H, head_dim=Dh)
    out = att(q, keys, mask)
    assert out.shape == (B, H * Dh)
    Q = att.w_q(q).reshape(B, H, 1, Dh)  # (B, H, 1, Dh)
    K = att.w_k(keys).reshape(B, T, H, Dh).transpose(1, 2)  # (B, H, T, Dh)
    V = att.w_v(keys).reshape(B, T, H, Dh).transpose(1, 2)  # (B, H, T, Dh)
    ref = torch.nn.functional.scaled_dot_product_attention(Q[:2], K[:2], V[:2], attn_mask=mask[:2, None, None, :])
    torch.testing.assert_close(out[:2], ref.reshape(2, H * Dh))
    assert torch.equal(out[2], torch.zeros(H * Dh))  # empty history: zeros, not NaN


def test_diagonal_attention_scores_query_t_against_key_t_only(inputs: tuple[torch.Tensor, ...]) -> None:
    _, keys, mask = inputs
    H, Dh = 2, 3
    att = MultiHeadTargetAttention(D, D, num_heads=H, head_dim=Dh)
    queries = torch.randn(B, T, D)
    out = att(queries, keys, mask).detach()
    # ADS eqs. 11–12 written out per head and position.
    with torch.no_grad():
        Q = att.w_q(queries).reshape(B, T, H, Dh)
        K = att.w_k(keys).reshape(B, T, H, Dh)
        V = att.w_v(keys).reshape(B, T, H, Dh)
    for b in range(2):
        for h in range(H):
            z = torch.tensor([float(Q[b, t, h] @ K[b, t, h]) / math.sqrt(Dh) for t in range(T)])
            z = torch.softmax(z.masked_fill(~mask[b], float("-inf")), dim=0)
            torch.testing.assert_close(out[b, h * Dh : (h + 1) * Dh], (z[:, None] * V[b, :, h]).sum(0))
    # Changing query t moves only score t: with one real position, other queries do not matter.
    one = torch.tensor([[False, False, False, False, True]]).expand(B, T)
    changed = queries.clone()
    changed[:, :4] = torch.randn(B, 4, D)
    torch.testing.assert_close(att(changed, keys, one), att(queries, keys, one))


def test_tiled_candidate_equals_target_attention(inputs: tuple[torch.Tensor, ...]) -> None:
    q, keys, mask = inputs
    att = MultiHeadTargetAttention(D, D, num_heads=3, head_dim=2)
    torch.testing.assert_close(att(q[:, None, :].expand(B, T, D), keys, mask), att(q, keys, mask))


def test_mha_ignores_padded_positions(inputs: tuple[torch.Tensor, ...]) -> None:
    q, keys, mask = inputs
    att = MultiHeadTargetAttention(D, D, num_heads=2, head_dim=4)
    garbage = keys.clone()
    garbage[~mask] = -7.0
    torch.testing.assert_close(att(q, garbage, mask), att(q, keys, mask))


def test_build_target_attention() -> None:
    assert isinstance(build_target_attention(DINConfig(), 6, 6), DINAttention)
    mha = build_target_attention(DINConfig(backbone="mha", num_heads=4, head_dim=5), 6, 6)
    assert isinstance(mha, MultiHeadTargetAttention) and mha.out_dim == 20
