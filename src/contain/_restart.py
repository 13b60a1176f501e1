"""Applies a container's restart policy; exec'd by its monitor when it exits.

    python -m contain._restart ROOT CONTAINER_ID
"""

from __future__ import annotations

import sys
import time

from .container import Container
from .errors import ContainError


def decide(state: dict) -> bool:
    policy = state["HostConfig"].get("RestartPolicy") or {}
    name = policy.get("Name", "no")
    st = state["State"]
    if state["_contain"].get("stopped_by_user") or name == "no":
        return False
    if name == "on-failure":
        limit = policy.get("MaximumRetryCount") or 0
        return st["ExitCode"] != 0 and (not limit or state.get("RestartCount", 0) < limit)
    return True  # always, unless-stopped


def main(argv: list[str]) -> int:
    root, cid = argv[1], argv[2]
    try:
        c = Container(cid, root=__import__("contain._root", fromlist=["get_root"]).get_root(root))
        with c._locked():
            state = c._refresh_locked()
            if state["State"]["Running"] or not decide(state):
                return 0
            count = state.get("RestartCount", 0)
        # Docker's back-off: 100 ms doubling, capped; a container that keeps
        # failing at once does not spin.
        time.sleep(min(0.1 * (2 ** min(count, 10)), 60.0))
        with c._locked():
            state = c._refresh_locked()
            if state["State"]["Running"] or not decide(state):
                return 0
            state["RestartCount"] = count + 1
            state["State"]["Restarting"] = False
            c._save(state)
            c._start_locked(c._load())
    except ContainError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
