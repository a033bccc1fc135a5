"""Feed-forward pieces shared by the recsys models: activations (PReLU, Dice), MLP, prediction tower.

Dice is from DIN (Zhou et al., KDD 2018, §4.3); the tower follows DIN's Fig. 2 (concatenate every
feature group, MLP, one logit per label head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recsys.configs import Activation

__all__ = ["Dice", "PReLU", "make_activation", "MLP", "Tower", "reset_dense_parameters"]


class Dice(nn.Module):
    """Dice (DIN eq. 9): f(s) = p(s)·s + (1 − p(s))·α·s, p(s) = sigmoid(BN(s)).

    PReLU's rectifier point is fixed at 0; Dice moves it with the batch mean and variance of each
    unit (running statistics at eval). Works on any (..., D) input by flattening the leading dims.

    Example:
        >>> Dice(4)(torch.randn(3, 5, 4)).shape
        torch.Size([3, 5, 4])
    """

    def __init__(self, dim: int, *, eps: float = 1e-8) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # DMP materialises meta buffers as zeros; a zero running variance would blow up eval.
        self.bn.reset_running_stats()
        nn.init.zeros_(self.alpha)  # DIN: α starts at 0, i.e. Dice starts as a smooth ReLU-like gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (..., D). Returns: (..., D)."""
        D = x.shape[-1]
        p = torch.sigmoid(self.bn(x.reshape(-1, D)).reshape(x.shape))  # (..., D)
        return p * x + (1.0 - p) * self.alpha * x


class PReLU(nn.PReLU):
    """PReLU with one slope per unit of the **last** dim, for (..., D) inputs of any rank.

    ``nn.PReLU(D)`` takes dim 1 as the channel dim, which is T, not D, for (B, T, D) inputs.

    Example:
        >>> PReLU(4)(torch.randn(3, 5, 4)).shape
        torch.Size([3, 5, 4])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (..., D). Returns: (..., D)."""
        D = x.shape[-1]
        return super().forward(x.reshape(-1, D)).reshape(x.shape)  # (N, D) -> (..., D)


def make_activation(kind: Activation, dim: int) -> nn.Module:
    """A fresh activation module of ``kind`` for a layer of width ``dim``."""
    if kind == Activation.RELU:
        return nn.ReLU()
    if kind == Activation.PRELU:
        return PReLU(dim)  # one slope per unit, as DIN
    return Dice(dim)


class MLP(nn.Module):
    """Linear → activation (→ dropout) per hidden width, then an optional linear output layer.

    Example:
        >>> mlp = MLP(8, (16, 4), activation=Activation.RELU, out_dim=2)
        >>> mlp(torch.randn(3, 8)).shape, mlp.out_dim
        (torch.Size([3, 2]), 2)
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        *,
        activation: Activation,
        out_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), make_activation(activation, h)]
            if dropout > 0.0:
                layers.append(nn.Dropout(dropout))
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, out_dim))
            d = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (..., in_dim). Returns: (..., out_dim)."""
        return self.net(x)


class Tower(nn.Module):
    """The prediction tower: [feature groups ; normalised dense] → MLP → one logit per head.

    Dense features are raw floats of arbitrary scale (price), so they pass a BatchNorm first, the
    usual stand-in for a bottom MLP's input scaling.

    Example:
        >>> tower = Tower(10, n_dense=2, hidden=(8,), n_heads=3, activation=Activation.RELU)
        >>> tower([torch.randn(4, 6), torch.randn(4, 4)], torch.randn(4, 2)).shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        in_dim: int,
        *,
        n_dense: int,
        hidden: Sequence[int],
        n_heads: int,
        activation: Activation,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_dense = n_dense
        self.dense_norm = nn.BatchNorm1d(n_dense) if n_dense > 0 else nn.Identity()
        self.mlp = MLP(in_dim + n_dense, hidden, activation=activation, out_dim=n_heads, dropout=dropout)

    def forward(self, groups: list[torch.Tensor], dense: torch.Tensor) -> torch.Tensor:
        """Args: groups: (B, D_i) each, in_dim = Σ D_i; dense: (B, n_dense). Returns: (B, n_heads) logits."""
        x = torch.cat([*groups, self.dense_norm(dense)], dim=-1)  # (B, in_dim + n_dense)
        return self.mlp(x)  # (B, n_heads)


def reset_dense_parameters(module: nn.Module, *, skip: tuple[type[nn.Module], ...] = ()) -> None:
    """Call ``reset_parameters`` on every submodule of ``module``, children before parents.

    Children go first so a parent's own ``reset_parameters`` (e.g. zero-initialising its last
    layer) has the last word, the same order in which TorchRec's DMP materialises meta modules.
    Subtrees rooted at a ``skip`` type (the embedding collections, which initialise from their
    table configs) are left alone; ``module``'s own ``reset_parameters`` is not called, so a model
    may define one that calls this.
    """
    for child in module.children():
        if isinstance(child, skip):
            continue
        reset_dense_parameters(child, skip=skip)
        reset = getattr(child, "reset_parameters", None)
        if callable(reset):
            reset()
