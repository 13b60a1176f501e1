"""Small JSON state files, written whole or not at all."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import threading
import time
import zlib
from typing import Any, Optional

import orjson

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
_exchange_works = _renameat2 is not None


def _dumps(data: Any) -> bytes:
    """Compact JSON (orjson: a tenth of the time of the json module's, which
    counts at several records per container start); what orjson refuses
    (keys that are not strings, integers past 64 bits) goes through json."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, separators=(",", ":")).encode()


def _exchange(new: str, path: str) -> bool:
    """Swap `new` and `path` atomically; False when there is nothing at
    `path` yet or the filesystem cannot (the caller renames instead).  An
    exchange rather than a rename over the old file: ext4 (auto_da_alloc)
    starts writing the new file back at a replacing rename, which costs
    about 0.3 ms per state write; an exchange a third of that.  Readers see
    the old file or the new one, as with a rename."""
    global _exchange_works
    if not _exchange_works:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(path), _RENAME_EXCHANGE) == 0:
        return True
    e = ctypes.get_errno()
    if e in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
        _exchange_works = False  # a filesystem or kernel without it
    elif e != errno.ENOENT:  # ENOENT: nothing to exchange with yet
        raise OSError(e, os.strerror(e), path)
    return False


def _swap_in(tmp: str, path: str) -> None:
    """Put tmp at path atomically (the old content goes)."""
    try:
        exchanged = _exchange(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise
    if exchanged:
        os.unlink(tmp)  # now the old content
    else:
        os.replace(tmp, path)


def overwrite(path: str, data: bytes) -> None:
    """Write `data` as the whole of `path` in place (made if missing): a
    file that is kept and rewritten frees and allocates no block when its
    size stays within them (unlike O_TRUNC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


_CRC_KEY = b',"_crc":'


def write_json(path: str, data: Any, *, serialized: bool = False) -> None:
    """Write via a temporary file and swap it in: readers see the old or the new file.

    `serialized`: the caller holds a lock that every writer of `path`
    takes, and `data` is a dict.  The temporary file is then `path.next`,
    kept between writes (after the swap it holds the previous content) and
    overwritten in place: no file is made or deleted and no block freed
    per write, which on ext4 (without a journal, mounted with discard)
    costs ten times the write.  A reader still holding that file open from
    before the last swap could read it while it is being overwritten, so
    the content ends with a checksum of the rest (`"_crc"`, the last key):
    load_json reads again until it matches."""
    body = _dumps(data)
    if not serialized:
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            f.write(body)
        _swap_in(tmp, path)
        return
    if body == b"{}" or not body.startswith(b"{"):
        raise ValueError("a serialized write takes a non-empty dict")
    raw = body[:-1] + _CRC_KEY + str(zlib.crc32(body)).encode() + b"}"
    nxt = path + ".next"
    overwrite(nxt, raw)
    if not _exchange(nxt, path):
        os.replace(nxt, path)


def _parse(raw: bytes) -> Any:
    i = raw.rfind(_CRC_KEY)
    if i < 0 or not raw.endswith(b"}"):
        return orjson.loads(raw)  # written whole (not serialized), or torn: raises
    body = raw[:i] + b"}"
    try:
        crc = int(raw[i + len(_CRC_KEY):-1])
    except ValueError:
        crc = -1
    if zlib.crc32(body) != crc:
        raise json.JSONDecodeError("checksum mismatch (read while being written)", "", 0)
    return orjson.loads(body)


def load_json(path: str) -> Any:
    """Parse the file; a torn read (see write_json) is read again.
    FileNotFoundError propagates."""
    for attempt in range(50):
        with open(path, "rb") as f:
            raw = f.read()
        try:
            return _parse(raw)
        except json.JSONDecodeError:
            if attempt == 49:
                raise
            if attempt >= 5:
                time.sleep(0.001)
    raise AssertionError("unreachable")


def read_json(path: str) -> Optional[Any]:
    """The file's content, or None when it is missing or torn."""
    try:
        return load_json(path)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
