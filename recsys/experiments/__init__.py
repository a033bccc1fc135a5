"""Offline experiments: DIN vs ADS vs LMN over seeds and data sets, with LMN and ADS sweeps.

``python -m recsys.experiments.compare`` runs them (:mod:`recsys.experiments.runner`, configured by
:mod:`recsys.experiments.configs`) and writes ``docs/results/recsys.md`` + JSON + plots.
"""
