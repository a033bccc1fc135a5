"""The one error hierarchy of Seedrec.

Every error a user can cause derives from :class:`SeedrecError`; its message names what is wrong
(the file, the column, the field) and how to fix it. The CLI prints the message on one line and
exits non-zero, without a traceback.
"""

from __future__ import annotations

__all__ = [
    "SeedrecError",
    "ConfigError",
    "SchemaError",
    "DataError",
    "PackageError",
    "ServiceUnavailableError",
]


class SeedrecError(Exception):
    """Base class of every user-facing Seedrec error."""


class ConfigError(SeedrecError, ValueError):
    """A configuration value is invalid (names the field, the value and the fix)."""


class SchemaError(SeedrecError):
    """A log or sample file breaks its schema (names the file, the column and the problem)."""


class DataError(SeedrecError):
    """Input data is unusable for another reason (empty input, no rows in a split, ...)."""


class PackageError(SeedrecError):
    """A model package is missing a file, fails its checksum or is otherwise corrupt."""


class ServiceUnavailableError(SeedrecError):
    """A backing service (Redis, a gRPC server) cannot be reached."""
