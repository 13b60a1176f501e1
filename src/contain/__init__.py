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
from ._imageops import ProgressEvent, ProgressRenderer, login, logout
from ._info import info
from .image import Image
from .network import Network
from .volume import Volume

__version__ = "0.1.0"

__all__ = [
    "Builder",
    "Container",
    "ExecProcess",
    "ExecResult",
    "Image",
    "Network",
    "ProgressEvent",
    "ProgressRenderer",
    "info",
    "login",
    "logout",
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
    "Volume",
]

from . import _display as _display

_display.install()
