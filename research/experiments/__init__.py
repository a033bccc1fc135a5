"""Experiments that compare the research blocks with the papers' claims; results go to ``results/``."""
