"""Small JSON state files, written whole or not at all."""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Optional


def write_json(path: str, data: Any) -> None:
    """Write via a temporary file and rename: readers see the old or the new file."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


def read_json(path: str) -> Optional[Any]:
    """The file's content, or None when it is missing or torn."""
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
