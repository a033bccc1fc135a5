"""Checks shared by every config dataclass's ``__post_init__``.

Each raises :class:`~seedrec.errors.ConfigError` naming the field in backticks, the bad value and
the fix, as the style guide asks.
"""

from __future__ import annotations

from seedrec.errors import ConfigError

__all__ = ["check_int", "check_float", "check_bool"]


def check_int(name: str, value: object, lo: int, hi: int | None, fix: str) -> None:
    """Requires an integer (not a bool) in ``[lo, hi]`` (``hi=None``: no upper bound)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"`{name}` must be an integer, got {value!r}; {fix}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"`{name}` must be {bound}, got {value}; {fix}")


def check_float(name: str, value: object, lo: float, hi: float | None, fix: str, *, open_lo: bool = False) -> None:
    """Requires a finite number in ``[lo, hi]``, or ``(lo, hi]`` with ``open_lo``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise ConfigError(f"`{name}` must be a number, got {value!r}; {fix}")
    bad = value <= lo if open_lo else value < lo
    if bad or (hi is not None and value > hi):
        lo_txt = f"> {lo}" if open_lo else f">= {lo}"
        bound = lo_txt if hi is None else f"{lo_txt} and <= {hi}"
        raise ConfigError(f"`{name}` must be {bound}, got {value}; {fix}")


def check_bool(name: str, value: object) -> None:
    """Requires ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ConfigError(f"`{name}` must be true or false, got {value!r}")
