"""Errors that reach the user as one line, and the one function that makes that line.

The convention: linux/ raises OSErrors (contain.linux.syscalls.SyscallError: errno, the
syscall, its target); the layers above turn the ones they expect into a ContainError
that names the field or object concerned, ``raise ContainError(...) from exc``, so the
cause and its errno stay reachable; :func:`message` turns whatever reaches the top into
the line the user sees (the CLI prints it; a program may use it too).
"""

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


def message(exc: BaseException) -> str:
    """The one-line message for the user of any exception.

    A ContainError is written for the user already; an OSError reads "what: reason" (a
    SyscallError's text names the syscall and its target; another's, the file); anything
    else is a bug of ours: "internal error: Type: text"."""
    if isinstance(exc, ContainError):
        return str(exc)
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if exc.filename is not None and str(exc.filename) not in text:
            text = f"{exc.filename}: {text}"
        return text
    return f"internal error: {type(exc).__name__}: {exc}"
