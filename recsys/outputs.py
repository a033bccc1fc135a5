"""What every recsys model returns, so one Trainer, one evaluator and one server handle them all."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.utils._pytree as pytree

__all__ = ["ModelOutput"]


@dataclass
class ModelOutput:
    """A model's forward result.

    Attributes:
        logits: (B, n_heads) one logit per label head, in ``FeatureSpec.label_names`` order.
        aux_losses: named extra losses already weighted by the model's config (e.g. LMN's memory
            loss); the Trainer adds them to the task loss and logs each.
        extras: tensors for logging/diagnostics only (e.g. memory slot usage); never differentiated.
    """

    logits: torch.Tensor
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


# A pytree node, so that DistributedDataParallel (which TorchRec's DMP wraps around the dense part,
# with static_graph=True) finds the output tensors and runs its gradient all-reduce. As a plain
# dataclass it hides every tensor: no all-reduce ran and the dense replicas of N ranks drifted apart.
pytree.register_dataclass(ModelOutput)
