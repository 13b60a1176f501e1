"""The state root the commands use, as a path (for info and df)."""

from __future__ import annotations

import os
from typing import Optional


def root_path(root: Optional[str]) -> str:
    if root:
        return os.path.abspath(root)
    env = os.environ.get("CONTAIN_ROOT")
    if env:
        return os.path.abspath(env)
    if os.geteuid() == 0:
        return "/var/lib/contain"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "contain")
