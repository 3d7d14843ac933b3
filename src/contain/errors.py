"""Errors that reach the user as one line."""

from __future__ import annotations


class ContainError(Exception):
    """An error with a message fit for the user; the CLI prints it and exits 1."""


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
