"""Text corpora and tokenizers for the research LMs."""

from research.data.text import (
    BPETokenizer,
    ByteTokenizer,
    TextCorpus,
    build_corpus,
    load_documents,
    sample_windows,
)

__all__ = ["BPETokenizer", "ByteTokenizer", "TextCorpus", "build_corpus", "load_documents", "sample_windows"]
