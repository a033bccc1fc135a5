"""Configs of the recsys models: enums and frozen dataclasses only (no modules, no I/O).

One dataclass per model variant, each tagged by ``kind`` so a YAML/JSON mapping picks its class
(:func:`model_config_from_dict`); :data:`ModelConfig` is their union. Every field is validated in
``__post_init__`` and a bad value raises :class:`~seedrec.errors.ConfigError` naming the field in
backticks. Checks that need the :class:`~feature_pipeline.spec.FeatureSpec` (feature names, the
sequence length, the item width) run when the model is built (``recsys.models.registry.build_model``).

Defaults cite where they come from: DIN (Zhou et al. 2018), ADS (``shared/specs/lmn-ads.md`` §2),
product-key memory (Lample et al. 2019, §3.1) and MSN (§1.6). ``[I]`` marks our own choice where
the papers are silent.

Example:
    >>> cfg = model_config_from_dict({"kind": "lmn", "n_sub": 64, "k": 8, "backbone": "mha"})
    >>> cfg.kind, cfg.n_sub ** 2, cfg.backbone is Backbone.MHA
    ('lmn', 4096, True)
    >>> LMNConfig(n_sub=4, k=8)
    Traceback (most recent call last):
    ...
    seedrec.errors.ConfigError: `k` = 8 exceeds `n_sub` = 4: each sub-key axis keeps its top-k, so k ≤ √n; lower `k` or raise `n_sub`
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum, unique
from typing import Any, Literal, TypeVar

from seedrec.errors import ConfigError

__all__ = [
    "Activation",
    "Backbone",
    "QueryFusion",
    "QueryNorm",
    "MemoryRead",
    "MemoryTarget",
    "EmbeddingLayerConfig",
    "DINConfig",
    "ADSConfig",
    "LMNConfig",
    "ModelConfig",
    "model_config_from_dict",
]


# ---- enums ------------------------------------------------------------------------------------
@unique
class Backbone(str, Enum):  # noqa: UP042  (STYLE §3 asks for str, Enum; StrEnum changes str())
    """The target-attention backbone that pools the behaviour sequence against the candidate."""

    DIN = "din"  # DIN activation unit: MLP([q, k, q−k, q⊙k]) → un-normalised weight per item
    MHA = "mha"  # multi-head target attention: masked softmax(q·k/√Dh) per head


@unique
class Activation(str, Enum):  # noqa: UP042  (as Backbone)
    """Hidden-layer activation of the DIN attention unit and of the prediction tower."""

    RELU = "relu"
    PRELU = "prelu"  # DIN §4.3's first choice; one learned slope per unit
    DICE = "dice"  # DIN §4.3: PReLU with a data-adaptive (batch-statistics) rectifier point


@unique
class QueryFusion(str, Enum):  # noqa: UP042  (as Backbone)
    """LMN: how the user enters the memory query (spec §1.3, the fusion form is unknown)."""

    CONCAT = "concat"  # q = W [x ; e_u]
    ADD = "add"  # q = W_x x + W_u e_u
    CANDIDATE = "candidate"  # q = W_x x: alternative (b), the item alone


@unique
class QueryNorm(str, Enum):  # noqa: UP042  (as Backbone)
    """LMN: normalisation of the memory query before the key scores."""

    LAYERNORM = "layernorm"  # MSN §1.6: stabilises retrieval, no batch coupling
    BATCHNORM = "batchnorm"  # PKM (Lample 2019) default `mem_query_batchnorm`
    NONE = "none"


@unique
class MemoryRead(str, Enum):  # noqa: UP042  (as Backbone)
    """LMN: where the memory read-out is used for prediction."""

    CANDIDATE = "candidate"  # r_cand = read(query(E_I, u)) goes into the tower (spec §1.3)
    SEQUENCE = "sequence"  # alternative (a): s_t + W r_t is the sequence the backbone attends over


@unique
class MemoryTarget(str, Enum):  # noqa: UP042  (as Backbone)
    """LMN: the regression target of the Smooth-L1 memory loss for a history item s_t."""

    PROJECTION = "projection"  # g([s_t ; e_u]), a learned linear map (spec §1.3)
    DETACHED = "detached"  # alternative (c): stop-grad(s_t); needs `d_value` == item width


# ---- helpers (pure) ---------------------------------------------------------------------------
_E = TypeVar("_E", bound=Enum)


def _coerce_enum(obj: object, name: str, enum: type[_E]) -> None:
    """Turn a string field into its enum (YAML gives strings), or raise naming the field."""
    value = getattr(obj, name)
    try:
        object.__setattr__(obj, name, enum(value))
    except ValueError:
        allowed = [e.value for e in enum]  # type: ignore[attr-defined]  # every enum here has str values
        raise ConfigError(f"`{name}` = {value!r} is not one of {allowed}") from None


def _coerce_ints(obj: object, name: str, *, allow_empty: bool) -> None:
    """Turn a list field into a tuple of positive ints (hashable, immutable), or raise."""
    value = getattr(obj, name)
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(f"`{name}` = {value!r} must be a list of positive ints") from None
    if not allow_empty and not items:
        raise ConfigError(f"`{name}` is empty; give at least one layer width")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items):
        raise ConfigError(f"`{name}` = {list(items)} must hold positive ints")
    object.__setattr__(obj, name, items)


def _coerce_names(obj: object, name: str) -> None:
    """Turn a list field into a tuple of distinct feature names, or raise."""
    value = getattr(obj, name)
    if isinstance(value, str):
        raise ConfigError(f"`{name}` = {value!r} must be a list of feature names, not one string")
    items = tuple(value)
    if any(not isinstance(v, str) or not v for v in items):
        raise ConfigError(f"`{name}` = {list(items)} must hold non-empty feature names")
    if len(set(items)) != len(items):
        raise ConfigError(f"`{name}` = {list(items)} has duplicates")
    object.__setattr__(obj, name, items)


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"`{name}` = {value!r}; must be an int ≥ 1")


# ---- embedding layer --------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EmbeddingLayerConfig:
    """Widths of the embedding tables (the rows and names come from the feature spec).

    Attributes:
        dim: if set, every table uses this width instead of ``TableSpec.embedding_dim``; handy for
            small experiments and for tests.
        dim_overrides: table name → width, applied after ``dim``. Unknown table names are refused
            when the model is built.

    Example:
        >>> EmbeddingLayerConfig(dim=16, dim_overrides={"user": 32}).dim_overrides
        {'user': 32}
    """

    dim: int | None = None
    dim_overrides: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dim is not None:
            _positive(self, "dim")
        object.__setattr__(self, "dim_overrides", dict(self.dim_overrides))
        bad = {k: v for k, v in self.dim_overrides.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
        if bad:
            raise ConfigError(f"`dim_overrides` = {bad}: widths must be ints ≥ 1")


# ---- models -----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class _TargetAttentionConfig:
    """Fields every target-attention model shares: embeddings, backbone and prediction tower.

    Attributes:
        embedding: table widths.
        backbone: ``din`` (activation unit, no softmax) or ``mha`` (multi-head masked softmax).
        attention_hidden: DIN activation-unit MLP widths; (80, 40) as in DIN's Fig. 2.
        num_heads: MHA heads H.
        head_dim: MHA per-head width Dh (the pooled interest is H·Dh wide). [I] 16.
        tower_hidden: prediction MLP widths; (200, 80) as in DIN's Fig. 2.
        activation: hidden activation of the unit and the tower; PReLU (DIN §4.3) by default
            because Dice's batch statistics need large batches to be steady.
        dropout: dropout after every tower hidden layer.
    """

    embedding: EmbeddingLayerConfig = field(default_factory=EmbeddingLayerConfig)
    backbone: Backbone = Backbone.DIN
    attention_hidden: tuple[int, ...] = (80, 40)
    num_heads: int = 2
    head_dim: int = 16
    tower_hidden: tuple[int, ...] = (200, 80)
    activation: Activation = Activation.PRELU
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.embedding, Mapping):
            object.__setattr__(self, "embedding", EmbeddingLayerConfig(**self.embedding))
        if not isinstance(self.embedding, EmbeddingLayerConfig):
            raise ConfigError(f"`embedding` = {self.embedding!r} must be an EmbeddingLayerConfig or a mapping")
        _coerce_enum(self, "backbone", Backbone)
        _coerce_enum(self, "activation", Activation)
        _coerce_ints(self, "attention_hidden", allow_empty=False)
        _coerce_ints(self, "tower_hidden", allow_empty=True)
        _positive(self, "num_heads", "head_dim")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"`dropout` = {self.dropout}; must be in [0, 1)")
        expected = {DINConfig: "din", ADSConfig: "ads", LMNConfig: "lmn"}.get(type(self))
        kind = getattr(self, "kind", expected)  # only the tagged variants have a `kind`
        if kind != expected:
            raise ConfigError(f"`kind` = {kind!r}; {type(self).__name__} has kind {expected!r}")


@dataclass(frozen=True, kw_only=True)
class DINConfig(_TargetAttentionConfig):
    """DIN (Zhou et al., KDD 2018), or multi-head target attention with ``backbone="mha"``.

    Example:
        >>> DINConfig(backbone="mha", num_heads=4).backbone
        <Backbone.MHA: 'mha'>
    """

    kind: Literal["din"] = "din"


@dataclass(frozen=True, kw_only=True)
class ADSConfig(_TargetAttentionConfig):
    """ADS (Chai et al., SIGIR 2025; spec §2) on a DIN or MHA backbone.

    Attributes:
        domain_features: implicit domain indicators (sparse feature names) whose embeddings join
            E_D (§2.2); checked against the spec at build. Default: the user-group features of
            Seedrec's sample builder.
        explicit_domain: put the spec's ``domain``-kind feature (the scenario id) into E_D.
        eta: η of eq. 3, rescaling the sigmoid-bounded private weight. Not given [gap]; 2.0 as in
            PEPNet's 2·sigmoid gate (spec §2.3 [I]).
        hidden_dim: d_h, the bottleneck of the generator MLPs of eqs. 2, 4 and 6. [I] 64.
        num_chunks: G of the chunked PCRG: one generated query per chunk of adjacent positions.
            ``None`` = one query per position (unchunked, the paper's best). Must be ≤ T (checked
            at build); when G does not divide T the chunks are ⌊T/G⌋ or ⌈T/G⌉ positions long.
        psrg: use PSRG (eqs. 2–5); off = the raw sequence (the ablation of Table 4).
        pcrg: use PCRG (eqs. 6–7); off = the tiled candidate as every position's query.

    Example:
        >>> ADSConfig(num_chunks=5, eta=1.0).num_chunks
        5
    """

    kind: Literal["ads"] = "ads"
    domain_features: tuple[str, ...] = ("age_bucket", "activity")
    explicit_domain: bool = True
    eta: float = 2.0
    hidden_dim: int = 64
    num_chunks: int | None = None
    psrg: bool = True
    pcrg: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _coerce_names(self, "domain_features")
        if not self.domain_features and not self.explicit_domain:
            raise ConfigError("E_D is empty: set `explicit_domain` = True or list some `domain_features`")
        if not self.eta > 0.0:
            raise ConfigError(f"`eta` = {self.eta}; must be > 0 (it scales the generated weight)")
        _positive(self, "hidden_dim")
        if self.num_chunks is not None:
            _positive(self, "num_chunks")


@dataclass(frozen=True, kw_only=True)
class LMNConfig(_TargetAttentionConfig):
    """LMN (Lu et al., WWW 2025 Companion) as reconstructed in spec §1.3, on a DIN or MHA backbone.

    The memory is a product-key memory (Lample et al. 2019): n = ``n_sub``² value slots.

    Attributes:
        n_sub: √n, the size of each sub-key set. 256 (n = 65,536) is MSN's default (§1.6);
            production is 1024² ≈ 1.05M.
        k: slots read per query (top-k on each axis, then over the k² sums). 32 as in MSN/XLM.
        d_key: query/key width d_k (each sub-key is d_k/2 wide); must be even. [I] 32.
        d_value: value-row width d_v. 32 (spec §4.2 suggests 16–32).
        query_fusion: how e_u enters the query (alternative (b) is ``candidate``).
        query_norm: normalisation of q; LayerNorm as MSN. BatchNorm (PKM) also pools the padded
            history positions into its statistics.
        memory_read: ``candidate`` read into the tower, or ``sequence`` (alternative (a)).
        memory_target: ``projection`` g([s_t ; e_u]) or ``detached`` stop-grad(s_t) (alternative (c)).
        memory_weight: λ of L = BCE + λ·L_mem. Not given [gap]; [I] 0.1.
        smooth_l1_beta: the Smooth-L1 transition point β (PyTorch's default 1.0).
        user_features: sparse features whose embeddings form e_u; checked against the spec at build.

    Example:
        >>> LMNConfig(n_sub=1024, k=32, d_value=64).memory_read
        <MemoryRead.CANDIDATE: 'candidate'>
    """

    kind: Literal["lmn"] = "lmn"
    n_sub: int = 256
    k: int = 32
    d_key: int = 32
    d_value: int = 32
    query_fusion: QueryFusion = QueryFusion.CONCAT
    query_norm: QueryNorm = QueryNorm.LAYERNORM
    memory_read: MemoryRead = MemoryRead.CANDIDATE
    memory_target: MemoryTarget = MemoryTarget.PROJECTION
    memory_weight: float = 0.1
    smooth_l1_beta: float = 1.0
    user_features: tuple[str, ...] = ("user_id",)

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "n_sub", "k", "d_key", "d_value")
        if self.k > self.n_sub:
            raise ConfigError(
                f"`k` = {self.k} exceeds `n_sub` = {self.n_sub}: each sub-key axis keeps its top-k, "
                "so k ≤ √n; lower `k` or raise `n_sub`"
            )
        if self.d_key % 2:
            raise ConfigError(f"`d_key` = {self.d_key} must be even: the query splits into two halves of d_k/2")
        for name, enum in (
            ("query_fusion", QueryFusion),
            ("query_norm", QueryNorm),
            ("memory_read", MemoryRead),
            ("memory_target", MemoryTarget),
        ):
            _coerce_enum(self, name, enum)
        if not self.memory_weight >= 0.0:
            raise ConfigError(f"`memory_weight` = {self.memory_weight}; must be ≥ 0 (0 turns the memory write off)")
        if not self.smooth_l1_beta > 0.0:
            raise ConfigError(f"`smooth_l1_beta` = {self.smooth_l1_beta}; must be > 0")
        _coerce_names(self, "user_features")
        if not self.user_features and self.query_fusion != QueryFusion.CANDIDATE:
            raise ConfigError(
                f"`user_features` is empty but `query_fusion` = {self.query_fusion.value!r} needs e_u; "
                "list some user features or use `query_fusion` = 'candidate'"
            )
        if not self.user_features and self.memory_target == MemoryTarget.PROJECTION:
            raise ConfigError("`user_features` is empty but `memory_target` = 'projection' reads e_u; list some")


ModelConfig = DINConfig | ADSConfig | LMNConfig
"""Any model config; ``kind`` tells the variants apart."""

_CONFIG_BY_KIND: dict[str, type[DINConfig] | type[ADSConfig] | type[LMNConfig]] = {
    "din": DINConfig,
    "ads": ADSConfig,
    "lmn": LMNConfig,
}


def model_config_from_dict(d: Mapping[str, Any]) -> ModelConfig:
    """Build the config variant named by ``d["kind"]`` from a plain mapping (YAML, JSON, CLI).

    Args:
        d: field name → value, with ``kind`` in {"din", "ads", "lmn"}; ``embedding`` may be a mapping.

    Returns:
        The validated config.

    Raises:
        ConfigError: unknown ``kind`` or field, or a bad value.
    """
    kind = d.get("kind")
    if kind not in _CONFIG_BY_KIND:
        raise ConfigError(f"`kind` = {kind!r} is not one of {sorted(_CONFIG_BY_KIND)}")
    cls = _CONFIG_BY_KIND[kind]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown field(s) {unknown} for kind {kind!r}; known: {sorted(known)}")
    return cls(**dict(d))
