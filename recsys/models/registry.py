"""Build any recsys model from its config: ``kind`` ("din", "ads", "lmn") picks the class.

Example:
    >>> sorted(MODEL_KINDS)
    ['ads', 'din', 'lmn']
"""

from __future__ import annotations

import torch
from torch import nn

from feature_pipeline.spec import FeatureSpec
from recsys.configs import ModelConfig
from recsys.models.ads import ADS
from recsys.models.din import DIN
from recsys.models.lmn import LMN
from seedrec.errors import ConfigError

__all__ = ["MODEL_KINDS", "build_model"]

MODEL_KINDS: dict[str, type[DIN] | type[ADS] | type[LMN]] = {"din": DIN, "ads": ADS, "lmn": LMN}
"""``kind`` → model class; each takes ``(cfg, spec, *, device)``."""


def build_model(cfg: ModelConfig, spec: FeatureSpec, *, device: torch.device | str = "cpu") -> nn.Module:
    """Build the model ``cfg.kind`` names for the features of ``spec``.

    Args:
        cfg: a validated model config.
        spec: the sample set's feature spec (tables, features, T, labels).
        device: where parameters live; ``"meta"`` allocates nothing, for TorchRec's
            DistributedModelParallel to shard and materialise (dense blocks then run their
            ``reset_parameters``; tables take their config init).

    Returns:
        The model; ``forward(batch: Batch) -> ModelOutput`` with logits (B, len(spec.label_names)).

    Raises:
        ConfigError: unknown ``kind``, or a config that does not fit the spec (a feature name the
            spec lacks, too many chunks for T, no sequence or label feature, ...).
    """
    cls = MODEL_KINDS.get(cfg.kind)
    if cls is None:
        raise ConfigError(f"`kind` = {cfg.kind!r} is not one of {sorted(MODEL_KINDS)}")
    return cls(cfg, spec, device=device)  # type: ignore[arg-type]  # kind tags match the config classes
