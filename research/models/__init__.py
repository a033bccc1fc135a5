"""Research models: the decoder LM of the LLM-blocks papers."""

from research.models.lm import LM, PRESETS

__all__ = ["LM", "PRESETS"]
