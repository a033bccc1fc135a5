"""The research extension: LLM building blocks of the seed papers, trained by ``recsys.train``.

Spec: ``shared/specs/llm-blocks.md``. Packages: :mod:`research.nn` (blocks), :mod:`research.models`
(the decoder LM), :mod:`research.data` (corpus and tokenizers), :mod:`research.tasks` (the ``lm``
task of the shared Trainer) and :mod:`research.experiments` (runs that compare with the papers).
"""
