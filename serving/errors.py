"""Errors of the scoring server, each mapped to one gRPC status code by the servicers.

All derive from :class:`~seedrec.errors.SeedrecError`; :class:`~seedrec.errors.PackageError`
(a corrupt package) is reused as is.

========================== ======================
error                      status code
========================== ======================
InvalidRequestError        INVALID_ARGUMENT
NotFoundError              NOT_FOUND
AlreadyExistsError         ALREADY_EXISTS
LoadError, StateError      FAILED_PRECONDITION
PackageError               INVALID_ARGUMENT
========================== ======================
"""

from __future__ import annotations

from seedrec.errors import SeedrecError

__all__ = ["InvalidRequestError", "NotFoundError", "AlreadyExistsError", "LoadError", "StateError"]


class InvalidRequestError(SeedrecError, ValueError):
    """A malformed request; the message names the field (``candidates.item_ids``, ``domain`` …)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"`{field}`: {problem}")
        self.field = field


class NotFoundError(SeedrecError, LookupError):
    """An unknown model or version (or a version that is installed but not loaded)."""


class AlreadyExistsError(SeedrecError):
    """A push of a version the repository already holds."""


class LoadError(SeedrecError):
    """A package that verified but could not be built, loaded or warmed up."""


class StateError(SeedrecError):
    """The server is in the wrong state for the call (e.g. a rollback with no earlier version)."""
