"""Checkpoint and reset a container's writable layer, without copying it.

A checkpoint turns the writable layer into a read-only one: the upper
directory is renamed to <container dir>/checkpoints/<name>/diff and the
container gets a fresh, empty upper directory; from then on the overlay is
mounted with the checkpoint layers between the upper and the image:

    lowerdir = <checkpoint chain, newest first> : <image layers>

The chain in use is state["_contain"]["extra_lowers"] (absolute paths,
newest first); each checkpoint remembers its own chain in
checkpoints/<name>/checkpoint.json, so checkpoints form a tree and resetting
to an older one keeps the newer ones usable.

Reset discards the upper directory (a rename, then deletion in the
background) and makes a new empty one; with no name it also drops the
checkpoint layers, which brings back the image's state.  Both restart the
container's process when it was running: the overlay only takes a new upper
directory when it is mounted again.  Checkpointing a running container stops
it gracefully first (its stop signal, then SIGKILL after `timeout`), so what
is recorded is what the program left on disk when asked to stop.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Any, Optional

from . import _names, _timefmt
from ._jsonfile import read_json, write_json as _write_json
from ._root import discard_later, wait_for_discards
from .errors import Conflict, NotFound

__all__ = ["checkpoint", "reset", "checkpoints", "remove_checkpoint", "extra_lowerdirs"]

_META = "checkpoint.json"


def extra_lowerdirs(state: dict) -> list:
    """The checkpoint layers to mount above the image's (newest first)."""
    return list((state.get("_contain") or {}).get("extra_lowers") or [])


def _cdir(container: Any) -> str:
    return container._root.container_dir(container.id)


def _ckpt_dir(container: Any, name: str) -> str:
    return os.path.join(_cdir(container), "checkpoints", name)


def _read_meta(path: str) -> Optional[dict]:
    return read_json(os.path.join(path, _META))


def checkpoints(container: Any) -> list:
    """The container's checkpoints: [{"Name", "Created", "Chain"}], oldest first."""
    base = os.path.join(_cdir(container), "checkpoints")
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    found = []
    for n in names:
        meta = _read_meta(os.path.join(base, n))
        if meta is not None:
            found.append(meta)
    return sorted(found, key=lambda m: m["Created"])


def _referenced(container: Any, state: dict, diff: str, but: str = "") -> bool:
    if diff in extra_lowerdirs(state):
        return True
    return any(diff in m["Chain"] for m in checkpoints(container) if m["Name"] != but)


def checkpoint(container: Any, name: str, *, timeout: float = 10) -> dict:
    """Record the container's writable layer as checkpoint `name` (a name
    still in use by another checkpoint's chain or by the container cannot be
    replaced).  A running container is stopped and started again on top of
    the checkpoint.  Returns the checkpoint's record."""
    name = _names.check_name(name)
    was_running = container.inspect()["State"]["Running"]
    if was_running:
        container.stop(timeout=timeout)
    cdir = _cdir(container)
    target = _ckpt_dir(container, name)
    with container._locked():
        state = container._refresh_locked()
        if state["State"]["Running"]:
            raise Conflict(f"container {container.short_id} was started again during the checkpoint")
        diff = os.path.join(target, "diff")
        if os.path.exists(target):
            if _referenced(container, state, diff, but=name):
                raise Conflict(f"checkpoint {name!r} is a layer under the container or another "
                               "checkpoint; remove those first or choose another name")
            _discard(container, target)
        chain = [diff] + extra_lowerdirs(state)
        staging = os.path.join(cdir, "checkpoints", f".new-{name}-{secrets.token_hex(4)}")
        os.makedirs(staging, mode=0o700)
        # The upper directory becomes the checkpoint's layer: one rename.
        os.rename(os.path.join(cdir, "upper"), os.path.join(staging, "diff"))
        os.mkdir(os.path.join(cdir, "upper"), 0o755)
        _copy_root_mode(os.path.join(staging, "diff"), os.path.join(cdir, "upper"))
        meta = {"Name": name, "Created": _timefmt.now(), "Chain": chain}
        _write_json(os.path.join(staging, _META), meta)
        os.rename(staging, target)
        state["_contain"]["extra_lowers"] = chain
        container._save(state)
        if was_running:
            container._start_locked(container._load())
    return meta


def reset(container: Any, name: Optional[str] = None, *, restart: Optional[bool] = None) -> None:
    """Put the writable layer back as it was at checkpoint `name` (at the
    image's state when name is None).  The process is restarted when it was
    running (restart=True/False decides instead); it is killed, not stopped
    gracefully: whatever it held is being thrown away anyway."""
    chain: list = []
    if name is not None:
        name = _names.check_name(name)
        meta = _read_meta(_ckpt_dir(container, name))
        if meta is None:
            raise NotFound(f"container {container.short_id} has no checkpoint {name!r}")
        chain = meta["Chain"]
    was_running = container.inspect()["State"]["Running"]
    if was_running:
        with contextlib.suppress(Conflict):
            container.kill("SIGKILL")
        container.wait()
    start = was_running if restart is None else restart
    cdir = _cdir(container)
    with container._locked():
        state = container._refresh_locked()
        if state["State"]["Running"]:
            raise Conflict(f"container {container.short_id} was started again during the reset")
        upper = os.path.join(cdir, "upper")
        trash = os.path.join(cdir, f".discard-{secrets.token_hex(6)}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(upper, trash)
        os.mkdir(upper, 0o755)
        if os.path.isdir(trash):
            _copy_root_mode(trash, upper)
        state["_contain"]["extra_lowers"] = chain
        container._save(state)
        if start:
            container._start_locked(container._load())
    _delete_later(trash)


def remove_checkpoint(container: Any, name: str) -> None:
    """Delete a checkpoint no chain in use refers to."""
    name = _names.check_name(name)
    target = _ckpt_dir(container, name)
    with container._locked():
        state = container._load()
        if _read_meta(target) is None:
            raise NotFound(f"container {container.short_id} has no checkpoint {name!r}")
        if _referenced(container, state, os.path.join(target, "diff"), but=name):
            raise Conflict(f"checkpoint {name!r} is in use (by the container or a newer checkpoint)")
        _discard(container, target)


def _copy_root_mode(src: str, dst: str) -> None:
    """The upper's root carries the merged root's owner and mode once the
    container changed them (copy-up): keep that in the new one."""
    with contextlib.suppress(OSError):
        st = os.lstat(src)
        os.chown(dst, st.st_uid, st.st_gid)
        os.chmod(dst, st.st_mode & 0o7777)


def _discard(container: Any, path: str) -> None:
    trash = os.path.join(_cdir(container), f".discard-{secrets.token_hex(6)}")
    os.rename(path, trash)
    _delete_later(trash)


# ------------------------------------------------------- background deletion
# Deleted by the root's background deleter, so a reset costs a rename.
# What a process leaves undeleted when it exits lies inside the container's
# directory: removing the container (or the next reset) takes it away.
def _delete_later(path: str) -> None:
    if not os.path.lexists(path):
        return
    parent = os.path.dirname(path)
    with contextlib.suppress(OSError):
        for n in os.listdir(parent):  # left by a process that exited meanwhile
            if n.startswith(".discard-") and os.path.join(parent, n) != path:
                discard_later(os.path.join(parent, n))
    discard_later(path)


def wait_for_deletions(timeout: Optional[float] = None) -> None:
    """Block until discarded layers queued so far are deleted (tests, benchmarks)."""
    wait_for_discards(timeout)

