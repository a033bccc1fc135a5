"""The training/serving batch: what the loader yields and what every recsys model's ``forward`` takes.

Layout for a batch of B samples with ``FeatureSpec.seq_len`` = T::

    sparse    KeyedJaggedTensor, keys = spec.sparse_keys, every length 1 (one row per sample)
    sequence  KeyedJaggedTensor, keys = spec.sequence_keys, lengths 0..T, oldest first, most recent last
    dense     (B, F_dense) float32, spec.dense_names order
    labels    (B, n_labels) float32, spec.label_names order
    domain    (B,) int64: index into spec.domains
    user      (B,) int64: the RAW user id (for GAUC: users unseen in training stay distinct)

Example, B = 2, T = 3, sequences [[5, 6], [7]]::

    sequence["hist_item_id"]:   sample 0 | 5 6      lengths [2, 1]
                                sample 1 | 7        values  [5, 6, 7]

    >>> import torch
    >>> from torchrec import KeyedJaggedTensor
    >>> b = Batch(
    ...     sparse=KeyedJaggedTensor.from_lengths_sync(keys=["item_id"], values=torch.tensor([1, 2]), lengths=torch.tensor([1, 1])),
    ...     sequence=KeyedJaggedTensor.from_lengths_sync(keys=["hist_item_id"], values=torch.tensor([5, 6, 7]), lengths=torch.tensor([2, 1])),
    ...     dense=torch.zeros(2, 0), labels=torch.tensor([[1.0], [0.0]]), domain=torch.tensor([0, 1]), user=torch.tensor([3, 4]))
    >>> b.batch_size
    2
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

__all__ = ["Batch"]


@dataclass
class Batch(Pipelineable):
    sparse: KeyedJaggedTensor
    sequence: KeyedJaggedTensor
    dense: torch.Tensor
    labels: torch.Tensor
    domain: torch.Tensor
    user: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            sparse=self.sparse.to(device=torch.device(device), non_blocking=non_blocking),
            sequence=self.sequence.to(device=torch.device(device), non_blocking=non_blocking),
            dense=self.dense.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            domain=self.domain.to(device, non_blocking=non_blocking),
            user=self.user.to(device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:  # type: ignore[override]  # torchrec's signature uses torch.cuda.Stream
        self.sparse.record_stream(stream)
        self.sequence.record_stream(stream)
        for t in (self.dense, self.labels, self.domain, self.user):
            t.record_stream(stream)

    def pin_memory(self) -> Batch:
        return Batch(
            sparse=self.sparse.pin_memory(),
            sequence=self.sequence.pin_memory(),
            dense=self.dense.pin_memory(),
            labels=self.labels.pin_memory(),
            domain=self.domain.pin_memory(),
            user=self.user.pin_memory(),
        )
