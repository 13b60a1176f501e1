"""What the benchmarks leave behind on the host, taken away (shared by them)."""

from __future__ import annotations

import contextlib
import os

import contain


def remove_networks_and_cgroup_parent(root: str) -> None:
    """Remove the networks of state root `root` (the default bridge and its
    nft rules, made by the first bridge start) and the cgroup parent its
    containers shared (``contain`` in every hierarchy), unless a container
    of some other root still has a cgroup there.  Best effort: a benchmark
    reports its figures whatever this finds."""
    if not os.path.isdir(root):
        return
    for net in contain.Network.list(root=root):
        with contextlib.suppress(contain.ContainError):
            net.remove(force=True)
    with contextlib.suppress(contain.ContainError, OSError):
        contain._root.get_root(root).cgroups.remove_parent()
