"""Safe, streaming unpacking of OCI/Docker layer tars, and packing of a directory into one.

`unpack_layer` decompresses, hashes and extracts a layer in one pass into a new directory
that serves as an overlayfs lower directory. Every entry is created relative to a
directory file descriptor reached one component at a time with O_NOFOLLOW|O_DIRECTORY,
so no symlink, whether from the layer or not, is ever followed while writing: nothing
outside the destination can be touched. (openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)
would give the same guarantee; the per-component walk is used because it also creates
missing parents as Docker does and, with the cache of directory fds, costs one openat
per new directory.)

`pack_directory` writes the deterministic layer tar of a directory, turning overlay
whiteouts and opaque directories back into OCI `.wh.` entries, so that an overlay upper
directory can be committed as a layer.

Extended attributes policy: a layer's `trusted.overlay.*` and `user.overlay.*` attributes
are never applied (overlayfs would obey them: a layer could forge opaque dirs or
redirects); any other attribute the filesystem or kernel refuses with ENOTSUP or EPERM
(no xattr support, `user.*` on a symlink, `trusted.*` without CAP_SYS_ADMIN, a label
refused by an LSM) is skipped and counted in `UnpackStats.skipped_xattrs`, as Docker does;
any other failure aborts the unpack. The opaque marker that a `.wh..wh..opq` entry asks
for is not optional: failing to set it aborts.

Unpacking for an ordinary user (``userns_ids``) runs as root of a user namespace that maps
the container's ids (see storage/userns.py). Three things differ there, as the kernel has it:
the opaque marker is ``user.overlay.opaque`` (what overlayfs reads with ``userxattr``, and
fuse-overlayfs too; ``trusted.*`` needs privilege on the host), device nodes other than
whiteouts cannot be made (they are skipped and counted, as containers/storage does; the
runtime gives the container its /dev), and an owner outside the mapping cannot be set: the
unpack goes on without it and then fails with `UnmappedOwners` listing every such id.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import queue
import stat
import tarfile
import threading
import zlib
from typing import IO, Any, Callable, Mapping, Optional, TypeVar, Union

import attrs
import zstandard

from contain.errors import InvalidArgument, LayerError

__all__ = ["UnpackStats", "PackStats", "UnmappedOwners", "unpack_layer", "pack_directory"]

StrPath = Union[str, "os.PathLike[str]"]
_T = TypeVar("_T")

_WH_PREFIX = ".wh."
_WH_OPAQUE = ".wh..wh..opq"
_WH_META_PREFIX = ".wh..wh."
_OPAQUE_XATTR = "trusted.overlay.opaque"
_USERNS_OPAQUE_XATTR = "user.overlay.opaque"
# What marks an opaque directory in an upper dir: the kernel's overlay (trusted.*, or
# user.* with userxattr) and fuse-overlayfs (its own name when trusted.* is refused).
_OPAQUE_XATTRS = (_OPAQUE_XATTR, _USERNS_OPAQUE_XATTR, "user.fuseoverlayfs.opaque")
_SCHILY = "SCHILY.xattr."
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# tarfile's stream buffer: every header read slices what is left of it, so a small
# buffer keeps small-file layers cheap; file data is pulled in larger pieces.
_TAR_BUFSIZE = 64 * 1024
_DATA_CHUNK = 1024 * 1024
_PREFETCH_DEPTH = 8  # chunks of _DATA_CHUNK decompressed bytes held ahead
_SOURCE_CHUNK = 256 * 1024
_DIR_FD_CACHE = 256
_PATH_MAX = 4095
# Failures of the machine rather than of the layer: they propagate as OSError.
_ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM, errno.EMFILE, errno.ENFILE}
)
_SKIPPABLE_XATTR_ERRNOS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM})
_MAGIC_GZIP = b"\x1f\x8b"
_MAGIC_ZSTD = b"\x28\xb5\x2f\xfd"


@attrs.frozen
class UnpackStats:
    """What `unpack_layer` read and wrote."""

    diff_id: str  # "sha256:<hex>" of the uncompressed tar
    compressed_size: int  # bytes read from the source stream
    uncompressed_size: int
    files: int  # tar entries processed, of every type
    skipped_xattrs: int = 0  # refused by the filesystem, see the module docstring
    skipped_devices: int = 0  # device nodes a user namespace cannot make (userns_ids)


@attrs.frozen
class PackStats:
    """What `pack_directory` wrote."""

    diff_id: str  # "sha256:<hex>" of the uncompressed tar
    digest: str  # "sha256:<hex>" of the bytes written (the blob)
    size: int  # bytes written
    uncompressed_size: int


class UnmappedOwners(LayerError):
    """Entries of the layer belong to ids the user namespace it was unpacked in does not
    map (``uids``, ``gids``: sorted, each list complete); nothing of the layer was kept."""

    def __init__(self, uids: "list[int]", gids: "list[int]") -> None:
        self.uids = sorted(uids)
        self.gids = sorted(gids)
        parts = []
        if self.uids:
            parts.append("uids " + ", ".join(map(str, self.uids[:5])))
        if self.gids:
            parts.append("gids " + ", ".join(map(str, self.gids[:5])))
        super().__init__(f"layer has files owned by {' and '.join(parts)}, outside the ids mapped")


class _SourceFailure(Exception):
    """Carries an I/O error of the caller's stream through the decompressors untouched."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _CountingReader:
    """The caller's stream, with sniffed bytes replayed first and bytes counted."""

    def __init__(self, raw: IO[bytes], prefix: bytes) -> None:
        self._raw = raw
        self._prefix = prefix
        self.count = len(prefix)

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size < 0 or size >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        try:
            data = self._raw.read(size)
        except OSError as e:
            raise _SourceFailure(e) from e
        self.count += len(data)
        return data


class _GzipReader:
    """Gzip members one after another, CRC and length checked by zlib itself.

    Faster than gzip.GzipFile, which inflates raw deflate and checksums separately.
    """

    def __init__(self, source: _CountingReader) -> None:
        self._source = source
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._in_member = False

    def read(self, size: int = -1) -> bytes:
        if size <= 0:
            size = _SOURCE_CHUNK
        while True:
            inflate = self._inflate
            if inflate.unconsumed_tail:
                data = inflate.unconsumed_tail
            elif self._pending:
                data, self._pending = self._pending, b""
            else:
                data = self._source.read(_SOURCE_CHUNK)
                if not data:
                    if self._in_member:
                        raise EOFError("gzip stream ended before its end-of-stream marker")
                    return b""
            self._in_member = True
            out = inflate.decompress(data, size)
            if inflate.eof:
                # Another member may follow (multi-member gzip is valid, as in Go).
                self._pending = inflate.unused_data
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._in_member = False
            if out:
                return out


class _HashingReader:
    """The decompressed tar stream, hashed and counted as tarfile reads it."""

    def __init__(self, inner: Callable[[int], bytes]) -> None:
        self._read = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._read(size)
        except _SourceFailure:
            raise
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as e:
            # The source's own errors arrive as _SourceFailure; these are the data's.
            raise LayerError(f"layer stream is corrupt: {e}") from e
        self.sha.update(data)
        self.size += len(data)
        return data


class _Prefetcher:
    """Reads, decompresses and hashes in a worker thread, ahead of the extraction.

    zlib, zstd, hashlib and read() release the GIL, so inflating overlaps with writing
    files. Errors of the worker are raised in the reading thread, in order.
    """

    def __init__(self, inner: _HashingReader) -> None:
        self._inner = inner
        self._queue: queue.Queue[Union[bytes, BaseException]] = queue.Queue(maxsize=_PREFETCH_DEPTH)
        self._stop = threading.Event()
        self._chunk = b""
        self._pos = 0
        self._eof = False
        self._failure: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._work, name="contain-unpack", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._inner.read(_DATA_CHUNK)
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as e:  # handed to the reader, raised there
            self._put(e)

    def _put(self, item: Union[bytes, BaseException]) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        if self._pos >= len(self._chunk):
            if self._failure is not None:
                raise self._failure
            if self._eof:
                return b""
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._failure = item
                raise item
            if not item:
                self._eof = True
                return b""
            self._chunk, self._pos = item, 0
        if size < 0:
            size = len(self._chunk)
        data = self._chunk[self._pos : self._pos + size]
        self._pos += len(data)
        return data

    def close(self) -> None:
        """Stop the worker and wait for it: it must not touch the source afterwards."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()


class _TarInfo(tarfile.TarInfo):
    """Makes a bad or missing header an error; tarfile would silently end the archive."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            raise  # the zero block that properly ends an archive
        except tarfile.EmptyHeaderError as e:
            raise LayerError(f"layer tar is truncated: no end-of-archive marker at offset {tar.offset}") from e
        except tarfile.HeaderError as e:
            raise LayerError(f"layer tar has a bad header at offset {tar.offset}: {e}") from e


def unpack_layer(
    fileobj: IO[bytes],
    dest: StrPath,
    *,
    compression: str = "auto",
    whiteouts: str = "overlay",
    userns_ids: Optional[tuple[int, int]] = None,
) -> UnpackStats:
    """Extract a layer tar stream into `dest`, a new or empty directory.

    compression: "auto" (sniffed), "gzip", "zstd" or "none". whiteouts: "overlay" turns OCI
    whiteouts into overlayfs ones (char device 0/0, opaque xattr); "keep" leaves `.wh.`
    files as they are. userns_ids: (uid count, gid count) when running as root of a user
    namespace mapping ids 0..count-1 (see the module docstring). Hostile or corrupt input
    raises LayerError; on any error `dest` is removed entirely and the exception propagates.
    """
    if compression not in ("auto", "gzip", "zstd", "none"):
        raise InvalidArgument(f"unknown layer compression {compression!r}")
    if whiteouts not in ("overlay", "keep"):
        raise InvalidArgument(f"unknown whiteout handling {whiteouts!r}")
    dest_path = os.path.abspath(os.fspath(dest))
    parent, base = os.path.split(dest_path)
    if not base:
        raise InvalidArgument("cannot unpack a layer into /")
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        root_fd = _open_destination(parent_fd, base, dest_path)
        try:
            extractor = _Extractor(root_fd, overlay=whiteouts == "overlay", userns_ids=userns_ids)
            try:
                return extractor.run(fileobj, compression)
            finally:
                extractor.close()
        except BaseException as e:
            os.close(root_fd)
            root_fd = -1
            try:
                _remove_tree(parent_fd, base)
            except OSError:
                pass  # the original error matters more than a failed clean-up
            if isinstance(e, _SourceFailure):
                raise e.error from None
            raise
        finally:
            if root_fd >= 0:
                os.close(root_fd)
    finally:
        os.close(parent_fd)


def _open_destination(parent_fd: int, base: str, shown: str) -> int:
    """Create `base` or check it is an empty real directory; return an fd on it."""
    try:
        os.mkdir(base, 0o755, dir_fd=parent_fd)
    except FileExistsError:
        pass
    try:
        fd = os.open(base, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as e:
        raise InvalidArgument(f"layer destination {shown} is not a directory: {e.strerror}") from e
    with os.scandir(fd) as entries:
        if any(True for _ in entries):
            os.close(fd)
            raise InvalidArgument(f"layer destination {shown} is not empty")
    return fd


def _clean_path(name: str, entry: str) -> str:
    """Resolve `.` and `..` lexically and drop leading slashes, as Docker does.

    A `..` that would climb above the layer root is refused.
    """
    parts: list[str] = []
    for part in name.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if not parts:
                raise LayerError(f"layer entry {entry!r}: path {name!r} climbs out of the layer")
            parts.pop()
        else:
            parts.append(part)
    path = "/".join(parts)
    if len(path) > _PATH_MAX // 4 and len(os.fsencode(path)) > _PATH_MAX:
        raise LayerError(f"layer entry {entry[:80]!r}...: path longer than {_PATH_MAX} bytes")
    return path


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _mtime_ns(member: tarfile.TarInfo) -> int:
    mtime = member.mtime
    if isinstance(mtime, int):
        return mtime * 1_000_000_000
    return round(mtime * 1e9)


class _Extractor:
    """Extraction state of one layer: cached directory fds and deferred directory mtimes."""

    def __init__(self, root_fd: int, *, overlay: bool,
                 userns_ids: Optional[tuple[int, int]] = None) -> None:
        self.root_fd = root_fd
        self.overlay = overlay
        self.userns_ids = userns_ids
        self.opaque_xattr = _OPAQUE_XATTR if userns_ids is None else _USERNS_OPAQUE_XATTR
        self.unmapped_uids: set[int] = set()
        self.unmapped_gids: set[int] = set()
        self.skipped_devices = 0
        # Relative dir path -> fd, least recently used first ("" is the root, never evicted).
        self.dirs: dict[str, int] = {"": root_fd}
        # Evicted fds are closed before the next entry, never while one is being handled.
        self.closing: list[int] = []
        self.dir_mtimes: dict[str, int] = {}
        self.skipped_xattrs = 0
        self.stream: Any = None  # tarfile's private stream, positioned at each member's data

    def close(self) -> None:
        for rel, fd in self.dirs.items():
            if rel:
                os.close(fd)
        self.dirs = {"": self.root_fd}
        self._close_evicted()

    def _close_evicted(self) -> None:
        for fd in self.closing:
            os.close(fd)
        self.closing.clear()

    # -- the stream ------------------------------------------------------------------

    def run(self, fileobj: IO[bytes], compression: str) -> UnpackStats:
        # Sniff from a real read (the stream need not be seekable), which also tells an
        # empty blob apart.
        prefix = b""
        try:
            while len(prefix) < 4:
                chunk = fileobj.read(_SOURCE_CHUNK)
                if not chunk:
                    break
                prefix += chunk
        except OSError as e:
            raise _SourceFailure(e) from e
        if compression == "auto":
            if prefix.startswith(_MAGIC_GZIP):
                compression = "gzip"
            elif prefix.startswith(_MAGIC_ZSTD):
                compression = "zstd"
            else:
                compression = "none"
        source = _CountingReader(fileobj, prefix)
        if compression == "gzip":
            decoded: Callable[[int], bytes] = _GzipReader(source).read
        elif compression == "zstd":
            decoded = (
                zstandard.ZstdDecompressor()
                .stream_reader(source, read_size=_SOURCE_CHUNK, read_across_frames=True, closefd=False)
                .read
            )
        else:
            decoded = source.read
        tar_stream = _HashingReader(decoded)
        files = 0
        if prefix:
            # An empty blob is an empty layer (as in Go's archive/tar); anything else must
            # be a complete tar, ending with its zero block.
            prefetcher = _Prefetcher(tar_stream)
            try:
                try:
                    tar = tarfile.open(
                        fileobj=prefetcher,  # type: ignore[arg-type]
                        mode="r|",
                        bufsize=_TAR_BUFSIZE,
                        tarinfo=_TarInfo,
                        encoding="utf-8",
                        errors="surrogateescape",
                    )
                except tarfile.TarError as e:
                    raise LayerError(f"layer is not a tar archive: {e}") from e
                files = self._extract_all(tar)
                while prefetcher.read(_DATA_CHUNK):
                    pass  # trailing padding belongs to the diff_id too
            finally:
                prefetcher.close()
        if self.unmapped_uids or self.unmapped_gids:
            raise UnmappedOwners(sorted(self.unmapped_uids), sorted(self.unmapped_gids))
        return UnpackStats(
            diff_id="sha256:" + tar_stream.sha.hexdigest(),
            compressed_size=source.count,
            uncompressed_size=tar_stream.size,
            files=files,
            skipped_xattrs=self.skipped_xattrs,
            skipped_devices=self.skipped_devices,
        )

    def _extract_all(self, tar: tarfile.TarFile) -> int:
        self.stream = tar.fileobj  # type: ignore[assignment]
        files = 0
        while True:
            try:
                member = tar.next()
            except tarfile.TarError as e:
                raise LayerError(f"layer tar is corrupt after {files} entries: {e}") from e
            if member is None:
                break
            del tar.members[:]  # tarfile keeps every header otherwise
            files += 1
            if self.closing:
                self._close_evicted()
            try:
                self._entry(member)
            except LayerError:
                raise
            except OSError as e:
                if e.errno in _ENVIRONMENT_ERRNOS:
                    raise
                raise LayerError(f"layer entry {member.name!r}: {e.strerror or e}") from e
            except (ValueError, OverflowError) as e:
                # Embedded NUL bytes, ids or times out of range.
                raise LayerError(f"layer entry {member.name!r}: {e}") from e
            except tarfile.TarError as e:
                raise LayerError(f"layer entry {member.name!r}: {e}") from e
        for rel, mtime in self.dir_mtimes.items():
            # Last, because creating entries in a directory changes its mtime.
            if self.closing:
                self._close_evicted()
            os.utime(self._dir_fd(rel, rel, create=False), ns=(mtime, mtime))
        return files

    # -- directories -----------------------------------------------------------------

    def _dir_fd(self, rel: str, entry: str, *, create: bool = True) -> int:
        """An fd on directory `rel`, reached without following any symlink."""
        dirs = self.dirs
        fd = dirs.get(rel)
        if fd is not None:
            if rel:
                dirs[rel] = dirs.pop(rel)  # most recently used goes last
            return fd
        parts = rel.split("/")
        known = len(parts) - 1
        while known > 0 and "/".join(parts[:known]) not in dirs:
            known -= 1
        current = "/".join(parts[:known])
        fd = dirs[current]
        for name in parts[known:]:
            current = f"{current}/{name}" if current else name
            fd = self._open_subdir(fd, name, current, entry, create)
        return fd

    def _open_subdir(self, parent_fd: int, name: str, rel: str, entry: str, create: bool) -> int:
        opaque = False
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise LayerError(f"layer entry {entry!r}: {rel!r} does not exist") from None
            # Docker creates missing parents, root-owned, mode 0755.
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if not (create and self.overlay and _is_whiteout(st)):
                kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise LayerError(f"layer entry {entry!r}: {rel!r} is {kind}") from None
            # A path under a name this layer whited out: the lower one is gone, this
            # layer's directory takes its place, so it is opaque.
            os.unlink(name, dir_fd=parent_fd)
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            opaque = True
        self._cache_dir(rel, fd)
        if opaque:
            os.setxattr(fd, self.opaque_xattr, b"y")
        return fd

    def _cache_dir(self, rel: str, fd: int) -> None:
        dirs = self.dirs
        dirs[rel] = fd
        if len(dirs) > _DIR_FD_CACHE:
            keys = iter(dirs)
            next(keys)  # the root
            self.closing.append(dirs.pop(next(keys)))

    def _forget_tree(self, rel: str) -> None:
        """Drop cached fds and pending mtimes of a removed directory and all below it."""
        below = rel + "/"
        for key in [k for k in self.dirs if k == rel or k.startswith(below)]:
            self.closing.append(self.dirs.pop(key))
        for key in [k for k in self.dir_mtimes if k == rel or k.startswith(below)]:
            del self.dir_mtimes[key]

    # -- entries ---------------------------------------------------------------------

    def _entry(self, member: tarfile.TarInfo) -> None:
        path = _clean_path(member.name, member.name)
        if not path:
            if not member.isdir():
                raise LayerError(f"layer entry {member.name!r}: the root must be a directory")
            self._apply_fd_metadata(self.root_fd, member)
            self.dir_mtimes[""] = _mtime_ns(member)
            return
        parent, _, name = path.rpartition("/")
        parent_fd = self._dir_fd(parent, member.name)
        if self.overlay and name.startswith(_WH_PREFIX):
            self._whiteout(parent_fd, parent, name, member)
            return
        kind = member.type
        if kind in tarfile.REGULAR_TYPES:
            self._regular(parent_fd, name, path, member)
        elif kind == tarfile.DIRTYPE:
            self._directory(parent_fd, name, path, member)
        elif kind == tarfile.SYMTYPE:
            self._create(parent_fd, name, path, lambda: os.symlink(member.linkname, name, dir_fd=parent_fd))
            self._apply_path_metadata(parent_fd, name, member, chmod=False)
        elif kind == tarfile.LNKTYPE:
            self._hardlink(parent_fd, name, path, member)
        elif kind in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
            if kind == tarfile.FIFOTYPE:
                mode, device = stat.S_IFIFO, 0
            elif self.userns_ids is not None:
                self.skipped_devices += 1  # the kernel refuses mknod in a user namespace
                return
            else:
                mode = stat.S_IFCHR if kind == tarfile.CHRTYPE else stat.S_IFBLK
                device = os.makedev(member.devmajor, member.devminor)
            self._create(parent_fd, name, path, lambda: os.mknod(name, mode | 0o600, device, dir_fd=parent_fd))
            self._apply_path_metadata(parent_fd, name, member, chmod=True)
        else:
            raise LayerError(f"layer entry {member.name!r}: unsupported tar entry type {kind!r}")

    def _create(self, parent_fd: int, name: str, path: str, make: Callable[[], _T]) -> tuple[_T, bool]:
        """Run `make`; if the name exists (a duplicate entry), the later entry wins.

        Returns make's result and whether a whiteout was replaced.
        """
        try:
            return make(), False
        except FileExistsError:
            pass
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        self._remove(parent_fd, name, path, st)
        return make(), self.overlay and _is_whiteout(st)

    def _remove(self, parent_fd: int, name: str, path: str, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            self._forget_tree(path)
            _remove_tree(parent_fd, name)
        else:
            os.unlink(name, dir_fd=parent_fd)

    def _regular(self, parent_fd: int, name: str, path: str, member: tarfile.TarInfo) -> None:
        fd, _ = self._create(parent_fd, name, path, lambda: os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent_fd))
        try:
            stream = self.stream
            if stream.tell() != member.offset_data:
                stream.seek(member.offset_data)
            if member.sparse is not None:
                for offset, size in member.sparse:
                    os.lseek(fd, offset, os.SEEK_SET)
                    self._copy(fd, size, member)
                os.ftruncate(fd, member.size)  # the tail may be a hole
            elif member.size:
                self._copy(fd, member.size, member)
            self._apply_fd_metadata(fd, member)
            mtime = _mtime_ns(member)
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)

    def _copy(self, fd: int, size: int, member: tarfile.TarInfo) -> None:
        read = self.stream.read
        write = os.write
        while size:
            chunk = read(size if size < _DATA_CHUNK else _DATA_CHUNK)
            if not chunk:
                raise LayerError(f"layer entry {member.name!r}: unexpected end of data")
            size -= len(chunk)
            written = write(fd, chunk)
            if written < len(chunk):
                view = memoryview(chunk)[written:]
                while view:
                    view = view[write(fd, view) :]

    def _directory(self, parent_fd: int, name: str, path: str, member: tarfile.TarInfo) -> None:
        opaque = False
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                # A directory where this layer whited the name out replaces the lower
                # directory entirely: opaque.
                opaque = self.overlay and _is_whiteout(st)
                self._remove(parent_fd, name, path, st)
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            # else: a directory is not replaced by a directory, only its metadata is.
        fd = self.dirs.get(path)
        if fd is None:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            self._cache_dir(path, fd)
        self._apply_fd_metadata(fd, member)
        if opaque:
            os.setxattr(fd, self.opaque_xattr, b"y")
        self.dir_mtimes[path] = _mtime_ns(member)

    def _hardlink(self, parent_fd: int, name: str, path: str, member: tarfile.TarInfo) -> None:
        target = _clean_path(member.linkname, member.name)
        if not target:
            raise LayerError(f"layer entry {member.name!r}: hard link to the layer root")
        if target == path:
            return
        target_parent, _, target_name = target.rpartition("/")
        # Only the target's directories are walked, never its last component: a link
        # to a symlink links the symlink itself.
        target_fd = self._dir_fd(target_parent, f"{member.name} (hard link to {member.linkname})", create=False)
        try:
            self._create(
                parent_fd,
                name,
                path,
                lambda: os.link(
                    target_name, name, src_dir_fd=target_fd, dst_dir_fd=parent_fd, follow_symlinks=False
                ),
            )
        except FileNotFoundError:
            raise LayerError(
                f"layer entry {member.name!r}: hard link target {member.linkname!r} is not in this layer"
            ) from None

    def _whiteout(self, parent_fd: int, parent: str, name: str, member: tarfile.TarInfo) -> None:
        if name == _WH_OPAQUE:
            os.setxattr(parent_fd, self.opaque_xattr, b"y")
            return
        if name.startswith(_WH_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, ...), meaningless to overlayfs
        hidden = name[len(_WH_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise LayerError(f"layer entry {member.name!r}: whiteout of nothing")
        try:
            os.mknod(hidden, stat.S_IFCHR, 0, dir_fd=parent_fd)
            mtime = _mtime_ns(member)  # so that packing the directory again gives the same tar
            os.utime(hidden, ns=(mtime, mtime), dir_fd=parent_fd, follow_symlinks=False)
        except FileExistsError:
            # The name is also in this layer; whiteouts hide lower layers only, so this
            # layer's entry stays, and a directory of it no longer merges with lower ones.
            st = os.stat(hidden, dir_fd=parent_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                rel = f"{parent}/{hidden}" if parent else hidden
                os.setxattr(self._dir_fd(rel, member.name), self.opaque_xattr, b"y")

    # -- metadata --------------------------------------------------------------------

    def _mapped(self, member: tarfile.TarInfo) -> bool:
        """Whether the entry's owner can be set (always, unless in a user namespace)."""
        uid, gid = _owner(member.uid, member), _owner(member.gid, member)
        if self.userns_ids is None:
            return True
        uids, gids = self.userns_ids
        if uid >= uids:
            self.unmapped_uids.add(uid)
        if gid >= gids:
            self.unmapped_gids.add(gid)
        return uid < uids and gid < gids

    def _apply_fd_metadata(self, fd: int, member: tarfile.TarInfo) -> None:
        # chown first: it clears setuid/setgid bits and file capabilities.
        if self._mapped(member):
            os.chown(fd, member.uid, member.gid)
        os.chmod(fd, member.mode & 0o7777)
        if member.pax_headers:
            self._apply_xattrs(fd, member)

    def _apply_path_metadata(self, parent_fd: int, name: str, member: tarfile.TarInfo, *, chmod: bool) -> None:
        """Metadata of an entry that cannot be opened (symlink, device, fifo)."""
        if self._mapped(member):
            os.chown(name, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
        if chmod:
            os.chmod(name, member.mode & 0o7777, dir_fd=parent_fd)  # just created: not a symlink
        if member.pax_headers:
            # No l*xattrat(): reach the entry through its directory's fd, not following it.
            self._apply_xattrs(f"/proc/self/fd/{parent_fd}/{name}", member)
        mtime = _mtime_ns(member)
        os.utime(name, ns=(mtime, mtime), dir_fd=parent_fd, follow_symlinks=False)

    def _apply_xattrs(self, target: Union[int, str], member: tarfile.TarInfo) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith(_SCHILY):
                continue
            attr = key[len(_SCHILY) :]
            if attr.startswith(_OVERLAY_XATTRS):
                self.skipped_xattrs += 1
                continue
            data = value.encode("utf-8", "surrogateescape")  # tarfile decoded raw bytes so
            try:
                if isinstance(target, int):
                    os.setxattr(target, attr, data)
                else:
                    os.setxattr(target, attr, data, follow_symlinks=False)
            except OSError as e:
                if e.errno not in _SKIPPABLE_XATTR_ERRNOS:
                    raise
                self.skipped_xattrs += 1


def _owner(ident: int, member: tarfile.TarInfo) -> int:
    if ident < 0 or ident > 0xFFFFFFFE:
        raise LayerError(f"layer entry {member.name!r}: owner id {ident} out of range")
    return ident


def _remove_tree(parent_fd: int, name: str) -> None:
    """rm -rf of `name` in `parent_fd`, following no symlink, iteratively (trees may be deep)."""
    try:
        os.unlink(name, dir_fd=parent_fd)
        return
    except FileNotFoundError:
        return
    except IsADirectoryError:
        pass
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        # One fd at a time: `..` of a directory here is its parent, nothing moves them.
        pending = _clear_directory(fd)
        levels: list[list[str]] = []
        names: list[str] = []
        while True:
            if pending:
                sub = pending.pop()
                child = os.open(sub, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                levels.append(pending)
                names.append(sub)
                pending = _clear_directory(fd)
                continue
            if not names:
                break
            up = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = up
            os.rmdir(names.pop(), dir_fd=fd)
            pending = levels.pop()
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def _clear_directory(fd: int) -> list[str]:
    """Unlink everything but subdirectories in `fd`; return the subdirectories' names."""
    subdirs: list[str] = []
    others: list[str] = []
    with os.scandir(fd) as entries:
        for entry in entries:
            (subdirs if entry.is_dir(follow_symlinks=False) else others).append(entry.name)
    for other in others:
        os.unlink(other, dir_fd=fd)
    return subdirs


# -- packing -------------------------------------------------------------------------


class _HashingWriter:
    """Hashes and counts what passes through to `inner` (tarfile also wants tell())."""

    def __init__(self, inner: Callable[[bytes], object]) -> None:
        self._write = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass


def pack_directory(src_dir: StrPath, fileobj: IO[bytes], *, compression: str = "none",
                   owners: Optional[Mapping[str, tuple[int, int]]] = None) -> PackStats:
    """Write a deterministic layer tar of `src_dir` to `fileobj`.

    Entries are sorted, owners numeric, PAX format, mtimes in whole seconds; the root
    itself is not an entry. Hard links are found by inode; `security.capability` and
    `user.*` xattrs are kept. Overlay whiteouts (char device 0/0) become `.wh.NAME` and
    opaque directories get a `.wh..wh..opq` entry, so an overlay upper directory (of the
    kernel's overlay or of fuse-overlayfs) packs into a layer. compression: "none", "gzip"
    or "zstd". owners: (uid, gid) by path relative to `src_dir` ("a/b"), recorded instead
    of the files' own (a build's staging directory, whose owners are declared, not set).
    """
    if compression not in ("none", "gzip", "zstd"):
        raise InvalidArgument(f"unknown layer compression {compression!r}")
    blob = _HashingWriter(fileobj.write)
    compressor: Optional[IO[bytes]] = None
    if compression == "gzip":
        # mtime=0 and no file name: the same tree gives the same bytes.
        compressor = gzip.GzipFile(filename="", mode="wb", fileobj=blob, mtime=0, compresslevel=6)  # type: ignore[arg-type]
    elif compression == "zstd":
        compressor = zstandard.ZstdCompressor(level=3).stream_writer(blob, closefd=False)  # type: ignore[assignment]
    tar_out = _HashingWriter(compressor.write) if compressor is not None else blob
    tar = tarfile.TarFile(
        fileobj=tar_out,  # type: ignore[arg-type]
        mode="w",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
        copybufsize=_DATA_CHUNK,
    )
    try:
        _pack_tree(tar, os.fspath(src_dir), owners or {})
    finally:
        tar.close()
    if compressor is not None:
        compressor.close()
    if hasattr(fileobj, "flush"):
        fileobj.flush()
    return PackStats(
        diff_id="sha256:" + tar_out.sha.hexdigest(),
        digest="sha256:" + blob.sha.hexdigest(),
        size=blob.size,
        uncompressed_size=tar_out.size,
    )


def _pack_tree(tar: tarfile.TarFile, root: str, owners: Mapping[str, tuple[int, int]]) -> None:
    seen_inodes: dict[tuple[int, int], str] = {}
    # Depth first, sorted; a stack rather than recursion, since trees may be deep.
    stack: list[tuple[str, str]] = [("", root)]
    first = True
    while stack:
        rel, path = stack.pop()
        if first:
            first = False
        else:
            if not _pack_entry(tar, rel, path, seen_inodes, owners.get(rel)):
                continue
        with os.scandir(path) as it:
            children = sorted(it, key=lambda e: e.name, reverse=True)
        for child in children:
            stack.append((f"{rel}/{child.name}" if rel else child.name, child.path))


def _pack_entry(tar: tarfile.TarFile, rel: str, path: str, seen_inodes: dict[tuple[int, int], str],
                owner: Optional[tuple[int, int]]) -> bool:
    """Add one entry; return True if it is a directory to descend into."""
    st = os.lstat(path)
    mode = st.st_mode
    info = tarfile.TarInfo(rel)
    info.mtime = st.st_mtime_ns // 1_000_000_000
    if stat.S_ISCHR(mode) and st.st_rdev == 0:
        # An overlay whiteout (possibly one shared, hard-linked inode): an OCI whiteout.
        parent, _, name = rel.rpartition("/")
        info.name = f"{parent}/{_WH_PREFIX}{name}" if parent else _WH_PREFIX + name
        info.mode = 0o600
        tar.addfile(info)
        return False
    info.uid, info.gid = owner if owner is not None else (st.st_uid, st.st_gid)
    info.uname = info.gname = ""
    info.mode = stat.S_IMODE(mode)
    if not stat.S_ISDIR(mode) and st.st_nlink > 1:
        key = (st.st_dev, st.st_ino)
        first = seen_inodes.get(key)
        if first is not None:
            info.type = tarfile.LNKTYPE
            info.linkname = first
            tar.addfile(info)
            return False
        seen_inodes[key] = rel
    names = os.listxattr(path, follow_symlinks=False)
    for attr in names:
        if attr == "security.capability" or (attr.startswith("user.") and not attr.startswith(_OVERLAY_XATTRS)):
            value = os.getxattr(path, attr, follow_symlinks=False)
            # tarfile writes surrogate-escaped values back as the original bytes.
            info.pax_headers[_SCHILY + attr] = value.decode("utf-8", "surrogateescape")
    if stat.S_ISREG(mode):
        info.size = st.st_size
        with open(path, "rb") as f:
            tar.addfile(info, f)
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        if _is_opaque(path, names):
            marker = tarfile.TarInfo(f"{rel}/{_WH_OPAQUE}")
            marker.mtime = info.mtime
            marker.mode = 0o600
            tar.addfile(marker)
        return True
    elif stat.S_ISLNK(mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        tar.addfile(info)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        tar.addfile(info)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    # Sockets are skipped, as Docker does.
    return False


def _is_opaque(path: str, names: list[str]) -> bool:
    for attr in _OPAQUE_XATTRS:
        if attr in names and os.getxattr(path, attr, follow_symlinks=False) == b"y":
            return True
    return False
