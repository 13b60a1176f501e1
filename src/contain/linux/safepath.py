"""Open paths inside a container's root so that nothing in it can lead out.

openat2(RESOLVE_IN_ROOT) makes the kernel resolve every component, symlinks
included, as if the given directory were "/": a link to /etc/passwd in the
container means the container's /etc/passwd (the CVE-2018-15664 class).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import tarfile
from typing import IO

from ..errors import InvalidArgument, NotFound

_SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root_fd: int, path: str, flags: int, mode: int = 0) -> int:
    """An fd for `path` resolved inside the tree of root_fd (raises OSError)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, root_fd, os.fsencode(path.lstrip("/") or "."),
                       ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return fd


def archive_from(root_fd: int, path: str, out: IO[bytes]) -> dict:
    """Write a tar of `path` (file or directory, symlinks kept as links) as
    Docker's get_archive does; returns its stat like Docker's header."""
    try:
        fd = open_in_root(root_fd, path, os.O_PATH | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise NotFound(f"Could not find the file {path} in container") from None
    try:
        st = os.fstat(fd)
        base = os.path.basename(path.rstrip("/")) or "."
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, fd, base, st)
    finally:
        os.close(fd)
    link = ""
    return {"name": os.path.basename(path.rstrip("/")) or "/", "size": st.st_size,
            "mode": st.st_mode, "mtime": st.st_mtime, "linkTarget": link}


def _info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.mtime = int(st.st_mtime)
    return ti


def _add(tar: tarfile.TarFile, fd: int, name: str, st: os.stat_result) -> None:
    """Add the object behind an O_PATH fd; descend through fds only."""
    if stat.S_ISLNK(st.st_mode):
        ti = _info(name, st)
        ti.type = tarfile.SYMTYPE
        ti.linkname = os.readlink("", dir_fd=fd)
        tar.addfile(ti)
    elif stat.S_ISREG(st.st_mode):
        ti = _info(name, st)
        ti.size = st.st_size
        rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        with os.fdopen(rfd, "rb") as f:
            tar.addfile(ti, f)
    elif stat.S_ISDIR(st.st_mode):
        ti = _info(name, st)
        ti.type = tarfile.DIRTYPE
        tar.addfile(ti)
        dfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for entry in sorted(os.listdir(dfd)):
                cfd = os.open(entry, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                try:
                    _add(tar, cfd, f"{name}/{entry}", os.fstat(cfd))
                finally:
                    os.close(cfd)
        finally:
            os.close(dfd)
    # sockets, devices and fifos are left out, as docker cp does for sockets


def extract_into(root_fd: int, path: str, data: IO[bytes]) -> None:
    """Unpack a tar into directory `path` of the container (docker cp in):
    every member is created relative to directory fds opened inside the root,
    and no member may pass through a symlink or climb out with '..'."""
    try:
        dest = open_in_root(root_fd, path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise NotFound(f"Could not find the file {path} in container") from None
    except NotADirectoryError:
        raise InvalidArgument(f"extraction point is not a directory: {path}") from None
    dirs: dict[str, int] = {"": dest}
    try:
        with tarfile.open(fileobj=data, mode="r|*") as tar:
            for member in tar:
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if any(p == ".." for p in parts):
                    raise InvalidArgument(f"archive member escapes the destination: {member.name}")
                if not parts:
                    continue
                parent = _dir_fd(dirs, parts[:-1])
                name = parts[-1]
                _create(tar, member, parent, name, dirs, parts)
    except tarfile.TarError as exc:
        raise InvalidArgument(f"not a valid tar archive: {exc}") from None
    finally:
        for fd in dirs.values():
            os.close(fd)


def _dir_fd(dirs: dict[str, int], parts: list[str]) -> int:
    key = ""
    fd = dirs[""]
    for part in parts:
        key = f"{key}/{part}"
        if key not in dirs:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                dirs[key] = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                    dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise InvalidArgument(f"refusing to write through a symlink or non-directory: "
                                          f"{key.lstrip('/')}") from None
                raise
        fd = dirs[key]
    return fd


def _create(tar: tarfile.TarFile, m: tarfile.TarInfo, parent: int, name: str,
            dirs: dict[str, int], parts: list[str]) -> None:
    if m.isdir():
        fd = _dir_fd(dirs, parts)
        os.chmod(f"/proc/self/fd/{fd}", m.mode & 0o7777)
        os.chown(fd, m.uid, m.gid)
        return
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"cannot overwrite directory {m.name} with a non-directory")
        os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    if m.issym():
        os.symlink(m.linkname, name, dir_fd=parent)
        os.chown(name, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
    elif m.islnk():
        target = [p for p in m.linkname.split("/") if p not in ("", ".")]
        if not target or ".." in target:
            raise InvalidArgument(f"hard link escapes the destination: {m.linkname}")
        src_dir = _dir_fd(dirs, target[:-1])
        os.link(target[-1], name, src_dir_fd=src_dir, dst_dir_fd=parent, follow_symlinks=False)
    elif m.isreg():
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as f:
            src = tar.extractfile(m)
            if src is not None:
                while chunk := src.read(1 << 20):
                    f.write(chunk)
            os.fchown(f.fileno(), m.uid, m.gid)
            os.fchmod(f.fileno(), m.mode & 0o7777)
    else:
        raise InvalidArgument(f"unsupported archive member type for copy: {m.name}")
