"""Layer work as root of a user namespace with the containers' mapping.

An ordinary user's containers run in a user namespace that maps container uid 0 to the
user and 1..N to the subordinate ranges of /etc/subuid (linux/rootless.py). Their layers
must hold the image's owners as that namespace sees them: a file of uid 1000 in the image
is owned by subuid_start + 999 on the host. The user can neither chown to those ids nor
delete what they own, nor read what only they may read; root of a user namespace with the
same mapping can. So for an ordinary user the store unpacks, packs and deletes layer
trees through a short-lived helper: util-linux's `unshare` (2.38 or later; it has
newuidmap/newgidmap write the ranges, as the containers' spawn does) around a Python child,
`_userns_child.py`, that imports only the unpacker (about 60 ms in all).

The parent keeps what has to be trusted: it reads the blob and streams it to the child
(the store verifies the blob's digest as it goes), and it stores what the child packs
through a verifying blob writer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import IO, TYPE_CHECKING, Mapping, Optional, Sequence

import attrs

from ..errors import InvalidArgument, LayerError, NotFound, RuntimeFailure
from .unpack import PackStats, UnpackStats

if TYPE_CHECKING:
    from ..linux.rootless import IdMaps

__all__ = ["unpack", "pack", "remove", "copy"]

_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_userns_child.py")
_CHUNK = 1 << 20


def _unshare() -> str:
    path = shutil.which("unshare") or "/usr/bin/unshare"
    if not os.path.exists(path):
        raise NotFound("unshare (util-linux) is not installed: it enters the user namespace "
                       "that unpacks an ordinary user's layers")
    return path


class _Helper:
    """One child: started with its stdin/stdout, then finished for its result record."""

    def __init__(self, maps: "IdMaps", op: str, *args: str, stdout: int = subprocess.DEVNULL) -> None:
        result_r, result_w = os.pipe()
        self._stderr = tempfile.TemporaryFile()
        try:
            argv = [*maps.unshare_argv(_unshare()), sys.executable, "-I", _CHILD, op,
                    str(result_w), *args]
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=stdout,
                                         stderr=self._stderr, pass_fds=(result_w,))
        except BaseException:
            os.close(result_r)
            self._stderr.close()
            raise
        finally:
            os.close(result_w)
        self._result = os.fdopen(result_r, "rb")

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def abort(self) -> None:
        """Kill the child (the caller is failing) and free what it held."""
        self.proc.kill()
        with contextlib.suppress(BrokenPipeError):
            self.stdin.close()
        self.proc.wait()
        self._result.close()
        self._stderr.close()

    def finish(self, what: str, maps: "IdMaps") -> dict:
        """The child's result; its failure raised as the error it was."""
        with contextlib.suppress(BrokenPipeError):  # it may exit before reading all
            self.stdin.close()
        code = self.proc.wait()
        with self._result:
            raw = self._result.read()
        self._stderr.seek(0)
        stderr = self._stderr.read().decode("utf-8", "replace").strip()
        self._stderr.close()
        try:
            record = json.loads(raw) if raw else {}
        except ValueError:
            record = {}
        if code == 0 and "ok" in record:
            return record["ok"]
        error = record.get("error")
        if error is None:
            # unshare itself failed (newuidmap refused a range, no util-linux 2.38, ...).
            last = stderr.splitlines()[-1] if stderr else f"exit status {code}"
            raise RuntimeFailure(f"{what} in a user namespace", 0, last)
        kind, message = error["type"], error["message"]
        if kind == "UnmappedOwners":
            maps.check_ids(error["uids"] or [], error["gids"] or [], what=what)
        if kind == "LayerError":
            raise LayerError(message)
        if kind == "InvalidArgument":
            raise InvalidArgument(message)
        if error.get("errno"):
            raise OSError(error["errno"], f"{what}: {message}")
        raise RuntimeFailure(f"{what} in a user namespace", 0, f"{kind}: {message}")


def unpack(maps: "IdMaps", fileobj: IO[bytes], dest: str, *, compression: str = "auto",
           what: str = "the layer") -> UnpackStats:
    """unpack_layer of the stream `fileobj` into `dest` (new or empty) as root of a user
    namespace with `maps`: owners land on the host ids the mapping gives them.  An owner
    outside the mapping is an InvalidArgument naming the ids and the missing range; `what`
    names the layer in errors.  What the child did not need of the stream stays unread."""
    helper = _Helper(maps, "unpack", os.path.abspath(dest), compression,
                     str(maps.uid_count()), str(maps.gid_count()))
    try:
        while True:
            chunk = fileobj.read(_CHUNK)
            if not chunk:
                break
            try:
                helper.stdin.write(chunk)
            except BrokenPipeError:
                break  # the child is done (or failed: its record says why)
    except BaseException:
        helper.abort()
        raise
    return UnpackStats(**helper.finish(what, maps))


def pack(maps: "IdMaps", src: str, out: IO[bytes], *, compression: str = "none",
         owners: Optional[Mapping[str, tuple[int, int]]] = None,
         what: str = "pack the layer") -> PackStats:
    """pack_directory of `src` into `out` as root of a user namespace with `maps`: owners
    are recorded as the containers see them (the user is 0), and files only a
    subordinate id may read are read all the same."""
    read_r, read_w = os.pipe()
    try:
        helper = _Helper(maps, "pack", os.path.abspath(src), compression, stdout=read_w)
    except BaseException:
        os.close(read_r)
        raise
    finally:
        os.close(read_w)
    with os.fdopen(read_r, "rb") as data:
        try:
            with contextlib.suppress(BrokenPipeError):
                helper.stdin.write(json.dumps({k: list(v) for k, v in (owners or {}).items()}).encode())
                helper.stdin.close()
            while True:
                chunk = data.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
        except BaseException:
            helper.abort()
            raise
    return PackStats(**helper.finish(what, maps))


def remove(maps: "IdMaps", paths: Sequence[str]) -> list[str]:
    """Delete trees whose files may belong to subordinate ids; what could not be deleted
    (one line per failure)."""
    paths = [os.path.abspath(p) for p in paths if os.path.lexists(p)]
    if not paths:
        return []
    helper = _Helper(maps, "remove")
    with contextlib.suppress(BrokenPipeError):
        helper.stdin.write(json.dumps(paths).encode())
    return list(helper.finish("remove layer files", maps)["failed"])


def copy(maps: "IdMaps", pairs: Sequence[tuple[str, str]]) -> None:
    """Copy regular files of a layer that only a subordinate id may read
    (a COPY --from source of mode 0600, say) to new files of the user's:
    [(source, destination)], each destination new."""
    if not pairs:
        return
    helper = _Helper(maps, "copy")
    with contextlib.suppress(BrokenPipeError):
        helper.stdin.write(json.dumps([[os.path.abspath(s), os.path.abspath(d)] for s, d in pairs]).encode())
    helper.finish("copy files of subordinate owners", maps)


_OVERFLOW = 65534  # the kernel's id for one a namespace does not map


@attrs.frozen
class Scanned:
    """What scan found: lstat of each path (ids the host's, as os.lstat
    would give), overlay's opaque mark of directories, symlink targets, and
    each directory's names."""
    stats: Mapping[str, os.stat_result]
    opaque: frozenset
    links: Mapping[str, str]
    children: Mapping[str, tuple]


def scan(maps: "IdMaps", dirs: Sequence[str]) -> Scanned:
    """Look through directories of a layer that only a subordinate id may
    search (a COPY --from source of mode 0700, say), as root of a user
    namespace with `maps`: each directory and everything below it."""
    helper = _Helper(maps, "scan")
    with contextlib.suppress(BrokenPipeError):
        helper.stdin.write(json.dumps([os.path.abspath(d) for d in dirs]).encode())
    found = helper.finish("look through directories of subordinate owners", maps)
    stats, opaque, links = {}, set(), {}
    for path, (mode, ino, dev, nlink, uid, gid, size, atime, mtime, ctime, rdev, is_opaque, link) \
            in found["entries"].items():
        host_uid, host_gid = maps.host_uid(uid), maps.host_gid(gid)
        stats[path] = os.stat_result(
            (mode, ino, dev, nlink, _OVERFLOW if host_uid is None else host_uid,
             _OVERFLOW if host_gid is None else host_gid, size,
             atime // 10**9, mtime // 10**9, ctime // 10**9),
            {"st_atime_ns": atime, "st_mtime_ns": mtime, "st_ctime_ns": ctime, "st_rdev": rdev,
             "st_atime": atime / 1e9, "st_mtime": mtime / 1e9, "st_ctime": ctime / 1e9})
        if is_opaque:
            opaque.add(path)
        if link is not None:
            links[path] = link
    return Scanned(stats, frozenset(opaque), links,
                   {d: tuple(names) for d, names in found["children"].items()})

