"""The helper process of storage/userns.py, run as root of a user namespace.

    python -I _userns_child.py OP RESULT_FD ARGS...

    unpack DEST COMPRESSION UIDS GIDS   the layer stream on stdin -> DEST
    pack SRC COMPRESSION                {path: [uid, gid]} overrides as JSON on stdin,
                                        the layer tar of SRC on stdout
    remove                              ["path", ...] as JSON on stdin
    copy                                [[source, new file], ...] as JSON on stdin
    scan                                ["directory", ...] as JSON on stdin: the trees' lstat

One JSON record goes to RESULT_FD at the end: {"ok": {...}} or {"error": {...}}.

It is run by path and imports only the unpacker: importing the contain package itself
(its __init__ pulls in the container and network modules) costs about half a second.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import types


def _import_unpacker():
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if "contain" not in sys.modules:
        # A bare package object: contain.storage.unpack and contain.errors import
        # without running contain/__init__.py.
        package = types.ModuleType("contain")
        package.__path__ = [package_dir]
        sys.modules["contain"] = package
    from contain.storage import unpack

    return unpack


def _unpack(args: list[str]) -> dict:
    import attrs

    dest, compression, uids, gids = args
    unpack = _import_unpacker()
    stats = unpack.unpack_layer(sys.stdin.buffer, dest, compression=compression,
                                userns_ids=(int(uids), int(gids)))
    return attrs.asdict(stats)


def _pack(args: list[str]) -> dict:
    import attrs

    src, compression = args
    unpack = _import_unpacker()
    owners = {path: (int(uid), int(gid)) for path, (uid, gid) in json.load(sys.stdin).items()}
    out = sys.stdout.buffer
    stats = unpack.pack_directory(src, out, compression=compression, owners=owners)
    out.flush()
    return attrs.asdict(stats)


def _remove(args: list[str]) -> dict:
    failed = []

    def note(func, path, exc) -> None:
        if isinstance(exc, tuple):  # onerror's exc_info (before Python 3.12)
            exc = exc[1]
        if not isinstance(exc, FileNotFoundError):
            failed.append(f"{path}: {exc}")

    for path in json.load(sys.stdin):
        # Root here may enter overlay's mode-000 work/work: its owner is mapped.
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=note)
        else:
            shutil.rmtree(path, onerror=note)
    return {"failed": failed}


def _copy(args: list[str]) -> dict:
    """Copy regular files that only an id of the namespace may read; each
    pair is [source in a layer, new file in the build's staging tree]."""
    copied = 0
    for src, dst in json.load(sys.stdin):
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as s:
            out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(out, "wb") as d:
                shutil.copyfileobj(s, d, 1 << 20)
        copied += 1
    return {"copied": copied}


_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")


def _scan(args: list[str]) -> dict:
    """lstat of each directory given and of everything below it (symlinks
    not followed), for trees only an id of the namespace may search:
    {"entries": {path: [mode, ino, dev, nlink, uid, gid, size, atime_ns,
    mtime_ns, ctime_ns, rdev, opaque, link target or None]},
    "children": {directory: [names]}}; ids as the namespace sees them."""
    entries: dict = {}
    children: dict = {}

    def record(path: str, st: os.stat_result) -> None:
        opaque = False
        link = None
        if stat.S_ISDIR(st.st_mode):
            for name in _OPAQUE:
                try:
                    opaque = opaque or os.getxattr(path, name, follow_symlinks=False) == b"y"
                except OSError:
                    pass
        elif stat.S_ISLNK(st.st_mode):
            link = os.readlink(path)
        entries[path] = [st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
                         st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_rdev, opaque, link]

    for top in json.load(sys.stdin):
        st = os.lstat(top)
        record(top, st)
        stack = [top] if stat.S_ISDIR(st.st_mode) else []
        while stack:
            d = stack.pop()
            names = children[d] = []
            with os.scandir(d) as it:
                for e in it:
                    names.append(e.name)
                    est = e.stat(follow_symlinks=False)
                    record(e.path, est)
                    if stat.S_ISDIR(est.st_mode):
                        stack.append(e.path)
    return {"entries": entries, "children": children}


_OPS = {"unpack": _unpack, "pack": _pack, "remove": _remove, "copy": _copy, "scan": _scan}


def main(argv: list[str]) -> int:
    op, result_fd, args = argv[1], int(argv[2]), argv[3:]
    try:
        record: dict = {"ok": _OPS[op](args)}
        code = 0
    except Exception as e:  # every failure goes back to the parent as a record
        record = {"error": {"type": type(e).__name__, "message": str(e),
                            "errno": getattr(e, "errno", None),
                            "uids": getattr(e, "uids", None), "gids": getattr(e, "gids", None)}}
        code = 1
    with os.fdopen(result_fd, "w") as f:
        json.dump(record, f)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
