"""The `contain` command line, built on the public API only."""

from .main import main

__all__ = ["main"]
