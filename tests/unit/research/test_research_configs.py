"""Config validation of the research extension: one test per refusal, each naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from research.configs import (
    LLMBlocksConfig,
    LMConfig,
    LMTaskConfig,
    NormPlacement,
    ResidualKind,
    TextDataConfig,
)
from seedrec.errors import ConfigError


def test_defaults_and_string_enums_are_coerced() -> None:
    cfg = LMConfig(norm="hybrid_star", residual="plain", linear="sdd", sdd_variant="code")
    assert cfg.norm is NormPlacement.HYBRID_STAR and cfg.residual is ResidualKind.PLAIN
    assert cfg.head_dim == 32 and cfg.ffn_hidden % 16 == 0 and cfg.ffn_hidden >= 8 * 128 // 3


def test_config_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        LMConfig(n_layer=0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"norm": "sandwich"}, "norm"),
        ({"linear": "lora"}, "linear"),
        ({"vocab_size": 1}, "vocab_size"),
        ({"n_layer": 0}, "n_layer"),
        ({"n_head": 3}, "d_model"),  # 128 % 3
        ({"d_model": 12, "n_head": 4}, "d_model"),  # head width 3 is odd (RoPE)
        ({"dropout": 1.5}, "dropout"),
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"rate": 0}, "rate"),
        ({"dynamic": "yes"}, "dynamic"),
        ({"residual": "hyper", "norm": "post"}, "residual"),
        ({"residual": "frac", "rate": 3}, "rate"),
        ({"over_encoding": True, "oe_k": 3, "oe_n": 3}, "d_model"),  # 128 % 6
        ({"over_encoding": True, "oe_n": 5, "oe_k": 1, "vocab_size": 2**16}, "oe_n"),  # V^n overflows int64
        ({"oe_m": 0}, "oe_m"),
        ({"od_n": 1}, "od_n"),
        ({"od_weight": -0.1}, "od_weight"),
        ({"init_std": 0.0}, "init_std"),
        ({"init": "xavier"}, "init"),
        ({"mlp_hidden": 0}, "mlp_hidden"),
    ],
)
def test_lm_config_refusals_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"`{field}`"):
        LMConfig(**kwargs)


def test_from_dict_refuses_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="d_modle"):
        LMConfig.from_dict({"d_modle": 64})
    with pytest.raises(ConfigError, match="blocksize"):
        LMTaskConfig.from_dict({"kind": "lm", "data": {"blocksize": 3}})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"corpus": "wikipedia"}, "corpus"),
        ({"tokenizer": "wordpiece"}, "tokenizer"),
        ({"bpe_vocab_size": 256}, "bpe_vocab_size"),
        ({"valid_fraction": 0.0}, "valid_fraction"),
        ({"valid_fraction": 0.9}, "valid_fraction"),
        ({"block_size": 0}, "block_size"),
        ({"max_chars": 10}, "max_chars"),
        ({"include_folio": 1}, "include_folio"),
    ],
)
def test_text_data_config_refusals(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"`{field}`"):
        TextDataConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "ranking"}, "kind"),
        ({"batch_size": 0}, "batch_size"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"eval_batches": 0}, "eval_batches"),
        ({"seed": -1}, "seed"),
        ({"data": 3}, "data"),
    ],
)
def test_lm_task_config_refusals(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"`{field}`"):
        LMTaskConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"seeds": 0}, "seeds"), ({"lr": 0.0}, "lr"), ({"oe_sizes": ()}, "oe_sizes"), ({"stress_lr_mult": 0}, "stress_lr_mult")],
)
def test_experiment_config_refusals(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"`{field}`"):
        LLMBlocksConfig(**kwargs)


def test_configs_are_frozen() -> None:
    cfg = LMConfig()
    with pytest.raises(AttributeError):
        cfg.d_model = 3  # type: ignore[misc]  # checking that assignment is refused
