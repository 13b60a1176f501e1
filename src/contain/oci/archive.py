"""Image archives: docker-archive and OCI layout (tar or directory), rootfs import/export.

``save`` writes what ``docker save``/``podman save``/``skopeo copy`` write and read:

* docker-archive: ``manifest.json`` ([{Config, RepoTags, Layers}]), ``repositories``,
  ``<config hex>.json``, ``<diff_id hex>.tar`` (uncompressed, so each file hashes to its
  diff id) and the legacy ``<v1 id>/{VERSION,json,layer.tar}`` entries, laid out as
  skopeo lays them out;
* oci-archive / oci-dir: ``oci-layout``, ``index.json`` and ``blobs/<alg>/<hex>`` holding the
  stored manifest, config and layer blobs byte for byte (so digests are preserved).

``load`` reads any of these (and Docker 25's combined layout), from a path or a stream,
gzip/zstd-compressed or not. Every blob is verified against its digest (docker-archive
layers against the config's diff ids), member paths that leave the archive are refused,
and image records and tags are written only once every image of the archive verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from typing import (
    IO,
    Any,
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
import zstandard

from ..errors import DigestMismatch, InvalidArgument, InvalidReference, LayerError, NotFound
from ..storage.store import ImageRecord, Store, parse_digest
from . import mediatypes as mt
from .imageconfig import (
    ContainerConfig,
    Descriptor,
    HistoryEntry,
    ImageConfig,
    Manifest,
    RootFS,
    build_manifest,
    canonical_json,
    host_platform,
)
from .reference import Reference

__all__ = ["save", "load", "import_rootfs", "export_directory", "FORMATS"]

FORMATS = ("docker-archive", "oci-archive", "oci-dir")
PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]

_CHUNK = 1 << 20
_SMALL_LIMIT = 32 << 20  # manifests, configs, indexes: refuse larger ones (memory bombs)
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_REF_NAME = "org.opencontainers.image.ref.name"
_CONTAINERD_NAME = "io.containerd.image.name"


# --------------------------------------------------------------------- helpers


def _compression_of(head: bytes) -> str:
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return "none"


class _Decompressor:
    """Incremental gzip (multi-member) or zstd (multi-frame) decompression."""

    def __init__(self, compression: str) -> None:
        self.compression = compression
        self._new()

    def _new(self) -> None:
        if self.compression == "gzip":
            self._obj: Any = zlib.decompressobj(wbits=31)
        elif self.compression == "zstd":
            self._obj = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
        else:
            self._obj = None

    def feed(self, data: bytes) -> bytes:
        if self._obj is None:
            return data
        try:
            out = self._obj.decompress(data)
            if self.compression == "gzip":
                parts = [out]
                while self._obj.eof and self._obj.unused_data:
                    rest = self._obj.unused_data
                    self._new()
                    parts.append(self._obj.decompress(rest))
                out = b"".join(parts)
            return out
        except (zlib.error, zstandard.ZstdError) as exc:
            raise LayerError(f"corrupt {self.compression} stream: {exc}") from None

    def finish(self) -> None:
        if self.compression == "gzip" and not self._obj.eof:
            raise LayerError("truncated gzip stream")


def decompressed(src: IO[bytes], compression: str, diff_id: str, what: str) -> Iterator[bytes]:
    """The uncompressed bytes of a layer blob, chunk by chunk; DigestMismatch at
    the end unless they hash to `diff_id` (so a consumer must read to the end)."""
    decompressor = _Decompressor(compression)
    hasher = hashlib.sha256()
    while True:
        chunk = src.read(_CHUNK)
        if not chunk:
            break
        plain = decompressor.feed(chunk)
        hasher.update(plain)
        yield plain
    decompressor.finish()
    if "sha256:" + hasher.hexdigest() != diff_id:
        raise DigestMismatch(f"layer {what} does not decompress to {diff_id}")


class _LayerIngest:
    """Copies a layer stream into a blob writer, hashing both it and its uncompressed form."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self._head = b""
        self._decompressor: Optional[_Decompressor] = None
        self._diff = hashlib.sha256()
        self.uncompressed_size = 0

    @property
    def compression(self) -> str:
        return self._decompressor.compression if self._decompressor else _compression_of(self._head)

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        if self._decompressor is None:
            self._head += data
            if len(self._head) < len(_ZSTD_MAGIC):
                return len(data)
            data, self._head = self._head, b""
            self._decompressor = _Decompressor(_compression_of(data))
        plain = self._decompressor.feed(data)
        self._diff.update(plain)
        self.uncompressed_size += len(plain)
        return len(data)

    def finish(self) -> str:
        """The diff id (sha256 of the uncompressed stream)."""
        if self._decompressor is None:  # fewer than 4 bytes in all: not compressed
            self._decompressor = _Decompressor("none")
            self._diff.update(self._head)
            self.uncompressed_size += len(self._head)
        self._decompressor.finish()
        return "sha256:" + self._diff.hexdigest()


def _read_head(f: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes; raw streams and pipes may return fewer per read."""
    head = b""
    while len(head) < n:
        chunk = f.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


def _copy(src: IO[bytes], dst: Any) -> None:
    while True:
        chunk = src.read(_CHUNK)
        if not chunk:
            return
        dst.write(chunk)


def _layer_media_type(compression: str, family: str) -> str:
    if compression == "zstd":
        return mt.OCI_LAYER_ZSTD
    if family == "docker":
        return mt.DOCKER_LAYER_GZIP if compression == "gzip" else mt.DOCKER_LAYER
    return mt.OCI_LAYER_GZIP if compression == "gzip" else mt.OCI_LAYER


def _clean_name(name: str, what: str = "archive member") -> str:
    """Normalise a path inside an archive; refuse absolute paths and '..' escapes."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise InvalidArgument(f"invalid {what} path {name!r}")
    if name.startswith("/"):
        raise InvalidArgument(f"refusing absolute {what} path {name!r}")
    if ".." in name.split("/"):
        raise InvalidArgument(f"refusing {what} path {name!r}: it leaves the archive")
    cleaned = posixpath.normpath(name)
    return "" if cleaned == "." else cleaned


# ------------------------------------------------------------------ sources


class _Source:
    """Named files of an archive, whether a tar or a directory."""

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> Tuple[IO[bytes], int]:
        raise NotImplementedError

    def read_small(self, name: str, what: str) -> bytes:
        f, size = self.open(name)
        with f:
            if size > _SMALL_LIMIT:
                raise InvalidArgument(f"{what} {name!r} is implausibly large ({size} bytes)")
            return f.read()

    def close(self) -> None:
        pass


class _TarSource(_Source):
    def __init__(self, fileobj: IO[bytes]) -> None:
        try:
            self._tar = tarfile.open(fileobj=fileobj, mode="r:")
            members = self._tar.getmembers()
        except tarfile.TarError as exc:
            raise InvalidArgument(f"not a valid tar archive: {exc}") from None
        self._members: Dict[str, tarfile.TarInfo] = {}
        for member in members:
            # Refuse the whole archive rather than skip: such a member only exists to attack
            # an extractor, so nothing else in this archive deserves trust either.
            name = _clean_name(member.name)
            if name:
                self._members[name] = member

    def _find(self, name: str) -> tarfile.TarInfo:
        name = _clean_name(name)
        for _ in range(16):  # bounded: symlink loops end here
            member = self._members.get(name)
            if member is None:
                raise NotFound(f"archive has no member {name!r}")
            if member.issym():
                if member.linkname.startswith("/"):
                    raise InvalidArgument(f"refusing absolute symlink {name!r}")
                target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
                name = _clean_name(target)
            elif member.islnk():
                name = _clean_name(member.linkname)
            elif member.isreg():
                return member
            else:
                raise InvalidArgument(f"archive member {name!r} is not a regular file")
        raise InvalidArgument(f"too many levels of links at {name!r}")

    def exists(self, name: str) -> bool:
        try:
            self._find(name)
            return True
        except NotFound:
            return False

    def open(self, name: str) -> Tuple[IO[bytes], int]:
        member = self._find(name)
        f = self._tar.extractfile(member)
        assert f is not None
        return f, member.size

    def close(self) -> None:
        self._tar.close()


class _DirSource(_Source):
    def __init__(self, root: str) -> None:
        self._root = os.path.realpath(root)

    def _path(self, name: str) -> str:
        path = os.path.realpath(os.path.join(self._root, _clean_name(name)))
        if path != self._root and not path.startswith(self._root + os.sep):
            raise InvalidArgument(f"refusing path {name!r}: it leaves the directory")
        return path

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def open(self, name: str) -> Tuple[IO[bytes], int]:
        path = self._path(name)
        try:
            f = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"archive has no file {name!r}") from None
        return f, os.fstat(f.fileno()).st_size


@contextlib.contextmanager
def _open_source(store: Store, src: PathOrFile) -> Iterator[_Source]:
    """A _Source over a directory, a tar file or a stream (compressed or not)."""
    if isinstance(src, (str, os.PathLike)) and os.path.isdir(src):
        yield _DirSource(os.fspath(src))
        return
    with contextlib.ExitStack() as stack:
        if isinstance(src, (str, os.PathLike)):
            f: IO[bytes] = stack.enter_context(open(src, "rb"))
        else:
            f = src
        seekable = False
        with contextlib.suppress(AttributeError, OSError, io.UnsupportedOperation):
            seekable = f.seekable()
        head = b""
        if seekable:
            start = f.tell()
            head = _read_head(f, 4)
            f.seek(start)
        compression = _compression_of(head) if seekable else None
        if not seekable or compression != "none":
            # tarfile needs random access to read manifest.json (often the last member)
            # before the layers; spool a stream or a compressed archive to a temp file.
            spool = stack.enter_context(
                tempfile.TemporaryFile(dir=os.path.join(store.root, "tmp"), prefix="load-"))
            first = _read_head(f, 4)
            decompressor = _Decompressor(_compression_of(first))
            spool.write(decompressor.feed(first))
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                spool.write(decompressor.feed(chunk))
            decompressor.finish()
            spool.seek(0)
            f = spool
        source = _TarSource(f)
        stack.callback(source.close)
        yield source


# --------------------------------------------------------------------- load


@attrs.define
class _Pending:
    manifest: bytes
    config: bytes
    tags: List[str]


def load(store: Store, src: PathOrFile, *, unpack: bool = True) -> List[ImageRecord]:
    """Load every image of a docker-archive or OCI layout (tar, stream or directory).

    With ``unpack`` (the default) layers are also unpacked, which checks OCI layers
    against their diff ids now rather than at first run. Nothing is recorded unless
    every image verifies; verified blobs of a failed load stay until :meth:`Store.gc`.
    """
    with store.ingest(), _open_source(store, src) as source:
        if source.exists("manifest.json"):
            pending = _read_docker_archive(store, source)
        elif source.exists("index.json"):
            pending = _read_oci_layout(store, source)
        else:
            raise InvalidArgument("neither a docker-archive (manifest.json) nor an OCI "
                                  "layout (index.json)")
        if unpack:
            for item in pending:
                manifest = Manifest.from_json(item.manifest)
                diff_ids = ImageConfig.from_json(item.config).rootfs.diff_ids
                for desc, diff_id in zip(manifest.layers, diff_ids):
                    store.ensure_layer(diff_id, desc.digest, desc.media_type)
        return [store.add_image(item.manifest, item.config, tags=item.tags) for item in pending]


def _digest_from_name(name: str) -> Optional[str]:
    """The digest a member's name claims: blobs/sha256/<hex>, <hex>.json, <hex>.tar."""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        return f"{parts[1]}:{parts[2]}"
    base = parts[-1]
    for suffix in (".json", ".tar"):
        stem = base[: -len(suffix)] if base.endswith(suffix) else ""
        if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem):
            return "sha256:" + stem
    return None


def _read_docker_archive(store: Store, source: _Source) -> List[_Pending]:
    try:
        entries = json.loads(source.read_small("manifest.json", "manifest.json"))
    except ValueError as exc:
        raise InvalidArgument(f"manifest.json is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise InvalidArgument("manifest.json must be a list")
    layer_cache: Dict[str, Tuple[Descriptor, str]] = {}
    pending = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise InvalidArgument("manifest.json entries need Config and Layers")
        config_name = _clean_name(entry["Config"])
        config_bytes = source.read_small(config_name, "config")
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        claimed = _digest_from_name(config_name)
        if claimed is not None and claimed != config_digest:
            raise DigestMismatch(f"{config_name} hashes to {config_digest}")
        config = ImageConfig.from_json(config_bytes)
        if len(entry["Layers"]) != len(config.rootfs.diff_ids):
            raise InvalidArgument(
                f"{config_name}: {len(entry['Layers'])} layers but "
                f"{len(config.rootfs.diff_ids)} diff ids")
        descriptors = []
        for layer_name, diff_id in zip(entry["Layers"], config.rootfs.diff_ids):
            if not isinstance(layer_name, str):
                raise InvalidArgument("manifest.json Layers must be strings")
            name = _clean_name(layer_name)
            if name not in layer_cache:
                layer_cache[name] = _ingest_layer(store, source, name)
            desc, actual = layer_cache[name]
            if actual != diff_id:
                raise DigestMismatch(f"layer {name} has diff id {actual}, config says {diff_id}")
            descriptors.append(desc)
        manifest = build_manifest(config_digest, len(config_bytes), descriptors, media="docker")
        tags = []
        for tag in entry.get("RepoTags") or []:
            try:
                Reference.parse(tag)
            except InvalidReference as exc:
                raise InvalidArgument(f"manifest.json: bad RepoTag: {exc}") from None
            tags.append(tag)
        pending.append(_Pending(manifest, config_bytes, tags))
    return pending


def _ingest_layer(store: Store, source: _Source, name: str) -> Tuple[Descriptor, str]:
    """Copy one docker-archive layer into the store; (descriptor, its real diff id)."""
    f, _ = source.open(name)
    with f, store.new_blob() as writer:
        ingest = _LayerIngest(writer)
        _copy(f, ingest)
        diff_id = ingest.finish()
        digest, size = writer.commit()
    claimed = _digest_from_name(name)
    if claimed is not None and claimed not in (digest, diff_id):
        raise DigestMismatch(f"{name} hashes to {digest}")
    return Descriptor(_layer_media_type(ingest.compression, "docker"), digest, size), diff_id


def _read_blob_member(store: Store, source: _Source, desc: Descriptor) -> None:
    """Copy blobs/<alg>/<hex> into the store, verified against ``desc``."""
    algorithm, hex_digest = parse_digest(desc.digest)
    if store.has_blob(desc.digest):
        return  # verified when it was stored; no need to read it again
    f, _ = source.open(f"blobs/{algorithm}/{hex_digest}")
    with f:
        store.put_blob(f, desc.digest, desc.size)


def _read_small_blob(source: _Source, desc: Descriptor, what: str) -> bytes:
    algorithm, hex_digest = parse_digest(desc.digest)
    if desc.size > _SMALL_LIMIT:
        raise InvalidArgument(f"{what} {desc.digest} is implausibly large")
    data = source.read_small(f"blobs/{algorithm}/{hex_digest}", what)
    if hashlib.new(algorithm, data).hexdigest() != hex_digest or len(data) != desc.size:
        raise DigestMismatch(f"{what} blob does not match {desc.digest}")
    return data


def _platform_matches(platform: Optional[Mapping[str, Any]]) -> bool:
    if not platform:
        return True
    host = host_platform()
    return platform.get("os") == host["os"] and platform.get("architecture") == host["architecture"]


def _name_of(desc: Descriptor, parent: Optional[Descriptor]) -> List[str]:
    """The tag an index entry carries: containerd's full name, or a full ref.name."""
    for d in (desc, parent):
        annotations = (d.annotations if d else None) or {}
        for key in (_CONTAINERD_NAME, _REF_NAME):
            name = annotations.get(key)
            # A bare ref.name ("latest") is only a tag within the layout, not an image name.
            if name and ("/" in name or ":" in name):
                try:
                    parsed = Reference.parse(name)
                except InvalidReference:
                    continue
                if parsed.digest is None:
                    return [name]
    return []


def _read_oci_layout(store: Store, source: _Source) -> List[_Pending]:
    if source.exists("oci-layout"):
        try:
            layout = json.loads(source.read_small("oci-layout", "oci-layout"))
            version = str(layout.get("imageLayoutVersion", ""))
        except (ValueError, AttributeError):
            raise InvalidArgument("oci-layout is not valid JSON") from None
        if not version.startswith("1."):
            raise InvalidArgument(f"unsupported OCI layout version {version!r}")
    try:
        index = json.loads(source.read_small("index.json", "index.json"))
    except ValueError as exc:
        raise InvalidArgument(f"index.json is not valid JSON: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise InvalidArgument("index.json has no manifests list")
    pending: List[_Pending] = []
    for entry in index["manifests"]:
        desc = Descriptor.from_dict(entry, "index.json entry")
        pending.extend(_read_oci_entry(store, source, desc, None, depth=0))
    return pending


def _read_oci_entry(store: Store, source: _Source, desc: Descriptor,
                    parent: Optional[Descriptor], depth: int) -> List[_Pending]:
    if depth > 4:
        raise InvalidArgument("image indexes nested too deeply")
    data = _read_small_blob(source, desc, "manifest")
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise InvalidArgument(f"manifest {desc.digest} is not valid JSON: {exc}") from None
    if desc.media_type in mt.INDEXES or (isinstance(obj, dict) and "manifests" in obj):
        children = [Descriptor.from_dict(m, "index entry") for m in obj.get("manifests") or []]
        wanted = [c for c in children if c.media_type in mt.MANIFESTS or not c.media_type]
        chosen = [c for c in wanted if _platform_matches(c.platform)][:1] or wanted[:1]
        out: List[_Pending] = []
        for child in chosen:
            out.extend(_read_oci_entry(store, source, child, parent or desc, depth + 1))
        return out
    manifest = Manifest.from_json(data)
    config = _read_small_blob(source, manifest.config, "config")
    for layer in manifest.layers:
        if layer.media_type == mt.DOCKER_FOREIGN_LAYER_GZIP and not source.exists(
                "blobs/" + layer.digest.replace(":", "/")):
            raise NotFound(f"foreign layer {layer.digest} is not in the archive")
        _read_blob_member(store, source, layer)
    return [_Pending(data, config, _name_of(desc, parent))]


# --------------------------------------------------------------------- save


def _tar_info(name: str, size: int, *, mode: int = 0o444) -> tarfile.TarInfo:
    # Fixed owner, mode and time keep the archive reproducible, as skopeo's is.
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))


@contextlib.contextmanager
def _output_file(dest: PathOrFile) -> Iterator[IO[bytes]]:
    """A file to write the archive to; a path is written to a temp name and renamed."""
    if not isinstance(dest, (str, os.PathLike)):
        yield dest
        return
    path = os.path.abspath(os.fspath(dest))
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".contain-save-")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _selected(store: Store, refs: Union[str, Sequence[str]]) -> List[Tuple[ImageRecord, List[str]]]:
    """Resolve refs; [(record, full tags to write)] with one entry per image."""
    if isinstance(refs, str):
        refs = [refs]
    if not refs:
        raise InvalidArgument("no images to save")
    chosen: Dict[str, Tuple[ImageRecord, List[str]]] = {}
    for ref in refs:
        record, tag = store.lookup(ref)
        _, tags = chosen.setdefault(record.id, (record, []))
        if tag is not None and tag not in tags:
            tags.append(tag)
    return list(chosen.values())


def save(store: Store, refs: Union[str, Sequence[str]], dest: PathOrFile, *,
         format: str = "docker-archive") -> None:
    """Write images (by tag, id or prefix) as a docker-archive, oci-archive or oci-dir.

    Images named by tag carry that tag in the archive; images named by id are untagged,
    as ``docker save <id>`` leaves them.
    """
    if format not in FORMATS:
        raise InvalidArgument(f"unknown archive format {format!r}; one of {FORMATS}")
    with store.ingest():
        images = _selected(store, refs)
        if format == "oci-dir":
            if not isinstance(dest, (str, os.PathLike)):
                raise InvalidArgument("oci-dir needs a directory path")
            _save_oci_dir(store, images, os.fspath(dest))
            return
        with _output_file(dest) as f, tarfile.open(fileobj=f, mode="w|",
                                                   format=tarfile.PAX_FORMAT) as tar:
            if format == "docker-archive":
                _write_docker_archive(store, images, tar)
            else:
                _write_oci_layout(store, images, _TarSink(tar))


def _v1_ids(diff_ids: Sequence[str], config_digest: str) -> List[str]:
    """Legacy layer ids: chain ids, the top one salted with the config (it embeds it)."""
    ids, chain = [], ""
    for i, diff_id in enumerate(diff_ids):
        chain = diff_id if not chain else "sha256:" + hashlib.sha256(
            f"{chain} {diff_id}".encode()).hexdigest()
        top = i == len(diff_ids) - 1
        layer_id = hashlib.sha256(f"{chain} {config_digest}".encode()).hexdigest() if top \
            else chain.split(":", 1)[1]
        ids.append(layer_id)
    return ids


def _write_docker_archive(store: Store, images: List[Tuple[ImageRecord, List[str]]],
                          tar: tarfile.TarFile) -> None:
    manifest_entries = []
    repositories: Dict[str, Dict[str, str]] = {}
    written: set = set()
    for record, tags in images:
        config_bytes = store.read_blob(record.config_digest)
        config_name = record.config_digest.split(":", 1)[1] + ".json"
        if config_name not in written:
            _add_bytes(tar, config_name, config_bytes)
            written.add(config_name)
        layer_names = []
        for layer in record.layers:
            name = layer.diff_id.split(":", 1)[1] + ".tar"
            layer_names.append(name)
            if name not in written:
                _add_uncompressed_layer(store, tar, name, layer.digest, layer.diff_id,
                                        layer.media_type)
                written.add(name)
        v1_ids = _v1_ids(record.diff_ids, record.config_digest)
        parent = ""
        for i, (layer_id, name) in enumerate(zip(v1_ids, layer_names)):
            if layer_id in written:
                parent = layer_id
                continue
            legacy: Dict[str, Any] = {"id": layer_id}
            if parent:
                legacy["parent"] = parent
            if i == len(v1_ids) - 1:
                raw = json.loads(config_bytes)
                for key in ("architecture", "config", "container", "container_config",
                            "created", "docker_version", "os"):
                    legacy[key] = raw.get(key)
            _add_bytes(tar, f"{layer_id}/VERSION", b"1.0")
            _add_bytes(tar, f"{layer_id}/json", canonical_json(legacy))
            link = _tar_info(f"{layer_id}/layer.tar", 0, mode=0o777)
            link.type, link.linkname = tarfile.SYMTYPE, f"../{name}"
            tar.addfile(link)
            written.add(layer_id)
            parent = layer_id
        # Fully qualified names, as skopeo writes them: podman reads a familiar
        # "busybox:latest" as "localhost/busybox:latest", while Docker normalises both.
        manifest_entries.append({"Config": config_name, "RepoTags": list(tags) or None,
                                 "Layers": layer_names})
        for tag in tags:
            ref = Reference.parse(tag)
            if v1_ids:
                repositories.setdefault(ref.repository, {})[ref.tag or "latest"] = v1_ids[-1]
    _add_bytes(tar, "manifest.json", json.dumps(manifest_entries, separators=(",", ":")).encode())
    if repositories:
        _add_bytes(tar, "repositories", json.dumps(repositories, separators=(",", ":")).encode())


def _add_uncompressed_layer(store: Store, tar: tarfile.TarFile, name: str, digest: str,
                            diff_id: str, media_type: str) -> None:
    """Add a layer as a plain tar (docker-archive layers must hash to their diff id)."""
    with store.open_blob(digest) as blob:
        head = blob.read(4)
        blob.seek(0)
        compression = _compression_of(head)
        if compression == "none":
            if digest != diff_id:
                raise DigestMismatch(f"uncompressed layer {digest} is not {diff_id}")
            tar.addfile(_tar_info(name, os.fstat(blob.fileno()).st_size), blob)
            return
        # A tar header needs the size first, so decompress to a temp file (on the store's
        # filesystem), checking the diff id on the way.
        with tempfile.TemporaryFile(dir=os.path.join(store.root, "tmp"), prefix="save-") as tmp:
            for plain in decompressed(blob, compression, diff_id, digest):
                tmp.write(plain)
            size = tmp.tell()
            tmp.seek(0)
            tar.addfile(_tar_info(name, size), tmp)


class _TarSink:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self._tar = tar
        self._written: set = set()

    def add_bytes(self, name: str, data: bytes) -> None:
        if name not in self._written:
            self._written.add(name)
            _add_bytes(self._tar, name, data)

    def add_blob(self, store: Store, digest: str) -> None:
        name = "blobs/" + digest.replace(":", "/")
        if name in self._written:
            return
        self._written.add(name)
        with store.open_blob(digest) as blob:
            self._tar.addfile(_tar_info(name, os.fstat(blob.fileno()).st_size), blob)


class _DirSink:
    def __init__(self, root: str) -> None:
        self._root = root

    def add_bytes(self, name: str, data: bytes) -> None:
        path = os.path.join(self._root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def add_blob(self, store: Store, digest: str) -> None:
        path = os.path.join(self._root, "blobs", *digest.split(":", 1))
        if os.path.exists(path):
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # A copy, never a hard link: whoever edits the layout must not corrupt the store.
        shutil.copyfile(store.blob_path(digest), path)


def _write_oci_layout(store: Store, images: List[Tuple[ImageRecord, List[str]]], sink: Any) -> None:
    index_entries = []
    for record, tags in images:
        manifest_bytes = store.read_blob(record.manifest_digest)
        for digest in [record.config_digest] + [layer.digest for layer in record.layers]:
            if not store.has_blob(digest):
                raise NotFound(f"blob {digest} of image {record.short_id} is missing")
        sink.add_blob(store, record.config_digest)
        for layer in record.layers:
            sink.add_blob(store, layer.digest)
        sink.add_blob(store, record.manifest_digest)
        base = {"mediaType": record.manifest_media_type or mt.OCI_MANIFEST,
                "digest": record.manifest_digest, "size": len(manifest_bytes)}
        # One index entry per tag: ref.name carries the full name (as podman and
        # containerd write it) so a load restores the name, not just the tag.
        for tag in tags or [None]:
            entry = dict(base)
            if tag:
                entry["annotations"] = {_REF_NAME: tag, _CONTAINERD_NAME: tag}
            index_entries.append(entry)
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": index_entries}
    sink.add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    sink.add_bytes("index.json", json.dumps(index, separators=(",", ":")).encode())


def _save_oci_dir(store: Store, images: List[Tuple[ImageRecord, List[str]]], dest: str) -> None:
    dest = os.path.abspath(dest)
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise InvalidArgument(f"{dest} exists and is not an empty directory")
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(dir=parent, prefix=".contain-save-")
    try:
        _write_oci_layout(store, images, _DirSink(work))
        os.chmod(work, 0o755)
        if os.path.isdir(dest):
            os.rmdir(dest)
        os.rename(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


# ------------------------------------------------------------- import/export


def import_rootfs(
    store: Store,
    src: PathOrFile,
    *,
    tag: Optional[str] = None,
    config_changes: Optional[Mapping[str, Any]] = None,
    comment: str = "",
) -> ImageRecord:
    """A single-layer image from a rootfs tarball (path or stream) or directory.

    Like ``docker import``: a tarball is stored as given (gzip, zstd or plain) and checked
    by unpacking it; a directory is packed into a gzip layer. ``config_changes`` sets
    config fields, keyed "Cmd"/"cmd", "Env", "WorkingDir", "User", "ExposedPorts", ...
    """
    if tag is not None:
        Reference.parse(tag)  # fail before doing the work
    with store.ingest():
        if isinstance(src, (str, os.PathLike)) and os.path.isdir(src):
            packed = store.pack_layer(os.fspath(src), compression="gzip")
            digest, size, diff_id, media_type = packed.digest, packed.size, packed.diff_id, packed.media_type
        else:
            with contextlib.ExitStack() as stack:
                if isinstance(src, (str, os.PathLike)):
                    f: IO[bytes] = stack.enter_context(open(src, "rb"))
                else:
                    f = src
                writer = stack.enter_context(store.new_blob())
                ingest = _LayerIngest(writer)
                _copy(f, ingest)
                diff_id = ingest.finish()
                digest, size = writer.commit()
            media_type = _layer_media_type(ingest.compression, "oci")
        # Unpacking now refuses a hostile tarball before any record names it.
        store.ensure_layer(diff_id, digest, media_type)
        now = _now()
        platform = host_platform()
        container_config = ContainerConfig()
        if config_changes:
            container_config = container_config.apply(config_changes)
        config = ImageConfig(
            architecture=platform["architecture"],
            os=platform["os"],
            variant=platform.get("variant"),
            created=now,
            config=container_config,
            rootfs=RootFS(diff_ids=[diff_id]),
            history=[HistoryEntry(created=now, created_by="contain import",
                                  comment=comment or None)],
        )
        config_bytes = config.to_json()
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        manifest = build_manifest(config_digest, len(config_bytes),
                                  [Descriptor(media_type, digest, size)], media="oci")
        return store.add_image(manifest, config_bytes, tags=[tag] if tag else ())


def export_directory(directory: Union[str, "os.PathLike[str]"], fileobj: IO[bytes]) -> int:
    """Write a plain tar of a container's root filesystem (``docker export``); bytes written."""
    from ..storage.unpack import pack_directory

    stats = pack_directory(os.fspath(directory), fileobj, compression="none")
    return int(stats.size)


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
