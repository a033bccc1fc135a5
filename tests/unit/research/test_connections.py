"""Hyper- and Frac-Connections: exact Pre-Norm equivalence at init, the PyPI `hyper-connections`
peer (lucidrains) after weight mapping, FC m=1 ≡ HC n=1, and the papers' parameter counts (spec §4)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import torch
from einops import rearrange
from hyper_connections import HyperConnections
from torch import nn

from research.configs import ConnectionNorm, LMConfig, ResidualKind
from research.models.lm import LM, Block
from research.nn.connections import FracConnection, HyperConnection, expand_streams, reduce_streams

BASE = LMConfig(vocab_size=64, block_size=8, n_layer=2, n_head=2, d_model=16)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pair(residual: ResidualKind, rate: int, dynamic: bool, layer_idx: int = 1) -> tuple[Block, Block]:
    """A Pre-Norm block and an HC/FC block holding the same attention, FFN and norm weights."""
    torch.manual_seed(0)
    pre = Block(BASE, layer_idx)
    conn = Block(replace(BASE, residual=residual, rate=rate, dynamic=dynamic), layer_idx)
    missing, unexpected = conn.load_state_dict(pre.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("attn_conn.", "mlp_conn.")) for k in missing)
    return pre, conn


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("rate", [1, 2, 4])
def test_hc_at_init_reproduces_a_pre_norm_block_exactly(rate: int, dynamic: bool) -> None:
    pre, hc = _pair(ResidualKind.HYPER, rate, dynamic)
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        want = pre(x)  # (B, T, D)
        got = hc(expand_streams(x, rate))  # (B, T, n, D)
    for s in range(rate):
        assert torch.equal(got[:, :, s], want)  # every stream carries the Pre-Norm stream, bit for bit


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("rate", [1, 2, 4])
def test_fc_at_init_reproduces_a_pre_norm_block_exactly(rate: int, dynamic: bool) -> None:
    pre, fc = _pair(ResidualKind.FRAC, rate, dynamic)
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        assert torch.equal(fc(x), pre(x))


def test_hc_model_at_init_matches_pre_norm_model_up_to_the_final_norm() -> None:
    """Streams stay identical, their sum is n·h and ln_f is scale-invariant (up to its eps)."""
    torch.manual_seed(0)
    pre = LM(BASE)
    hc = LM(replace(BASE, residual=ResidualKind.HYPER, rate=4))
    hc.load_state_dict(pre.state_dict(), strict=False)  # same weights (undoes HC's √n output init)
    idx = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(hc(idx)[0], pre(idx)[0], atol=1e-4, rtol=1e-4)


def test_hc_output_modules_init_is_scaled_by_sqrt_n() -> None:
    torch.manual_seed(0)
    cfg = replace(BASE, d_model=256, n_head=4, residual=ResidualKind.HYPER, rate=4)
    model = LM(cfg)
    std = float(model.blocks[0].attn.o_proj.weight.detach().std())
    assert abs(std - cfg.weight_std / 2) < 0.1 * cfg.weight_std


def test_hc_init_is_eq14() -> None:
    hc = HyperConnection(8, 3, layer_id=4, dynamic=True)
    assert torch.equal(hc.static_beta, torch.ones(3))
    assert torch.equal(hc.static_alpha[:, 0], torch.tensor([0.0, 1.0, 0.0]))  # e_{4 mod 3}
    assert torch.equal(hc.static_alpha[:, 1:], torch.eye(3))
    assert torch.count_nonzero(hc.dynamic_alpha_fn) == 0 and float(hc.dynamic_alpha_scale.detach()) == pytest.approx(0.01)


def test_hc_reproduces_sequential_and_parallel_blocks() -> None:
    """HC matrices of Eq. 17-19 (spec §4.2 table) give the classic forms, for two layers T1, T2 with n = 2."""
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(4, 4), nn.Linear(4, 4)
    t1, t2 = (lambda z: torch.tanh(lin1(z))), (lambda z: torch.tanh(lin2(z)))
    h = torch.randn(3, 4)

    def hc(matrix: list[list[float]]) -> HyperConnection:
        m = torch.tensor(matrix)  # HC = [[0, B], [A_m, A_r]]
        mod = HyperConnection(4, 2, layer_id=0, dynamic=False)
        with torch.no_grad():
            mod.static_beta.copy_(m[0, 1:])
            mod.static_alpha.copy_(m[1:, :])
        return mod

    with torch.no_grad():
        H = expand_streams(h, 2)  # (B, n, D) with B=3 playing (B, T)
        seq = hc([[0, 1, 1], [1, 1, 0], [0, 0, 1]])  # Sequential (Eq. 17)
        H1 = seq(H, t1)
        H2 = seq(H1, t2)
        x1 = h + t1(h)
        torch.testing.assert_close(H2[:, 0], x1 + t2(x1))
        # Parallel (Eq. 18-19): odd layer [[0,1,0],[1,1,1],[1,1,1]], even [[0,0,1],[0,1,0],[1,0,1]]
        P1 = hc([[0, 1, 0], [1, 1, 1], [1, 1, 1]])(H, t1)
        P2 = hc([[0, 0, 1], [0, 1, 0], [1, 0, 1]])(P1, t2)
        x = 2 * h  # both layers read the same input h₀ = h₁ + h₂ (a parallel block)
        torch.testing.assert_close(P2[:, 0], x + t1(x))
        torch.testing.assert_close(P2[:, 1], x + t2(x))
        torch.testing.assert_close(reduce_streams(P2), 2 * x + t1(x) + t2(x))


# ---- the PyPI peer ----------------------------------------------------------------------------
def _map_to_peer(ours: HyperConnection, rate: int, dim: int, layer_index: int) -> HyperConnections:
    """lucidrains' module holding our weights (spec §4.6 mapping: static_alpha = [A_m | A_r], ...)."""
    peer = HyperConnections(rate, dim=dim, layer_index=layer_index, tanh=True)
    with torch.no_grad():
        peer.static_alpha.copy_(ours.static_alpha)
        peer.static_beta.copy_(ours.static_beta)
        if ours.dynamic:
            peer.dynamic_alpha_fn.copy_(ours.dynamic_alpha_fn)
            peer.dynamic_beta_fn.copy_(ours.dynamic_beta_fn)
            peer.dynamic_alpha_scale.copy_(ours.dynamic_alpha_scale)
            peer.dynamic_beta_scale.copy_(ours.dynamic_beta_scale)
            peer.norm = ours.norm  # the same norm module (theirs is RMSNorm(γ+1), the paper's LayerNorm)
        else:
            peer.dynamic_alpha_fn.zero_()  # tanh(0) = 0: their dynamic terms vanish → static HC
            peer.dynamic_beta_fn.zero_()
    return peer


def _run_peer(peer: HyperConnections, H: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    n = H.shape[2]
    residuals = rearrange(H, "b t n d -> (b n) t d")  # their streams are folded into the batch
    branch_input, add_residual = peer(residuals)
    out = add_residual(branch(branch_input))
    return rearrange(out, "(b n) t d -> b t n d", n=n)


@pytest.mark.parametrize("rate", [1, 2, 4])
def test_static_hc_matches_the_pypi_hyper_connections_package(rate: int) -> None:
    torch.manual_seed(0)
    dim = 16
    ours = HyperConnection(dim, rate, layer_id=3, dynamic=False)
    with torch.no_grad():  # leave the init: random static matrices exercise every entry
        ours.static_alpha.copy_(torch.randn(rate, rate + 1))
        ours.static_beta.copy_(torch.randn(rate))
    peer = _map_to_peer(ours, rate, dim, 3)
    lin = nn.Linear(dim, dim)
    branch = lambda z: torch.tanh(lin(z))  # noqa: E731  # a stand-in sub-layer
    H = torch.randn(2, 5, rate, dim)
    with torch.no_grad():
        torch.testing.assert_close(ours(H, branch), _run_peer(peer, H, branch), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("norm", [ConnectionNorm.LAYERNORM, ConnectionNorm.RMSNORM])
def test_dynamic_hc_matches_the_peer_with_a_shared_norm(norm: ConnectionNorm) -> None:
    torch.manual_seed(0)
    dim, rate = 16, 4
    ours = HyperConnection(dim, rate, layer_id=2, dynamic=True, norm=norm)
    with torch.no_grad():
        for p in (ours.static_alpha, ours.static_beta, ours.dynamic_alpha_fn, ours.dynamic_beta_fn):
            p.copy_(torch.randn_like(p))
        ours.dynamic_alpha_scale.fill_(0.3)
        ours.dynamic_beta_scale.fill_(0.2)
    peer = _map_to_peer(ours, rate, dim, 2)
    lin = nn.Linear(dim, dim)
    branch = lambda z: torch.tanh(lin(z))  # noqa: E731  # a stand-in sub-layer
    H = torch.randn(2, 5, rate, dim)
    with torch.no_grad():
        torch.testing.assert_close(ours(H, branch), _run_peer(peer, H, branch), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dynamic", [False, True])
def test_fc_with_m1_equals_hc_with_n1(dynamic: bool) -> None:
    torch.manual_seed(0)
    dim = 8
    hc = HyperConnection(dim, 1, layer_id=0, dynamic=dynamic)
    fc = FracConnection(dim, 1, dynamic=dynamic)
    with torch.no_grad():
        for p in hc.parameters():
            p.copy_(torch.randn_like(p))
        fc.load_state_dict(hc.state_dict())  # same names and shapes when n = m = 1
    lin = nn.Linear(dim, dim)
    branch = lambda z: torch.tanh(lin(z))  # noqa: E731  # a stand-in sub-layer
    h = torch.randn(2, 3, dim)
    with torch.no_grad():
        torch.testing.assert_close(fc(h, branch), hc(h.unsqueeze(2), branch)[:, :, 0], atol=1e-6, rtol=1e-6)


def test_fc_mixes_fractions_per_eq8() -> None:
    torch.manual_seed(0)
    m, dim = 2, 4
    fc = FracConnection(dim, m, dynamic=False)
    Y, A, B = torch.randn(m, m), torch.randn(m, m), torch.randn(m)
    with torch.no_grad():
        fc.static_alpha.copy_(torch.cat([Y, A], dim=1))
        fc.static_beta.copy_(B)
    h = torch.randn(dim)
    H = h.view(m, dim // m)
    branch = lambda z: 3 * z  # noqa: E731  # a linear stand-in sub-layer
    want = B[:, None] * branch((Y.T @ H).reshape(dim)).view(m, dim // m) + A.T @ H  # Ĥ = Bᵀ T(YᵀH) + AᵀH
    with torch.no_grad():
        torch.testing.assert_close(fc(h.view(1, 1, dim), branch).view(m, dim // m), want)


def test_parameter_counts_match_the_papers_formulas() -> None:
    """§4.2: SHC×4 768 and DHC×4 394,048 for OLMo-1B (d 2048, 16 layers, non-affine LayerNorm);
    §4.4: DFC×4 165,056 with an RMSNorm(d/m) (|θ_norm| = d/m)."""
    modules = 2 * 16

    def count(mod: nn.Module) -> int:
        return sum(p.numel() for p in mod.parameters())

    assert modules * count(HyperConnection(2048, 4, layer_id=0, dynamic=False)) == 768
    dhc = HyperConnection(2048, 4, layer_id=0, dynamic=True)
    assert modules * (count(dhc) - count(dhc.norm)) == 394_048
    assert modules * count(FracConnection(2048, 4, dynamic=False)) == 1152
    assert modules * count(FracConnection(2048, 4, dynamic=True, norm=ConnectionNorm.RMSNORM)) == 165_056


def test_static_parts_take_no_weight_decay() -> None:
    model = LM(replace(BASE, residual=ResidualKind.HYPER, rate=2))
    decay, no_decay = model.param_groups(0.1)
    conn = model.blocks[0].attn_conn
    assert conn is not None
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731  # identity sets
    assert ids([conn.static_alpha, conn.static_beta, conn.dynamic_alpha_scale]) <= ids(no_decay["params"])
    assert ids([conn.dynamic_alpha_fn, conn.dynamic_beta_fn]) <= ids(decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(ids(decay["params"]) | ids(no_decay["params"])) == len(list(model.parameters()))
