"""Seedrec: industrial recommender training and serving platform."""

__version__ = "0.1.0"
