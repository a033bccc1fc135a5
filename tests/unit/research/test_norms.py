"""Norm placements, checked on the module graph: forward hooks record which norm, attention, RoPE
and FFN modules run, in which order, and on which tensors (spec §2.2, Eq. 6-7)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from research.configs import LMConfig, NormPlacement, SublayerForm
from research.models.lm import LM, MLP, Block, CausalSelfAttention, RotaryEmbedding
from research.nn.norms import RMSNorm, Sublayer, block_forms, rms_norm

CFG = LMConfig(vocab_size=32, block_size=8, n_layer=3, n_head=2, d_model=16)


@dataclass
class Call:
    name: str
    kind: str  # "norm", "attn", "ffn", "rope"
    inp: torch.Tensor
    out: torch.Tensor


def _kind(m: nn.Module) -> str | None:
    if isinstance(m, RMSNorm):
        return "norm"
    if isinstance(m, CausalSelfAttention):
        return "attn"
    if isinstance(m, MLP):
        return "ffn"
    if isinstance(m, RotaryEmbedding):
        return "rope"
    return None


def record(model: nn.Module, x: torch.Tensor) -> tuple[list[Call], torch.Tensor]:
    """Runs ``model(x)`` and returns the calls in order of entry, with their input and output."""
    calls: list[Call] = []
    handles = []
    for name, m in model.named_modules():
        kind = _kind(m)
        if kind is None:
            continue

        def pre(mod: nn.Module, args: tuple[torch.Tensor, ...], name: str = name, kind: str = kind) -> None:
            calls.append(Call(name, kind, args[0], torch.empty(0)))
            mod._call_idx = len(calls) - 1  # type: ignore[assignment]  # test-only bookkeeping

        def post(mod: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            calls[mod._call_idx].out = out  # type: ignore[index]  # set by pre

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for h in handles:
            h.remove()
    return calls, y if isinstance(y, torch.Tensor) else y[0]


def _block(norm: NormPlacement, layer_idx: int = 1) -> Block:
    torch.manual_seed(0)
    return Block(LMConfig(vocab_size=32, block_size=8, n_layer=3, n_head=2, d_model=16, norm=norm), layer_idx)


def _top(calls: list[Call]) -> list[tuple[str, str]]:
    """The block-level calls: attention, FFN and the block's own norms (not q/k/v norms, not RoPE)."""
    return [(c.kind, c.name) for c in calls if c.kind in ("attn", "ffn") or c.name.endswith("_sub.norm")]


def test_rmsnorm_matches_its_formula() -> None:
    x = torch.randn(3, 5)
    norm = RMSNorm(5, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(5))
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(rms_norm(x, None, 1e-5), x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))


def test_pre_norm_block_order_and_equations() -> None:
    block = _block(NormPlacement.PRE)
    x = torch.randn(2, 8, 16)
    calls, out = record(block, x)
    assert _top(calls) == [("norm", "attn_sub.norm"), ("attn", "attn"), ("norm", "mlp_sub.norm"), ("ffn", "mlp")]
    n1, attn, n2, ffn = (c for c in calls if (c.kind, c.name) in _top(calls))
    assert torch.equal(n1.inp, x) and torch.equal(attn.inp, n1.out)  # MHA(Norm(X))
    y = x + attn.out  # Y = MHA(Norm(X)) + X
    torch.testing.assert_close(n2.inp, y)
    assert torch.equal(ffn.inp, n2.out)
    torch.testing.assert_close(out, y + ffn.out)  # X' = FFN(Norm(Y)) + Y
    assert not any(c.name.endswith(("q_norm", "k_norm", "v_norm")) for c in calls)


def test_post_norm_block_order_and_equations() -> None:
    block = _block(NormPlacement.POST)
    x = torch.randn(2, 8, 16)
    calls, out = record(block, x)
    assert _top(calls) == [("attn", "attn"), ("norm", "attn_sub.norm"), ("ffn", "mlp"), ("norm", "mlp_sub.norm")]
    attn, n1, ffn, n2 = (c for c in calls if (c.kind, c.name) in _top(calls))
    assert torch.equal(attn.inp, x)
    torch.testing.assert_close(n1.inp, x + attn.out)  # Y = Norm(MHA(X) + X)
    assert torch.equal(ffn.inp, n1.out)
    torch.testing.assert_close(n2.inp, n1.out + ffn.out)  # X' = Norm(FFN(Y) + Y)
    assert torch.equal(out, n2.out)


def test_hybridnorm_block_is_eq6() -> None:
    block = _block(NormPlacement.HYBRID)
    x = torch.randn(2, 8, 16)
    calls, out = record(block, x)
    # no pre-norm on the attention input; one norm between attention and FFN
    assert _top(calls) == [("attn", "attn"), ("norm", "mlp_sub.norm"), ("ffn", "mlp")]
    attn, n2, ffn = (c for c in calls if (c.kind, c.name) in _top(calls))
    assert torch.equal(attn.inp, x)  # MHA_QKV(X), not MHA(Norm(X))
    y = x + attn.out  # Y = MHA_QKV(X) + X
    torch.testing.assert_close(n2.inp, y)
    assert torch.equal(ffn.inp, n2.out)
    torch.testing.assert_close(out, n2.out + ffn.out)  # X' = FFN(Norm(Y)) + Norm(Y)


def test_hybridnorm_qkv_norms_are_per_head_and_before_rope() -> None:
    block = _block(NormPlacement.HYBRID)
    x = torch.randn(2, 8, 16)
    calls, _ = record(block, x)
    inner = [(c.kind, c.name) for c in calls if c.name.startswith("attn.")]
    assert inner == [
        ("norm", "attn.q_norm"), ("norm", "attn.k_norm"), ("norm", "attn.v_norm"), ("rope", "attn.rope"), ("rope", "attn.rope"),
    ]
    by = {c.name: c for c in calls if c.name in ("attn.q_norm", "attn.k_norm", "attn.v_norm")}
    ropes = [c for c in calls if c.kind == "rope"]
    assert by["attn.q_norm"].inp.shape == (2, 8, 2, 8)  # (B, T, H, Dh): normalised per head
    assert block.attn.q_norm.weight.shape == (8,)  # Dh, shared by the heads
    assert torch.equal(ropes[0].inp, by["attn.q_norm"].out) and torch.equal(ropes[1].inp, by["attn.k_norm"].out)
    q = block.attn.q_proj(x).view(2, 8, 2, 8)
    torch.testing.assert_close(by["attn.q_norm"].out, rms_norm(q, block.attn.q_norm.weight, CFG.norm_eps))


def test_hybridnorm_star_changes_only_block_zero() -> None:
    torch.manual_seed(0)
    model = LM(LMConfig(vocab_size=32, block_size=8, n_layer=3, n_head=2, d_model=16, norm="hybrid_star"))
    idx = torch.randint(0, 32, (2, 8))
    calls, _ = record(model, idx)
    per_block = {
        i: [(c.kind, c.name.split(".", 2)[2]) for c in calls if c.name.startswith(f"blocks.{i}.") and
            (c.kind in ("attn", "ffn") or c.name.endswith("_sub.norm") or c.name.endswith("q_norm"))]
        for i in range(3)
    }
    # Eq. 7: Y⁰ = MHA_QKV(Norm(X⁰)) + X⁰ ; X¹ = FFN(Norm(Y⁰)) + Y⁰
    assert per_block[0] == [("norm", "attn_sub.norm"), ("attn", "attn"), ("norm", "attn.q_norm"), ("norm", "mlp_sub.norm"), ("ffn", "mlp")]
    for i in (1, 2):  # Eq. 6
        assert per_block[i] == [("attn", "attn"), ("norm", "attn.q_norm"), ("norm", "mlp_sub.norm"), ("ffn", "mlp")]
    b0 = [c for c in calls if c.name.startswith("blocks.0.")]
    emb = model.wte(idx)
    assert torch.equal(b0[0].inp, emb)  # the first norm sees the embedding X⁰
    attn0 = next(c for c in b0 if c.kind == "attn")
    assert torch.equal(attn0.inp, b0[0].out)
    ffn0 = next(c for c in b0 if c.kind == "ffn")
    block1_in = next(c for c in calls if c.name == "blocks.1.attn").inp
    torch.testing.assert_close(block1_in, emb + attn0.out + ffn0.out)  # X¹ = FFN(Norm(Y⁰)) + Y⁰ (un-normalised)


@pytest.mark.parametrize(
    ("placement", "layer", "forms"),
    [
        (NormPlacement.PRE, 0, (SublayerForm.PRE, SublayerForm.PRE, False)),
        (NormPlacement.POST, 2, (SublayerForm.POST, SublayerForm.POST, False)),
        (NormPlacement.HYBRID, 0, (SublayerForm.PLAIN, SublayerForm.NORM_RESIDUAL, True)),
        (NormPlacement.HYBRID_STAR, 0, (SublayerForm.PRE, SublayerForm.PRE, True)),
        (NormPlacement.HYBRID_STAR, 1, (SublayerForm.PLAIN, SublayerForm.NORM_RESIDUAL, True)),
    ],
)
def test_block_forms_table(placement: NormPlacement, layer: int, forms: tuple[SublayerForm, SublayerForm, bool]) -> None:
    f = block_forms(placement, layer)
    assert (f.attn, f.ffn, f.qkv_norm) == forms


def test_sublayer_branch_is_fn_of_norm() -> None:
    sub = Sublayer(SublayerForm.PRE, 4)
    x = torch.randn(2, 4)
    torch.testing.assert_close(sub.branch(x, lambda z: 2 * z), 2 * sub.norm(x))
    assert isinstance(Sublayer(SublayerForm.PLAIN, 4).norm, nn.Identity)
