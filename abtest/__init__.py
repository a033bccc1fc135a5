"""The simulated A/B test harness: configs, statistics and reports.

- :mod:`abtest.configs`: :class:`~abtest.configs.ABTestConfig` (arms, traffic, duration, how to read it).
- :mod:`abtest.stats`: per-user metrics → Welch t-tests, delta-method and Fieller intervals of the
  relative lift, CUPED, the sample-ratio-mismatch gate, the always-valid mSPRT, Holm correction.
- :mod:`abtest.report`: ``report.md`` for a product manager, ``report.json`` with every number, PNG plots.

Submodules are imported explicitly (``from abtest.stats import analyze``) so that reading a config
does not import scipy or matplotlib.
"""

__all__: list[str] = []
