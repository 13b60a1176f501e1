"""The one exceptions module: every error contain raises is a ContainError."""

from __future__ import annotations

import errno as _errno
import os


class ContainError(Exception):
    """Base of every error raised by contain."""


class NotFound(ContainError, LookupError):
    """Something named by the caller does not exist."""


class ImageNotFound(NotFound):
    pass


class ContainerNotFound(NotFound):
    pass


class Conflict(ContainError):
    """The operation clashes with the current state (in use, running, exists)."""


class InvalidArgument(ContainError, ValueError):
    """The caller passed something malformed."""


class InvalidReference(InvalidArgument):
    """An image reference does not follow Docker's grammar."""


class LayerError(InvalidArgument):
    """A layer archive is malformed or hostile; nothing of it was kept."""


class RegistryError(ContainError):
    """A registry answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationError(RegistryError):
    pass


class DigestMismatch(ContainError):
    """Content did not hash to the digest it was announced with."""


class RuntimeFailure(ContainError):
    """The container runtime failed at a named step, with an errno."""

    def __init__(self, step: str, errno: int = 0, message: str = "") -> None:
        self.step = step
        self.errno = errno
        detail = os.strerror(errno) if errno else ""
        text = f"{step}: {message or detail}" if (message or detail) else step
        if message and detail:
            text = f"{step}: {message}: {detail}"
        if errno:
            text += f" [{_errno.errorcode.get(errno, errno)}]"
        super().__init__(text)


__all__ = [
    "ContainError",
    "NotFound",
    "ImageNotFound",
    "ContainerNotFound",
    "Conflict",
    "InvalidArgument",
    "InvalidReference",
    "LayerError",
    "RegistryError",
    "AuthenticationError",
    "DigestMismatch",
    "RuntimeFailure",
]
