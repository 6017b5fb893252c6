"""Errors a user can act on. Each carries a message meant for a person, not a traceback."""

from __future__ import annotations


class FairloopError(Exception):
    """Base of fairloop's user-facing errors."""


class BadInputError(FairloopError):
    """Input that cannot be used: a data file, a spec, a column or a value.

    The message always names where the problem is (file, field or column, value).
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        where = ": ".join(part for part in (source, field) if part)
        super().__init__(f"{where}: {message}" if where else message)


class RegistryError(FairloopError):
    """The model registry refused an operation (unknown version, inconsistent restore...)."""


class ServerError(FairloopError):
    """The Prefect server could not be reached, started, or refused a request."""


class IntegrityError(FairloopError):
    """A file's bytes differ from the sha256 recorded for it: changed, tampered or half-written."""
