"""Ray Data input for training: a sample split as a ``ray.data.Dataset``, split per Ray Train worker,
fed through the one transform into the same :class:`~feature_pipeline.batch.Batch` as the local loader.

The driver (:mod:`recsys.train.ray_launch`) reads the split with :func:`read_split` and hands it to the
``TorchTrainer`` as ``datasets={"train": ds}``; Ray Train's default ``DataConfig`` cuts it with
``Dataset.streaming_split(W, equal=True)``, so every worker sees exactly ``N // W`` rows. Inside a
worker, :func:`ray_train_batches` wraps this worker's shard::

    parquet files ──read_parquet──► blocks ──streaming_split(W, equal=True)──► shard of rank r
    shard.iter_batches(batch_size=B, batch_format="pyarrow", drop_last) ──► pa.Table (B rows)
    FeatureTransform.to_batch(table) ──► Batch        (the code path of SampleLoader and serving)

Batches per epoch are those of :class:`~feature_pipeline.loader.SampleLoader` for the same N, W and B
(``(N // W) // B`` with ``drop_last``, else ``ceil((N // W) / B)``), so ``len()`` is exact and equal on
every rank: collectives in the sharded forward never wait for a rank that ran out.

What differs from the local loader: the rows a rank gets are decided at run time by Ray Data's split
coordinator (blocks go to whichever worker asks), so the row order is not reproducible between runs
or between the attempts of one run. A resumed epoch skips as many batches as were consumed before the
failure, but not necessarily the same rows (at most one epoch's worth of rows is then seen twice or
not at all); the step count and schedule stay exact. Evaluation keeps using ``SampleLoader`` with
rank / world-size sharding (deterministic, every row once).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from seedrec.errors import ConfigError, DataError, SchemaError

if TYPE_CHECKING:
    from feature_pipeline.batch import Batch
    from feature_pipeline.transform import FeatureTransform

__all__ = ["TRAIN_DATASET", "split_dir", "split_files", "split_rows", "read_split", "ShardBatches", "ray_train_batches"]

logger = logging.getLogger(__name__)

TRAIN_DATASET = "train"
"""The ``datasets`` key of the training split in ``TorchTrainer(datasets=...)``."""


def split_dir(samples_dir: str | Path, split: str, *, transform: FeatureTransform | None = None) -> Path:
    """The folder holding the parquet files of ``split`` (as named by ``feature_spec.json``).

    Raises:
        DataError: ``samples_dir`` is missing, or ``split`` is not a split of it.
        SchemaError: the folder has no valid ``feature_spec.json``.
    """
    root = Path(samples_dir)
    if not root.is_dir():
        raise DataError(f"samples folder {root} does not exist; pass --data DIR (the output of `seedrec data build`)")
    if transform is None:
        from feature_pipeline.transform import FeatureTransform

        transform = FeatureTransform.from_spec_dir(root)
    splits = transform.spec.splits
    if split not in splits:
        raise DataError(f"split {split!r} is not in {root / 'feature_spec.json'}; splits: {sorted(splits)}")
    return root / splits[split]


def split_files(samples_dir: str | Path, split: str, *, transform: FeatureTransform | None = None) -> list[Path]:
    """The parquet files of ``split``, sorted (the files :class:`SampleLoader` reads).

    Raises:
        DataError: no such folder or split, or a split without parquet files.
    """
    folder = split_dir(samples_dir, split, transform=transform)
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise DataError(f"{folder} holds no .parquet files for split {split!r}; rebuild the samples")
    return files


def split_rows(files: list[Path]) -> int:
    """Rows in ``files`` from the parquet footers (no data is read).

    Raises:
        SchemaError: a file is not readable parquet.
    """
    total = 0
    for f in files:
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except (pa.ArrowInvalid, OSError) as e:
            raise SchemaError(f"{f}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    return total


def read_split(
    samples_dir: str | Path,
    split: str = "train",
    *,
    transform: FeatureTransform | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> Any:
    """``ray.data.read_parquet`` of one split, restricted to the columns the transform reads.

    Args:
        samples_dir: the output folder of ``seedrec data build``.
        split: the split name.
        transform: the transform (default: the one saved with the samples).
        shuffle: randomise the block order (seeded; the rows within a block keep their order, a
            worker's local shuffle buffer mixes them).
        seed: the block-order seed.

    Returns:
        A lazy ``ray.data.Dataset`` (nothing is read until a worker iterates its shard).

    Raises:
        DataError: no such folder, split or files.
    """
    import ray.data

    if transform is None:
        from feature_pipeline.transform import FeatureTransform

        transform = FeatureTransform.from_spec_dir(samples_dir)
    files = split_files(samples_dir, split, transform=transform)
    present = set(pq.ParquetFile(files[0]).schema_arrow.names)
    columns = [c for c in transform.columns if c in present]
    # One folder path, not a list of files: Ray Data resolves every given path on a thread pool, and
    # concurrent resolution races on an optional fsspec import (an ImportError when aiohttp is absent).
    ds = ray.data.read_parquet(str(files[0].parent), columns=columns, file_extensions=["parquet"])
    if shuffle:
        ds = ds.randomize_block_order(seed=seed)
    return ds


class ShardBatches:
    """One epoch of one worker's Ray Data shard as :class:`Batch` es (sized, like ``SampleLoader``).

    Args:
        shard: the worker's ``ray.data.DataIterator`` (``ray.train.get_dataset_shard("train")``).
        transform: the one transform of the samples folder.
        batch_size: B, rows per batch.
        rows_per_rank: N // W, the rows ``streaming_split(W, equal=True)`` gives each worker.
        drop_last: drop a final batch shorter than B.
        shuffle_buffer: rows of the local shuffle buffer (``None`` or 0: no shuffle).
        shuffle_seed: the local shuffle seed (derive it from seed, epoch and rank).

    Raises:
        ConfigError: a batch size below 1.
        DataError: fewer rows per rank than one batch needs.
    """

    def __init__(
        self,
        shard: Any,
        *,
        transform: FeatureTransform,
        batch_size: int,
        rows_per_rank: int,
        drop_last: bool = True,
        shuffle_buffer: int | None = None,
        shuffle_seed: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"`batch_size` = {batch_size}; must be ≥ 1")
        self.shard = shard
        self.transform = transform
        self.batch_size = batch_size
        self.rows_per_rank = rows_per_rank
        self.drop_last = drop_last
        self.shuffle_buffer = shuffle_buffer or None
        self.shuffle_seed = shuffle_seed
        if len(self) == 0:
            raise DataError(
                f"{rows_per_rank} training rows per worker make no batch of {batch_size}; "
                "use more data, fewer workers or a smaller `task.batch_size`"
            )

    def __len__(self) -> int:
        n, b = self.rows_per_rank, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def __iter__(self) -> Iterator[Batch]:
        tables = self.shard.iter_batches(
            batch_size=self.batch_size,
            batch_format="pyarrow",
            drop_last=self.drop_last,
            local_shuffle_buffer_size=self.shuffle_buffer,
            local_shuffle_seed=self.shuffle_seed if self.shuffle_buffer else None,
        )
        for table in tables:
            yield self.transform.to_batch(table)


def ray_train_batches(
    samples_dir: str | Path,
    *,
    transform: FeatureTransform,
    batch_size: int,
    drop_last: bool,
    rank: int,
    world_size: int,
    epoch: int,
    seed: int = 0,
    shuffle: bool = False,
    shuffle_buffer: int = 65_536,
) -> ShardBatches:
    """This Ray Train worker's training batches for ``epoch`` (``RankingTask`` with ``batch_source: ray_data``).

    Raises:
        ConfigError: called outside a Ray Train worker, or the trainer was given no ``train`` dataset.
        DataError: no rows, or too few for one batch per worker.
    """
    try:
        import ray.train

        shard = ray.train.get_dataset_shard(TRAIN_DATASET)
    except (RuntimeError, KeyError, ValueError) as e:
        raise ConfigError(
            f"`task.batch_source` = 'ray_data' needs a Ray Train worker with a {TRAIN_DATASET!r} dataset "
            f"(`seedrec train --workers N`); use 'local' otherwise ({e})"
        ) from None
    if shard is None:
        raise ConfigError(
            f"`task.batch_source` = 'ray_data' but the TorchTrainer got no {TRAIN_DATASET!r} dataset; "
            "launch through recsys.train.ray_launch or use 'local'"
        )
    rows = split_rows(split_files(samples_dir, "train", transform=transform))
    rows_per_rank = rows // world_size
    buffer = min(shuffle_buffer, rows_per_rank) if shuffle else None
    return ShardBatches(
        shard,
        transform=transform,
        batch_size=batch_size,
        rows_per_rank=rows_per_rank,
        drop_last=drop_last,
        shuffle_buffer=buffer,
        shuffle_seed=(seed * 1_000_003 + epoch) * 4_099 + rank,
    )
