"""Errors of the memory store; the server maps each to one gRPC status code.

================================  ======================
error                             status code
================================  ======================
:class:`InvalidRequestError`      ``INVALID_ARGUMENT``
:class:`VersionNotFoundError`     ``NOT_FOUND``
:class:`VersionExistsError`       ``ALREADY_EXISTS``
:class:`PreconditionError`        ``FAILED_PRECONDITION``
================================  ======================

A Redis outage surfaces as redis-py's ``ConnectionError`` / ``TimeoutError`` (``UNAVAILABLE``).
"""

from __future__ import annotations

from seedrec.errors import SeedrecError

__all__ = [
    "MemoryStoreError",
    "InvalidRequestError",
    "VersionNotFoundError",
    "VersionExistsError",
    "PreconditionError",
]


class MemoryStoreError(SeedrecError):
    """Base class of the memory store's errors."""


class InvalidRequestError(MemoryStoreError, ValueError):
    """A malformed request; ``field`` names the offending field and the message starts with it.

    Args:
        field: the request field (``slot_ids``, ``weights``, ``values``, ``d``, ...).
        message: what is wrong, with the numbers.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class VersionNotFoundError(MemoryStoreError, LookupError):
    """An unknown (or not yet committed, or deleted) version, or no current version."""


class VersionExistsError(MemoryStoreError):
    """A version id that is already committed."""


class PreconditionError(MemoryStoreError):
    """The wrong state: commit after abort, missing rows, checksum mismatch, delete of current."""
