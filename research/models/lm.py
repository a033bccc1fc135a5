"""One decoder-only LM whose config selects each building block of five ByteDance Seed papers.

Papers (spec ``shared/specs/llm-blocks.md``):
  * HybridNorm, arXiv 2503.04598 — norm placement ``pre`` / ``post`` / ``hybrid`` / ``hybrid_star`` (§2);
  * SDD, arXiv 2502.15499 — ``linear: sdd``, paper or official-code variant (§3);
  * Hyper-Connections, arXiv 2409.19606, and Frac-Connections, arXiv 2503.14125 — ``residual`` (§4);
  * Over-Tokenized Transformer, arXiv 2501.16975 — ``over_encoding`` / ``over_decoding`` (§5).

Skeleton after karpathy/nanoGPT ``model.py`` (MIT): RoPE attention (rotate-half, as GPT-NeoX/Llama),
SwiGLU or GELU MLP, no biases, a final RMSNorm ``ln_f`` and a head tied to the token embedding.

Forward, with ``n`` HC streams (``n = 1`` and no expansion otherwise)::

    x = wte(idx)                          (B, T, D)      [+ Over-Encoding, /(1+k(n-1))]
    H = n copies of x                     (B, T, n, D)   [HC only]
    H = block_L(...block_1(H))            each block: attention sub-layer, then FFN sub-layer
    h = ln_f(Σ_streams H)                 (B, T, D)
    logits = h · wteᵀ                     (B, T, V)      [+ Over-Decoding heads on h]
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from research.configs import (
    ConnectionNorm,
    InitKind,
    LinearKind,
    LMConfig,
    MLPKind,
    NormPlacement,
    ResidualKind,
    SDDVariant,
)
from research.nn.connections import (
    NO_WEIGHT_DECAY,
    FracConnection,
    HyperConnection,
    expand_streams,
    reduce_streams,
)
from research.nn.norms import RMSNorm, Sublayer, block_forms
from research.nn.over_tokenized import OverDecoding, OverEncoding
from research.nn.sdd import ProjectionRole, SDDLinear, context_norm, make_projection, sdd_alpha_init

__all__ = ["LM", "PRESETS", "CausalSelfAttention", "MLP", "Block", "RotaryEmbedding"]


# ---- helpers ----------------------------------------------------------------------------------
class RotaryEmbedding(nn.Module):
    """Rotary position embedding (rotate-half layout) for inputs (B, T, H, Dh).

    Args:
        head_dim: ``Dh`` (even).
        max_seq: the longest ``T``.
        theta: the frequency base.

    Example:
        >>> rope = RotaryEmbedding(4, 8)
        >>> rope(torch.ones(1, 3, 2, 4)).shape
        torch.Size([1, 3, 2, 4])
    """

    def __init__(self, head_dim: int, max_seq: int, *, theta: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (Dh/2,)
        angles = torch.outer(torch.arange(max_seq, dtype=torch.float64), inv_freq)  # (T, Dh/2)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, H, Dh) -> (B, T, H, Dh); position t rotates pair (i, i + Dh/2) by t·θ^(-2i/Dh)."""
        T, half = x.shape[1], x.shape[-1] // 2
        cos = self.cos[:T, None, :].to(x.dtype)  # (T, 1, Dh/2)
        sin = self.sin[:T, None, :].to(x.dtype)  # (T, 1, Dh/2)
        x1, x2 = x[..., :half], x[..., half:]  # (B, T, H, Dh/2) each
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, T, H, Dh)


# ---- blocks, in forward order -----------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with RoPE and, for HybridNorm, QKV-Norm.

    QKV-Norm (HybridNorm §2.2-2.3): a per-head RMSNorm (size ``Dh``, affine, shared by the heads)
    on q, k and v after the heads are split and *before* RoPE:
    ``softmax(Norm(Q) Norm(K)ᵀ/√Dh) Norm(V)``.

    Args:
        config: the model config.
        qkv_norm: normalise q, k, v per head.
    """

    def __init__(self, config: LMConfig, *, qkv_norm: bool) -> None:
        super().__init__()
        D, self.n_head, self.head_dim = config.d_model, config.n_head, config.head_dim
        self.q_proj = make_projection(D, D, role="q", config=config)
        self.k_proj = make_projection(D, D, role="k", config=config)
        self.v_proj = make_projection(D, D, role="v", config=config)
        self.o_proj = make_projection(D, D, role="o", config=config)
        self.qkv_norm = qkv_norm
        if qkv_norm:
            self.q_norm = RMSNorm(self.head_dim, eps=config.norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=config.norm_eps)
            self.v_norm = RMSNorm(self.head_dim, eps=config.norm_eps)
        self.context_norm = context_norm(config)  # SDD code variant only, else identity
        self.rope = RotaryEmbedding(self.head_dim, config.block_size, theta=config.rope_theta)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        B, T, D = x.shape
        H, Dh = self.n_head, self.head_dim
        q = self.q_proj(x).view(B, T, H, Dh)  # (B, T, H, Dh)
        k = self.k_proj(x).view(B, T, H, Dh)  # (B, T, H, Dh)
        v = self.v_proj(x).view(B, T, H, Dh)  # (B, T, H, Dh)
        if self.qkv_norm:
            q, k, v = self.q_norm(q), self.k_norm(k), self.v_norm(v)
        q, k = self.rope(q), self.rope(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, Dh)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.resid_dropout(self.o_proj(self.context_norm(y)))


class MLP(nn.Module):
    """SwiGLU ``down(silu(gate) ⊙ up)`` (fused up+gate projection) or GELU ``down(gelu(up))``."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.swiglu = config.mlp is MLPKind.SWIGLU
        hidden = config.ffn_hidden
        self.up = make_projection(config.d_model, 2 * hidden if self.swiglu else hidden, role="up", config=config)
        self.down = make_projection(hidden, config.d_model, role="down", config=config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        u = self.up(x)  # (B, T, 2F) or (B, T, F)
        if self.swiglu:
            up, gate = u.chunk(2, dim=-1)  # (B, T, F) each
            u = F.silu(gate) * up
        else:
            u = F.gelu(u)
        return self.dropout(self.down(u))  # (B, T, D)


class Block(nn.Module):
    """Attention then FFN, each wrapped by its placement's norm and residual, or by an HC/FC.

    With ``residual: plain`` the placement (:func:`~research.nn.norms.block_forms`) wraps each
    sub-layer. With ``hyper`` / ``frac`` each sub-layer is a Pre-Norm branch ``F(Norm(h₀))`` mixed by
    its own connection module (HC Alg. 3): module index ``2l`` for attention, ``2l+1`` for FFN.

    Args:
        config: the model config.
        layer_idx: ``l``, 0-based.
    """

    def __init__(self, config: LMConfig, layer_idx: int) -> None:
        super().__init__()
        forms = block_forms(config.norm, layer_idx)
        self.attn = CausalSelfAttention(config, qkv_norm=forms.qkv_norm)
        self.mlp = MLP(config)
        self.attn_sub = Sublayer(forms.attn, config.d_model, eps=config.norm_eps)
        self.mlp_sub = Sublayer(forms.ffn, config.d_model, eps=config.norm_eps)
        self.attn_conn: HyperConnection | FracConnection | None = None
        self.mlp_conn: HyperConnection | FracConnection | None = None
        D, rate, dyn, cn, eps = config.d_model, config.rate, config.dynamic, config.connection_norm, config.norm_eps
        if config.residual is ResidualKind.HYPER:
            self.attn_conn = HyperConnection(D, rate, layer_id=2 * layer_idx, dynamic=dyn, norm=cn, eps=eps)
            self.mlp_conn = HyperConnection(D, rate, layer_id=2 * layer_idx + 1, dynamic=dyn, norm=cn, eps=eps)
        elif config.residual is ResidualKind.FRAC:
            self.attn_conn = FracConnection(D, rate, dynamic=dyn, norm=cn, eps=eps)
            self.mlp_conn = FracConnection(D, rate, dynamic=dyn, norm=cn, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D), or the HC streams (B, T, n, D) -> same shape."""
        if self.attn_conn is None or self.mlp_conn is None:
            x = self.attn_sub(x, self.attn)
            return self.mlp_sub(x, self.mlp)
        x = self.attn_conn(x, partial(self.attn_sub.branch, fn=self.attn))
        return self.mlp_conn(x, partial(self.mlp_sub.branch, fn=self.mlp))


# ---- the model --------------------------------------------------------------------------------
class LM(nn.Module):
    """The decoder LM; ``forward(idx (B, T), targets=None) -> (logits (B, T, V), loss)``.

    Args:
        config: selects placement, linear kind, residual kind, Over-Encoding and Over-Decoding.

    Example:
        >>> model = LM(PRESETS["hybridnorm"])
        >>> idx = torch.randint(0, 256, (2, 16))
        >>> logits, loss = model(idx, idx)
        >>> logits.shape, loss.shape
        (torch.Size([2, 16, 256]), torch.Size([]))
    """

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        D, V = config.d_model, config.vocab_size
        self.wte = nn.Embedding(V, D)
        self.over_encoding = (
            OverEncoding(V, D, n=config.oe_n, m=config.oe_m, k=config.oe_k) if config.over_encoding else None
        )
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = RMSNorm(D, eps=config.norm_eps)
        self.over_decoding = (
            OverDecoding(D, V, n=config.od_n, weight=config.od_weight) if config.over_decoding else None
        )
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """All initialisation (each special case cites its paper)."""
        cfg = self.config
        std = cfg.weight_std  # 1/√(2.5 D) unless `init_std` is given (OLMo, HybridNorm §2.3, SDD §3.2)

        def normal_(w: torch.Tensor, s: float) -> None:
            if cfg.init is InitKind.MEGATRON:
                nn.init.trunc_normal_(w, mean=0.0, std=s, a=-3 * s, b=3 * s)  # cutoff 3σ (HybridNorm code)
            else:
                nn.init.normal_(w, mean=0.0, std=s)

        for module in self.modules():
            if isinstance(module, (nn.Linear, SDDLinear, nn.Embedding)):
                normal_(module.weight, std)
            elif isinstance(module, (RMSNorm, nn.LayerNorm)):
                nn.init.ones_(module.weight)
                if isinstance(module, nn.LayerNorm) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (HyperConnection, FracConnection)):
                module.reset_parameters()  # HC Eq. 14 / FC Eq. 15
        for block in self.blocks:
            assert isinstance(block, Block)
            outputs: tuple[tuple[ProjectionRole, nn.Module], ...] = (("o", block.attn.o_proj), ("down", block.mlp.down))
            for _, proj in outputs:
                s = std
                if cfg.init is InitKind.MEGATRON:
                    s /= math.sqrt(2 * cfg.n_layer)  # attn_out / ff_out: std/√(2L) (HybridNorm code, §2.3)
                if cfg.residual is ResidualKind.HYPER:
                    s /= math.sqrt(cfg.rate)  # output modules' std scaled by √n (HC §4, Implementation)
                normal_(proj.weight, s)  # type: ignore[arg-type]  # nn.Linear and SDDLinear both have `weight`
            if cfg.linear is LinearKind.SDD:
                roles: tuple[tuple[ProjectionRole, nn.Module], ...] = (
                    ("q", block.attn.q_proj),
                    ("k", block.attn.k_proj),
                    ("v", block.attn.v_proj),
                    *outputs,
                    ("up", block.mlp.up),
                )
                for role, proj in roles:
                    if isinstance(proj, SDDLinear):
                        # α = 1/√L (paper §3.2) or 1/√(2L) (code §3.3) on o and down, 1 elsewhere
                        proj.alpha.fill_(sdd_alpha_init(cfg.sdd_variant, role, cfg.n_layer))

    def forward_with_terms(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """The forward pass, also returning the named loss terms.

        Args:
            idx: token ids, (B, T), ``T <= block_size``. Not validated (hot path).
            targets: next-token ids, (B, T), or ``None``.

        Returns:
            ``logits`` (B, T, V); ``loss`` = ``ce`` + Σ ``λ·od_j`` (or ``None``); and the terms
            ``{"ce": ..., "od_2": ...}`` (empty without targets).
        """
        B, T = idx.shape
        x = self.wte(idx)  # (B, T, D)
        if self.over_encoding is not None:
            x = self.over_encoding(idx, x)  # (B, T, D)
        if self.config.residual is ResidualKind.HYPER:
            x = expand_streams(x, self.config.rate)  # (B, T, n, D)
        for block in self.blocks:
            x = block(x)
        if self.config.residual is ResidualKind.HYPER:
            x = reduce_streams(x)  # (B, T, D)
        h = self.ln_f(x)  # (B, T, D)
        logits = F.linear(h, self.wte.weight)  # (B, T, V), tied head
        if targets is None:
            return logits, None, {}
        terms = {"ce": F.cross_entropy(logits.flatten(0, 1), targets.flatten())}
        loss = terms["ce"]
        if self.over_decoding is not None:
            od = self.over_decoding.losses(h, targets)
            terms.update(od)
            for value in od.values():
                loss = loss + self.over_decoding.weight * value
        return logits, loss, terms

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) -> logits (B, T, V) and the training loss (``None`` without ``targets``)."""
        logits, loss, _ = self.forward_with_terms(idx, targets)
        return logits, loss

    def param_groups(self, weight_decay: float) -> list[dict[str, object]]:
        """AdamW groups: decay on matrices, embeddings and dynamic HC/FC ``W``; none on norms, SDD α
        and static HC/FC parts (HC §4: "static parts get no weight decay; dynamic parts do")."""
        decay, no_decay = [], []
        for module in self.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, (HyperConnection, FracConnection)):
                    (no_decay if name in NO_WEIGHT_DECAY else decay).append(p)
                elif isinstance(module, SDDLinear):
                    (decay if name == "weight" else no_decay).append(p)
                else:
                    (decay if p.ndim >= 2 else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def num_params(self) -> dict[str, int]:
        """Parameter counts: ``total``, ``embedding`` (wte + n-gram tables) and ``non_embedding``."""
        total = sum(p.numel() for p in self.parameters())
        emb = self.wte.weight.numel()
        if self.over_encoding is not None:
            emb += sum(t.weight.numel() for t in self.over_encoding.tables)  # type: ignore[union-attr]  # nn.Embedding
        return {"total": total, "embedding": emb, "non_embedding": total - emb}


# ---- presets, keyed by the papers' names ------------------------------------------------------
_BASE = LMConfig(vocab_size=256, block_size=128, n_layer=4, n_head=4, d_model=128)

PRESETS: dict[str, LMConfig] = {
    "prenorm": _BASE,
    "postnorm": replace(_BASE, norm=NormPlacement.POST),
    "hybridnorm": replace(_BASE, norm=NormPlacement.HYBRID, init=InitKind.MEGATRON),
    "hybridnorm_star": replace(_BASE, norm=NormPlacement.HYBRID_STAR, init=InitKind.MEGATRON),
    "sdd": replace(_BASE, norm=NormPlacement.POST, linear=LinearKind.SDD),
    "sdd_code": replace(_BASE, norm=NormPlacement.POST, linear=LinearKind.SDD, sdd_variant=SDDVariant.CODE),
    "shc_x4": replace(_BASE, residual=ResidualKind.HYPER, rate=4, dynamic=False),
    "dhc_x4": replace(_BASE, residual=ResidualKind.HYPER, rate=4, dynamic=True),
    "dhc_x1": replace(_BASE, residual=ResidualKind.HYPER, rate=1, dynamic=True),
    "sfc_x4": replace(_BASE, residual=ResidualKind.FRAC, rate=4, dynamic=False),
    "dfc_x4": replace(_BASE, residual=ResidualKind.FRAC, rate=4, dynamic=True, connection_norm=ConnectionNorm.LAYERNORM),
    "oe": replace(_BASE, over_encoding=True, oe_n=3, oe_m=4099, oe_k=2),
    "ot": replace(_BASE, over_encoding=True, oe_n=3, oe_m=4099, oe_k=2, over_decoding=True, od_n=2, od_weight=0.1),
}
