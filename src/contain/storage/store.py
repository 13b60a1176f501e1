"""The image store: content-addressed blobs, unpacked layers, image records and tags.

Layout under the root (every file is written to ``tmp/`` first and renamed into place,
so a reader sees either the old or the new version, never a torn one)::

    blobs/sha256/<hex>        manifests, configs and layer blobs exactly as distributed;
                              the file name is the digest of the content (verified on write
                              and again whenever a layer is unpacked from it)
    layers/<diff_id hex>/     one unpacked layer; renamed into place only when complete:
        diff/                 the overlayfs lower dir (whiteouts as 0/0 char devices)
        layer.json            {diff_id, blob_digest, size, files, created}
    images/<id hex>.json      one image record: {id, manifest_digest, manifest_media_type,
                              config_digest, layers [{digest, diff_id, media_type, size}],
                              repo_digests, created}; the id is the config digest, as in
                              Docker, and the config itself is the blob of that digest
    tags.json                 {"docker.io/library/busybox:latest": "sha256:<id>", ...}:
                              the one source of truth for tags, so retagging rewrites one
                              file and a crash cannot leave two images claiming one tag
    locks/                    flock files: store.lock (tags and records), gc.lock (shared
                              by every writer, exclusive for gc), layer-<hex>.lock
    tmp/                      temporary files, on the same filesystem as their targets

Concurrency: metadata writes hold ``locks/store.lock`` exclusively; a layer is unpacked
under its own lock so concurrent callers (threads or processes) unpack it once and the
others wait and reuse it. Anything that writes into ``tmp/`` or links blobs into images
holds ``gc.lock`` shared (see :meth:`Store.ingest`), which lets :meth:`Store.gc` take it
exclusively and then know that every unreferenced blob, layer and temp file is garbage.
Unpacked layers are not fsynced (as in Docker): after a power loss a layer may have to be
removed and unpacked again.

Owners: for root the files of a layer carry the image's ids. For an ordinary user they
carry the host ids the user's containers map them to (container uid 0 is the user, the
others come from /etc/subuid; see :attr:`Store.id_maps`), so a layer is unpacked, packed and
deleted as root of a user namespace with that mapping (storage/userns.py).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Callable,
    Collection,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import attrs

from ..errors import (
    Conflict,
    ContainError,
    DigestMismatch,
    ImageNotFound,
    InvalidArgument,
    InvalidReference,
    NotFound,
)
from ..oci import mediatypes as mt
from ..oci.imageconfig import ImageConfig, Manifest
from ..oci.reference import Reference
from .locks import FileLock

if TYPE_CHECKING:
    from ..linux.rootless import IdMaps
    from .unpack import UnpackStats

__all__ = [
    "Store",
    "ImageRecord",
    "LayerRecord",
    "PackedLayer",
    "BlobWriter",
    "default_root",
    "parse_digest",
    "sha256_digest",
]

_CHUNK = 1 << 20
_OVERFLOW_ID = 65534
_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_RE = re.compile(r"([a-z0-9]+):([a-f0-9]+)\Z")
_HEX_RE = re.compile(r"[a-f0-9]+\Z")


def default_root() -> str:
    """$CONTAIN_ROOT, else /var/lib/contain for root, else $XDG_DATA_HOME/contain."""
    env = os.environ.get("CONTAIN_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/contain"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "contain")


def parse_digest(digest: str) -> Tuple[str, str]:
    """("sha256", hex) for a well-formed digest; InvalidArgument otherwise.

    Digests become file names, so this check is also what keeps "../" out of paths.
    """
    match = _DIGEST_RE.match(digest) if isinstance(digest, str) else None
    if not match or _ALGORITHMS.get(match.group(1)) != len(match.group(2)):
        raise InvalidArgument(f"invalid digest {digest!r}")
    return match.group(1), match.group(2)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tree_size(path: str) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


@attrs.frozen
class LayerRecord:
    """One layer of an image: its blob (as distributed) and its uncompressed diff id."""

    digest: str
    diff_id: str
    media_type: str
    size: int

    def to_dict(self) -> Dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class ImageRecord:
    """An image in the store. ``id`` is the config digest (Docker's image id).

    ``repo_tags`` and ``repo_digests`` are in Docker's familiar spelling
    ("busybox:latest", "busybox@sha256:..."), as ``docker inspect`` shows them.
    ``created`` is when the image entered this store; ``config.created`` is when it
    was built.
    """

    id: str
    manifest_digest: str
    manifest_media_type: str
    config_digest: str
    layers: List[LayerRecord]
    config: ImageConfig
    repo_tags: List[str] = attrs.field(factory=list)
    repo_digests: List[str] = attrs.field(factory=list)
    created: str = ""

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    @property
    def diff_ids(self) -> List[str]:
        return [layer.diff_id for layer in self.layers]

    @property
    def size(self) -> int:
        """Sum of the layer blob sizes (as distributed, usually compressed)."""
        return sum(layer.size for layer in self.layers)


class _HashingReader(io.RawIOBase):
    """Reads through to ``raw`` while hashing, so a blob is verified as it is consumed."""

    def __init__(self, raw: IO[bytes], algorithm: str) -> None:
        super().__init__()
        self._raw = raw
        self.hasher = hashlib.new(algorithm)
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.hasher.update(data)
        self.size += n
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size) if size is not None and size >= 0 else self._raw.read()
        self.hasher.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


class BlobWriter:
    """A blob being written: ``write()`` chunks, then ``commit()`` (verify + rename).

    Used as a context manager it discards the temp file unless committed. While open it
    holds the store's gc lock shared, so a concurrent gc never deletes the temp file.
    """

    def __init__(self, store: "Store", expected_digest: Optional[str] = None,
                 expected_size: Optional[int] = None) -> None:
        algorithm = parse_digest(expected_digest)[0] if expected_digest else "sha256"
        self._store = store
        self._expected = expected_digest
        self._expected_size = expected_size
        self._hasher = hashlib.new(algorithm)
        self._algorithm = algorithm
        self.size = 0
        self._gc_hold = contextlib.ExitStack()
        self._gc_hold.enter_context(store.ingest())
        try:
            fd, self._tmp = tempfile.mkstemp(dir=store._tmp_dir, prefix="blob-")
            self._file: Optional[BinaryIO] = os.fdopen(fd, "wb")
        except BaseException:
            self._gc_hold.close()
            raise

    def write(self, data: bytes) -> int:
        if self._file is None:
            raise ValueError("blob writer is closed")
        self._file.write(data)
        self._hasher.update(data)
        self.size += len(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    @property
    def digest(self) -> str:
        return f"{self._algorithm}:{self._hasher.hexdigest()}"

    def commit(self) -> Tuple[str, int]:
        """Verify against the expected digest/size and move into blobs/; (digest, size)."""
        if self._file is None:
            raise ValueError("blob writer is closed")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            digest = self.digest
            if self._expected is not None and digest != self._expected:
                raise DigestMismatch(f"content is {digest}, expected {self._expected}")
            if self._expected_size is not None and self.size != self._expected_size:
                raise DigestMismatch(
                    f"{digest}: content has {self.size} bytes, expected {self._expected_size}")
            target = self._store.blob_path(digest)
            os.chmod(self._tmp, 0o444)  # blobs are immutable; a stray writer gets EACCES
            # Content addressing makes a concurrent writer of the same blob harmless: both
            # renames put identical bytes under the same name.
            os.rename(self._tmp, target)
            _fsync_dir(os.path.dirname(target))
            self._tmp = ""
            return digest, self.size
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the temp file (no-op after commit)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = ""
        self._gc_hold.close()

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.abort()


_DETECT: Any = object()


@attrs.frozen
class PackedLayer:
    """A directory packed into a stored layer blob."""

    digest: str
    size: int
    diff_id: str
    media_type: str


class Store:
    """One store root; cheap to construct, safe to share between threads and processes.

    ``id_maps``: the user namespace mapping whose root owns the layers (a
    linux.rootless.IdMaps), None for the host's own ids; by default None for root and
    the caller's containers' mapping for an ordinary user.
    """

    def __init__(self, root: Union[str, os.PathLike[str]], *, id_maps: Any = _DETECT) -> None:
        self._id_maps = id_maps
        self.root = os.path.abspath(os.fspath(root))
        self._tmp_dir = os.path.join(self.root, "tmp")
        self._images_dir = os.path.join(self.root, "images")
        self._layers_dir = os.path.join(self.root, "layers")
        self._locks_dir = os.path.join(self.root, "locks")
        self._tags_path = os.path.join(self.root, "tags.json")
        for sub in ("blobs/sha256", "layers", "images", "locks", "tmp"):
            os.makedirs(os.path.join(self.root, sub), mode=0o711, exist_ok=True)
        self._meta_lock = FileLock(os.path.join(self._locks_dir, "store.lock"))
        self._gc_lock = FileLock(os.path.join(self._locks_dir, "gc.lock"))
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    @property
    def id_maps(self) -> Optional["IdMaps"]:
        """The mapping of the user namespace in which layer files are owned as the image
        says (a linux.rootless.IdMaps), or None when they are owned so on the host."""
        if self._id_maps is _DETECT:
            from ..linux import rootless

            self._id_maps = rootless.id_maps() if rootless.is_rootless() else None
        return self._id_maps

    def image_owner(self, st: os.stat_result) -> Tuple[int, int]:
        """The (uid, gid) an image gives a file of an unpacked layer (or of a build's
        staging tree): the host's ids, seen through :attr:`id_maps` (65534, the kernel's
        overflow id, for an id it does not map)."""
        maps = self.id_maps
        if maps is None:
            return st.st_uid, st.st_gid
        uid, gid = maps.container_uid(st.st_uid), maps.container_gid(st.st_gid)
        return (_OVERFLOW_ID if uid is None else uid), (_OVERFLOW_ID if gid is None else gid)

    def _remove_trees(self, paths: Sequence[str]) -> None:
        """Delete trees (best effort): through the user namespace when subordinate ids
        may own their files."""
        maps = self.id_maps
        if maps is not None:
            from . import userns

            with contextlib.suppress(OSError, ContainError):
                userns.remove(maps, paths)
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)

    # ----------------------------------------------------------------- locking

    @contextlib.contextmanager
    def ingest(self) -> Iterator[None]:
        """Hold off gc while blobs are written and linked into an image.

        Wrap a whole pull or load in it: blobs written before ``add_image`` are not yet
        referenced by any record and would otherwise look like garbage.
        """
        depth = getattr(self._local, "ingest_depth", 0)
        self._local.ingest_depth = depth + 1
        try:
            with self._gc_lock.shared():
                yield
        finally:
            self._local.ingest_depth = depth

    def _layer_lock(self, hex_id: str) -> FileLock:
        return FileLock(os.path.join(self._locks_dir, f"layer-{hex_id}.lock"))

    def _write_atomic(self, path: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._tmp_dir, prefix="meta-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(os.path.dirname(path))

    # ------------------------------------------------------------------- blobs

    def blob_path(self, digest: str) -> str:
        """Where the blob of ``digest`` lives (whether or not it is present)."""
        algorithm, hex_digest = parse_digest(digest)
        directory = os.path.join(self.root, "blobs", algorithm)
        if algorithm != "sha256":
            os.makedirs(directory, mode=0o711, exist_ok=True)
        return os.path.join(directory, hex_digest)

    def has_blob(self, digest: str) -> bool:
        return os.path.isfile(self.blob_path(digest))

    def blob_size(self, digest: str) -> int:
        try:
            return os.stat(self.blob_path(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def open_blob(self, digest: str) -> BinaryIO:
        """Open a blob for reading; NotFound when absent."""
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def read_blob(self, digest: str) -> bytes:
        """A small blob's bytes (manifest, config), verified against its digest."""
        with self.open_blob(digest) as f:
            data = f.read()
        algorithm, hex_digest = parse_digest(digest)
        if hashlib.new(algorithm, data).hexdigest() != hex_digest:
            raise DigestMismatch(f"blob {digest} is corrupt in the store")
        return data

    def new_blob(self, expected_digest: Optional[str] = None,
                 expected_size: Optional[int] = None) -> BlobWriter:
        """A :class:`BlobWriter` to stream content into; commit() stores it."""
        return BlobWriter(self, expected_digest, expected_size)

    def put_blob(
        self,
        data: Union[bytes, bytearray, memoryview, IO[bytes]],
        expected_digest: Optional[str] = None,
        expected_size: Optional[int] = None,
    ) -> Tuple[str, int]:
        """Store bytes or a readable stream; (digest, size).

        Written to a temp file, fsynced, verified, renamed: on DigestMismatch nothing is
        kept. A blob already present is not rewritten.
        """
        if expected_digest is not None and self.has_blob(expected_digest) and \
                isinstance(data, (bytes, bytearray, memoryview)):
            algorithm, hex_digest = parse_digest(expected_digest)
            if hashlib.new(algorithm, data).hexdigest() != hex_digest:
                raise DigestMismatch(f"content does not match {expected_digest}")
            return expected_digest, len(data)
        with self.new_blob(expected_digest, expected_size) as writer:
            if isinstance(data, (bytes, bytearray, memoryview)):
                writer.write(bytes(data))
            else:
                while True:
                    chunk = data.read(_CHUNK)
                    if not chunk:
                        break
                    writer.write(chunk)
            return writer.commit()

    def verify_blob(self, digest: str) -> int:
        """Re-hash a stored blob; its size, or DigestMismatch if it is corrupt."""
        algorithm, hex_digest = parse_digest(digest)
        hasher = hashlib.new(algorithm)
        size = 0
        with self.open_blob(digest) as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                hasher.update(chunk)
                size += len(chunk)
        if hasher.hexdigest() != hex_digest:
            raise DigestMismatch(f"blob {digest} is corrupt in the store")
        return size

    # ------------------------------------------------------------------ layers

    def layer_path(self, diff_id: str) -> str:
        """The lower dir of an unpacked layer (NotFound if it is not unpacked)."""
        path = os.path.join(self._layers_dir, parse_digest(diff_id)[1])
        if not os.path.isfile(os.path.join(path, "layer.json")):
            raise NotFound(f"layer {diff_id} is not unpacked")
        return os.path.join(path, "diff")

    def has_layer(self, diff_id: str) -> bool:
        hex_id = parse_digest(diff_id)[1]
        return os.path.isfile(os.path.join(self._layers_dir, hex_id, "layer.json"))

    def ensure_layer(self, diff_id: str, blob_digest: str, media_type: Optional[str] = None,
                     *, blob_verified: bool = False) -> str:
        """Unpack the layer once (verifying blob digest and diff id); its lower dir.

        Concurrent callers for the same layer, in this or other processes, wait on the
        layer's lock and then reuse the first caller's result.  ``blob_verified``: the
        caller has just written the blob through a verifying writer (a pull), so it is
        not hashed a second time; the diff id is checked all the same.
        """
        hex_id = parse_digest(diff_id)[1]
        final = os.path.join(self._layers_dir, hex_id)
        if os.path.isfile(os.path.join(final, "layer.json")):
            return os.path.join(final, "diff")
        algorithm, blob_hex = parse_digest(blob_digest)
        compression = mt.layer_compression(media_type) if media_type else "auto"
        with self.ingest(), self._layer_lock(hex_id).exclusive():
            if os.path.isfile(os.path.join(final, "layer.json")):
                return os.path.join(final, "diff")
            if os.path.lexists(final):  # incomplete leftover of a crash: set aside
                self._discard_trees([final])
            work = tempfile.mkdtemp(dir=self._tmp_dir, prefix="layer-")
            try:
                with self.open_blob(blob_digest) as raw:
                    diff = os.path.join(work, "diff")
                    what = f"layer {blob_digest}"
                    if blob_verified:
                        stats = self._unpack(raw, diff, compression, what)
                    else:
                        reader = _HashingReader(raw, algorithm)
                        stats = self._unpack(io.BufferedReader(reader, _CHUNK), diff, compression, what)
                        reader.drain()  # decompressors may stop before trailing bytes
                        if reader.hasher.hexdigest() != blob_hex:
                            raise DigestMismatch(f"layer blob {blob_digest} is corrupt in the store")
                if stats.diff_id != diff_id:
                    raise DigestMismatch(
                        f"layer {blob_digest} unpacks to {stats.diff_id}, expected {diff_id}")
                meta = {"diff_id": diff_id, "blob_digest": blob_digest,
                        "size": stats.uncompressed_size, "files": stats.files,
                        "created": _now()}
                with open(os.path.join(work, "layer.json"), "w") as f:
                    json.dump(meta, f, sort_keys=True)
                os.chmod(work, 0o711)  # mkdtemp made it 0700; overlay users need to traverse
                os.rename(work, final)
            except BaseException:
                self._remove_trees([work])
                raise
        return os.path.join(final, "diff")

    def _unpack(self, stream: IO[bytes], dest: str, compression: str, what: str) -> "UnpackStats":
        maps = self.id_maps
        if maps is None:
            from .unpack import unpack_layer  # imported late: the store works without it

            return unpack_layer(stream, dest, compression=compression)
        from . import userns

        return userns.unpack(maps, stream, dest, compression=compression, what=what)

    def pack_layer(self, directory: str, *, compression: str = "gzip",
                   owners: Optional[Mapping[str, Tuple[int, int]]] = None) -> PackedLayer:
        """Store ``directory`` (an overlay upper dir, or any tree) packed as a layer blob.

        Owners are the image's: as the host has them for root, as the containers' user
        namespace sees them for an ordinary user (the user is uid 0). ``owners`` overrides
        them by relative path (see unpack.pack_directory). The blob is not unpacked.
        """
        media_type = {"gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD,
                      "none": mt.OCI_LAYER}.get(compression)
        if media_type is None:
            raise InvalidArgument(f"unknown layer compression {compression!r}")
        maps = self.id_maps
        with self.ingest(), self.new_blob() as writer:
            if maps is None:
                from .unpack import pack_directory

                stats = pack_directory(directory, writer, compression=compression, owners=owners)
            else:
                from . import userns

                stats = userns.pack(maps, directory, writer, compression=compression, owners=owners)
            digest, size = writer.commit()
        if stats.digest != digest:
            raise DigestMismatch(f"packed layer is {digest}, packer reported {stats.digest}")
        return PackedLayer(digest, size, stats.diff_id, media_type)

    def _discard_trees(self, paths: Sequence[str]) -> None:
        """Rename each of ``paths`` away atomically, then delete them (in one go)."""
        trash = []
        for path in paths:
            trash.append(tempfile.mkdtemp(dir=self._tmp_dir, prefix="trash-"))
            os.rename(path, os.path.join(trash[-1], "x"))
        self._remove_trees(trash)

    def lowerdirs(self, image: str) -> List[str]:
        """The image's layer dirs, top-most first (overlay's lowerdir order), unpacked."""
        record = self.resolve(image)
        paths = [self.ensure_layer(layer.diff_id, layer.digest, layer.media_type)
                 for layer in record.layers]
        return paths[::-1]

    # ------------------------------------------------------------ tags/records

    def _read_tags(self) -> Dict[str, str]:
        try:
            with open(self._tags_path, "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict):
            raise InvalidArgument(f"{self._tags_path} is corrupt")
        return data

    def _write_tags(self, tags: Dict[str, str]) -> None:
        self._write_atomic(self._tags_path, json.dumps(tags, sort_keys=True, indent=1).encode())

    def _record_path(self, image_id: str) -> str:
        return os.path.join(self._images_dir, parse_digest(image_id)[1] + ".json")

    def _load_record(self, image_id: str, tags: Optional[Dict[str, str]] = None) -> ImageRecord:
        try:
            with open(self._record_path(image_id), "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ImageNotFound(f"image {image_id} not found") from None
        if tags is None:
            tags = self._read_tags()
        repo_tags = sorted(_familiar(name) for name, target in tags.items() if target == image_id)
        return ImageRecord(
            id=data["id"],
            manifest_digest=data["manifest_digest"],
            manifest_media_type=data.get("manifest_media_type", ""),
            config_digest=data["config_digest"],
            layers=[LayerRecord(**layer) for layer in data["layers"]],
            config=ImageConfig.from_json(self.read_blob(data["config_digest"])),
            repo_tags=repo_tags,
            repo_digests=list(data.get("repo_digests", [])),
            created=data.get("created", ""),
        )

    def _image_ids(self) -> List[str]:
        ids = []
        for name in os.listdir(self._images_dir):
            if name.endswith(".json") and _HEX_RE.match(name[:-5]) and len(name) == 69:
                ids.append("sha256:" + name[:-5])
        return ids

    def add_image(
        self,
        manifest_bytes: bytes,
        config_bytes: bytes,
        *,
        tags: Sequence[str] = (),
        repo_digest: Optional[str] = None,
    ) -> ImageRecord:
        """Record an image whose layer blobs are already stored; tags move to it.

        Stores the manifest and config blobs, checks that the manifest names this config
        and that every layer blob is present and matches the config's diff id count.
        ``repo_digest`` is "name@digest" (the digest defaults to the manifest's).
        """
        manifest = Manifest.from_json(manifest_bytes)
        config = ImageConfig.from_json(config_bytes)
        algorithm, _ = parse_digest(manifest.config.digest)
        config_digest = f"{algorithm}:{hashlib.new(algorithm, config_bytes).hexdigest()}"
        if config_digest != manifest.config.digest:
            raise DigestMismatch(
                f"config is {config_digest}, manifest names {manifest.config.digest}")
        if len(manifest.layers) != len(config.rootfs.diff_ids):
            raise InvalidArgument(
                f"manifest has {len(manifest.layers)} layers, config lists "
                f"{len(config.rootfs.diff_ids)} diff ids")
        layers = []
        for desc, diff_id in zip(manifest.layers, config.rootfs.diff_ids):
            parse_digest(diff_id)
            if not self.has_blob(desc.digest):
                raise NotFound(f"layer blob {desc.digest} is not in the store")
            layers.append(LayerRecord(digest=desc.digest, diff_id=diff_id,
                                      media_type=desc.media_type, size=desc.size))
        full_tags = [_full_tag(t) for t in tags]
        digest_ref = _repo_digest(repo_digest, manifest_bytes) if repo_digest else None

        with self.ingest():
            manifest_digest, _ = self.put_blob(manifest_bytes)
            self.put_blob(config_bytes, config_digest)
            image_id = config_digest
            with self._meta_lock.exclusive():
                try:
                    previous = self._load_record(image_id)
                    repo_digests = list(previous.repo_digests)
                    created = previous.created
                except ImageNotFound:
                    repo_digests, created = [], _now()
                if digest_ref and digest_ref not in repo_digests:
                    repo_digests.append(digest_ref)
                record = {
                    "id": image_id,
                    "manifest_digest": manifest_digest,
                    "manifest_media_type": manifest.media_type,
                    "config_digest": config_digest,
                    "layers": [layer.to_dict() for layer in layers],
                    "repo_digests": repo_digests,
                    "created": created,
                }
                self._write_atomic(self._record_path(image_id),
                                   json.dumps(record, sort_keys=True, indent=1).encode())
                if full_tags:
                    current = self._read_tags()
                    for name in full_tags:
                        current[name] = image_id
                    self._write_tags(current)
                return self._load_record(image_id)

    def tag(self, image: str, ref: str) -> ImageRecord:
        """Point ``ref`` ("name[:tag]") at the image ``image`` (any form resolve takes)."""
        name = _full_tag(ref)
        with self._meta_lock.exclusive():
            record = self.resolve(image)
            tags = self._read_tags()
            tags[name] = record.id
            self._write_tags(tags)
            return self._load_record(record.id)

    def untag(self, ref: str) -> str:
        """Remove a tag (the image record stays); the id it pointed at."""
        name = _full_tag(ref)
        with self._meta_lock.exclusive():
            tags = self._read_tags()
            if name not in tags:
                raise ImageNotFound(f"no such image tag: {ref}")
            image_id = tags.pop(name)
            self._write_tags(tags)
            return image_id

    def resolve(self, text: str) -> ImageRecord:
        """Find an image by "name[:tag]", "name@digest", full id, hex id or id prefix (≥4)."""
        return self.lookup(text)[0]

    def lookup(self, text: str) -> Tuple[ImageRecord, Optional[str]]:
        """Like :meth:`resolve`; also the full tag it matched (None for id/digest matches)."""
        if not isinstance(text, str) or not text:
            raise InvalidArgument(f"invalid image reference {text!r}")
        tags = self._read_tags()
        hex_part: Optional[str] = None
        if text.startswith("sha256:"):
            hex_part = text[len("sha256:"):]
            if not _HEX_RE.match(hex_part):
                raise ImageNotFound(f"no such image: {text}")
        else:
            try:
                ref: Optional[Reference] = Reference.parse(text)
            except InvalidReference:
                ref = None
            if ref is not None and ref.digest is None:
                name = f"{ref.repository}:{ref.tag}"
                if name in tags:
                    return self._load_record(tags[name], tags), name
            elif ref is not None:
                wanted = f"{ref.name}@{ref.digest}"
                for image_id in self._image_ids():
                    record = self._load_record(image_id, tags)
                    if wanted in record.repo_digests or (
                            record.manifest_digest == ref.digest and any(
                                t.rsplit(":", 1)[0] == ref.name for t in record.repo_tags)):
                        return record, None
            if _HEX_RE.match(text):
                hex_part = text
        if hex_part is None or len(hex_part) < 4 or len(hex_part) > 64:
            raise ImageNotFound(f"no such image: {text}")
        matches = [i for i in self._image_ids() if i[len("sha256:"):].startswith(hex_part)]
        if not matches:
            raise ImageNotFound(f"no such image: {text}")
        if len(matches) > 1:
            raise InvalidArgument(f"image id prefix {text!r} is ambiguous")
        return self._load_record(matches[0], tags), None

    def images(self) -> List[ImageRecord]:
        """Every image, newest first."""
        tags = self._read_tags()
        records = []
        for image_id in self._image_ids():
            with contextlib.suppress(ImageNotFound):  # removed while we listed
                records.append(self._load_record(image_id, tags))
        records.sort(key=lambda r: r.created, reverse=True)
        return records

    def remove_image(
        self,
        image: str,
        force: bool = False,
        in_use: Union[Callable[[str], bool], Collection[str], None] = None,
    ) -> List[Dict[str, str]]:
        """Docker's ``rmi``: untag, and delete the record once no tag is left.

        Removing by one of several tags only untags. Removing by id an image with several
        tags, or an image ``in_use`` says a container uses, needs ``force``. Blobs and
        layers are freed later by :meth:`gc`. Returns [{"Untagged": ..}, {"Deleted": ..}].
        """
        if in_use is None:
            used: Callable[[str], bool] = lambda _id: False
        elif callable(in_use):
            used = in_use
        else:
            ids = set(in_use)
            used = ids.__contains__
        with self._meta_lock.exclusive():
            record, by_tag = self.lookup(image)
            tags = self._read_tags()
            mine = sorted(name for name, target in tags.items() if target == record.id)
            if by_tag is not None and len(mine) > 1:
                del tags[by_tag]
                self._write_tags(tags)
                return [{"Untagged": _familiar(by_tag)}]
            if by_tag is None and len(mine) > 1 and not force:
                raise Conflict(
                    f"unable to delete {record.short_id} (must be forced): image is "
                    f"referenced in multiple repositories")
            if not force and used(record.id):
                raise Conflict(
                    f"unable to remove image {image}: image {record.short_id} is used by a "
                    f"container")
            result = [{"Untagged": _familiar(name)} for name in mine]
            result += [{"Untagged": d} for d in record.repo_digests]
            if mine:
                for name in mine:
                    del tags[name]
                self._write_tags(tags)
            os.unlink(self._record_path(record.id))
            _fsync_dir(self._images_dir)
            result.append({"Deleted": record.id})
            return result

    # ---------------------------------------------------------------------- gc

    def gc(self, keep_layers: Collection[str] = (), keep_blobs: Collection[str] = ()) -> int:
        """Delete blobs, layers and temp files no image references; bytes freed.

        ``keep_layers`` (diff ids) pins layers that running containers still mount even
        if their image was removed; ``keep_blobs`` pins blobs likewise.
        """
        if getattr(self._local, "ingest_depth", 0):
            raise Conflict("gc cannot run inside Store.ingest() of the same thread")
        freed = 0
        with self._gc_lock.exclusive(), self._meta_lock.exclusive():
            blobs = set(keep_blobs)
            layers = {parse_digest(d)[1] for d in keep_layers}
            for image_id in self._image_ids():
                try:
                    with open(self._record_path(image_id), "rb") as f:
                        data = json.load(f)
                except FileNotFoundError:
                    continue
                blobs.update((data["manifest_digest"], data["config_digest"]))
                for layer in data["layers"]:
                    blobs.add(layer["digest"])
                    layers.add(parse_digest(layer["diff_id"])[1])
            blobs_root = os.path.join(self.root, "blobs")
            for algorithm in os.listdir(blobs_root):
                directory = os.path.join(blobs_root, algorithm)
                if algorithm not in _ALGORITHMS or not os.path.isdir(directory):
                    continue
                for hex_digest in os.listdir(directory):
                    if f"{algorithm}:{hex_digest}" in blobs:
                        continue
                    path = os.path.join(directory, hex_digest)
                    with contextlib.suppress(FileNotFoundError):
                        freed += os.lstat(path).st_size
                        os.unlink(path)
            unused = []
            for hex_id in os.listdir(self._layers_dir):
                if hex_id in layers:
                    continue
                path = os.path.join(self._layers_dir, hex_id)
                try:
                    with open(os.path.join(path, "layer.json")) as f:
                        freed += int(json.load(f).get("size", 0))
                except (OSError, ValueError):
                    freed += _tree_size(path)
                unused.append(path)
            self._discard_trees(unused)
            # Every writer of tmp/ holds the gc lock shared, so what is left there now is
            # debris of crashed processes.
            debris = []
            for name in os.listdir(self._tmp_dir):
                path = os.path.join(self._tmp_dir, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    freed += _tree_size(path)
                    debris.append(path)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        freed += os.lstat(path).st_size
                        os.unlink(path)
            self._remove_trees(debris)
            # Layer lock files can go too: anyone waiting on one holds the gc lock shared.
            for name in os.listdir(self._locks_dir):
                if name.startswith("layer-") and name[6:-5] not in layers:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self._locks_dir, name))
        return freed


def _full_tag(ref: str) -> str:
    """"busybox" -> "docker.io/library/busybox:latest"; digests are not tags."""
    parsed = Reference.parse(ref)
    if parsed.digest is not None:
        raise InvalidArgument(f"{ref!r} is a digest reference, not a tag")
    return f"{parsed.repository}:{parsed.tag}"


def _familiar(full_tag: str) -> str:
    return str(Reference.parse(full_tag))


def _repo_digest(ref: str, manifest_bytes: bytes) -> str:
    parsed = Reference.parse(ref)
    digest = parsed.digest or sha256_digest(manifest_bytes)
    return f"{parsed.name}@{digest}"
