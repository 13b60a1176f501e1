"""contain: run Linux containers inside your own Python program, with no daemon."""

from .builder import Builder
from .container import Container, ExecProcess, ExecResult
from .errors import (
    AuthenticationError,
    Conflict,
    ContainError,
    ContainerNotFound,
    DigestMismatch,
    ImageNotFound,
    InvalidArgument,
    InvalidReference,
    LayerError,
    NotFound,
    RegistryError,
    RuntimeFailure,
)
from .image import Image

__version__ = "0.1.0"

__all__ = [
    "Builder",
    "Container",
    "ExecProcess",
    "ExecResult",
    "Image",
    "AuthenticationError",
    "Conflict",
    "ContainError",
    "ContainerNotFound",
    "DigestMismatch",
    "ImageNotFound",
    "InvalidArgument",
    "InvalidReference",
    "LayerError",
    "NotFound",
    "RegistryError",
    "RuntimeFailure",
]
