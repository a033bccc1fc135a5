"""Arrow → :class:`~feature_pipeline.batch.Batch` loading of a sample split, sharded across ranks.

How an epoch is cut (N rows in the split, W ranks, batch size B)::

    shards   every parquet row group of every file of the split, in file order
             (shuffle: permuted by (seed, epoch), the same permutation on every rank)
    ranks    the shards laid end to end; rank r owns rows [r*N//W, (r+1)*N//W) of that line,
             so ranks are disjoint and differ by at most one row (a row group may be split
             between two neighbouring ranks; each reads only its part)
    batches  every rank yields exactly len(loader) = batches(N // W) batches, where
             batches(n) = n // B with drop_last, else ceil(n / B): the count of the smallest rank,
             so collective ops in distributed training never wait on a rank that ran out.
             A rank holding one row more than N // W drops it when that row would start an
             extra batch (at most one row per rank per epoch).
    shuffle  within a rank, rows are permuted inside windows of ``shuffle_buffer`` rows,
             deterministically from (seed, epoch, rank); call ``set_epoch(e)`` before each epoch.

Each batch goes through :meth:`FeatureTransform.to_batch`, the same code the scoring server uses.

Example:
    >>> loader = SampleLoader("runs/samples", "train", batch_size=1024, shuffle=True)  # doctest: +SKIP
    >>> for epoch in range(2):  # doctest: +SKIP
    ...     loader.set_epoch(epoch)
    ...     for batch in loader:
    ...         ...
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feature_pipeline.batch import Batch
from feature_pipeline.spec import FeatureSpec
from feature_pipeline.transform import FeatureTransform
from seedrec.errors import ConfigError, DataError, SchemaError

__all__ = ["SampleLoader"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Shard:
    file: int
    row_group: int
    rows: int


class SampleLoader:
    """Iterates one split of a sample folder as :class:`Batch` es, sharded by rank.

    Args:
        samples_dir: the output folder of ``seedrec data build`` (holds ``feature_spec.json``).
        split: a split name from ``spec.splits`` (``train``, ``valid``, ``test``).
        batch_size: B, rows per batch.
        shuffle: permute shards and rows (deterministic per ``seed`` and epoch).
        seed: the shuffle seed.
        drop_last: drop a final batch shorter than B.
        rank: this worker's rank in ``[0, world_size)``.
        world_size: the number of workers sharing the split.
        shuffle_buffer: rows per shuffle window (larger = better mixing, more memory).
        transform: the transform to use; defaults to the one saved with the samples.

    Raises:
        ConfigError: a bad batch size, rank or world size.
        DataError: an unknown split or a split without files.
    """

    def __init__(
        self,
        samples_dir: str | Path,
        split: str,
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 65_536,
        transform: FeatureTransform | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"`batch_size` = {batch_size}; must be ≥ 1")
        if world_size < 1:
            raise ConfigError(f"`world_size` = {world_size}; must be ≥ 1")
        if not 0 <= rank < world_size:
            raise ConfigError(f"`rank` = {rank}; must be in [0, world_size = {world_size})")
        if shuffle_buffer < 1:
            raise ConfigError(f"`shuffle_buffer` = {shuffle_buffer}; must be ≥ 1 row")
        self.root = Path(samples_dir)
        self.transform = transform or FeatureTransform.from_spec_dir(self.root)
        spec: FeatureSpec = self.transform.spec
        if split not in spec.splits:
            raise DataError(f"split {split!r} is not in {self.root / 'feature_spec.json'}; splits: {sorted(spec.splits)}")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.epoch = 0

        self.files = sorted((self.root / spec.splits[split]).glob("*.parquet"))
        if not self.files:
            raise DataError(f"{self.root / spec.splits[split]} holds no .parquet files for split {split!r}; rebuild the samples")
        self._shards: list[_Shard] = []
        self._columns: list[list[str]] = []
        wanted = self.transform.columns
        for i, f in enumerate(self.files):
            try:
                md = pq.ParquetFile(f).metadata
            except (pa.ArrowInvalid, OSError) as e:
                raise SchemaError(f"{f}: not a readable parquet file ({str(e).splitlines()[0]})") from None
            names = set(md.schema.to_arrow_schema().names)
            self._columns.append([c for c in wanted if c in names])
            self._shards.extend(_Shard(i, g, md.row_group(g).num_rows) for g in range(md.num_row_groups) if md.row_group(g).num_rows)
        self._num_rows = sum(s.rows for s in self._shards)
        if self._num_rows == 0:
            raise DataError(f"split {split!r} under {self.root} has no rows")

    # ---- sizes ----------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        """Rows in the whole split (all ranks together)."""
        return self._num_rows

    def _batches(self, rows: int) -> int:
        return rows // self.batch_size if self.drop_last else math.ceil(rows / self.batch_size)

    def __len__(self) -> int:
        """Batches per epoch, the same on every rank: those of the smallest rank (N // W rows)."""
        return self._batches(self._num_rows // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch that seeds the shuffle (call before iterating each epoch)."""
        self.epoch = int(epoch)

    # ---- iteration ------------------------------------------------------------------------
    def _pieces(self) -> list[tuple[_Shard, int, int]]:
        """This rank's (shard, offset, length) pieces for the current epoch, in order."""
        order = np.arange(len(self._shards))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self._shards))
        n, w = self._num_rows, self.world_size
        lo, hi = self.rank * n // w, (self.rank + 1) * n // w
        pieces: list[tuple[_Shard, int, int]] = []
        pos = 0
        for i in order:
            s = self._shards[i]
            a, b = max(lo, pos), min(hi, pos + s.rows)
            if a < b:
                pieces.append((s, a - pos, b - a))
            pos += s.rows
            if pos >= hi:
                break
        return pieces

    def _tables(self) -> Iterator[pa.Table]:
        handles: dict[int, pq.ParquetFile] = {}
        for shard, offset, length in self._pieces():
            pf = handles.get(shard.file)
            if pf is None:
                pf = handles[shard.file] = pq.ParquetFile(self.files[shard.file])
            t = pf.read_row_group(shard.row_group, columns=self._columns[shard.file])
            yield t.slice(offset, length)

    def __iter__(self) -> Iterator[Batch]:
        B, limit = self.batch_size, len(self)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        window = self.shuffle_buffer if self.shuffle else B
        emitted = 0
        buf: list[pa.Table] = []
        buffered = 0

        def drain(final: bool) -> Iterator[Batch]:
            nonlocal buf, buffered, emitted
            t = pa.concat_tables(buf) if len(buf) > 1 else buf[0]
            if self.shuffle:
                t = t.take(pa.array(rng.permutation(t.num_rows)))
            full = t.num_rows // B
            for k in range(full):
                if emitted >= limit:
                    return
                yield self.transform.to_batch(t.slice(k * B, B))
                emitted += 1
            rest = t.slice(full * B)
            if final and rest.num_rows and not self.drop_last and emitted < limit:
                yield self.transform.to_batch(rest)
                emitted += 1
                rest = rest.slice(0, 0)
            buf, buffered = ([rest] if rest.num_rows else []), rest.num_rows

        for t in self._tables():
            buf.append(t)
            buffered += t.num_rows
            if buffered >= window:
                yield from drain(final=False)
            if emitted >= limit:
                return
        if buf:
            yield from drain(final=True)
