"""Errors that reach the user as one line."""

from __future__ import annotations


class ContainError(Exception):
    """An error with a message fit for the user; the CLI prints it and exits 1.

    Raise it ``from`` the exception that caused it (not ``from None``): the cause stays
    reachable, and so does its errno (:attr:`errno`), for a program that wants more
    than the message."""

    def __init__(self, message: str = "", *, errno: int | None = None) -> None:
        super().__init__(message)
        self._errno = errno

    @property
    def errno(self) -> int | None:
        """The errno behind the error: given, or that of the OSError it came from."""
        if self._errno is not None:
            return self._errno
        cause = self.__cause__
        while cause is not None:
            if isinstance(cause, OSError) and cause.errno:
                return cause.errno
            if isinstance(cause, ContainError):
                return cause.errno
            cause = cause.__cause__
        return None


class SpecError(ContainError):
    """A field of an OCI document is invalid; *path* is its JSON path ($.process.args)."""

    def __init__(self, path: str, message: str, document: str = "config.json") -> None:
        self.path = path
        self.message = message
        self.document = document
        super().__init__(f"{document}: {path}: {message}")


class NotFound(ContainError):
    """An object (container, file) named by the user does not exist."""


class AlreadyExists(ContainError):
    """The container id is taken."""


class WrongState(ContainError):
    """The operation is not allowed in the container's current status."""
