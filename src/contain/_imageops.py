"""Pull, push, search, login and archives: the orchestration behind the Image API.

Everything here composes lower layers (oci.registry, oci.auth, oci.archive, storage.store)
and reports progress as :class:`ProgressEvent` values to a callable; the default one,
:class:`ProgressRenderer`, draws Docker-like per-layer lines in a terminal or notebook and
stays silent otherwise.

Pull downloads layers in parallel with one shared RegistryClient (its connections are
per thread) and unpacks each layer in the same worker as soon as its download ends, so
downloads of some layers overlap the unpacking of others. Nothing is recorded until
every blob has been verified and every layer unpacked.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Any, Optional, Union

import attrs
import zstandard

from ._root import RootArg, get_root
from .errors import ImageNotFound, InvalidArgument, RegistryError
from .oci import archive, auth
from .oci import mediatypes as mt
from .oci.imageconfig import Descriptor, ImageConfig, Manifest, build_manifest, host_platform
from .oci.reference import DEFAULT_DOMAIN, Reference
from .oci.registry import Credentials, RegistryClient
from .storage.locks import FileLock
from .storage.store import ImageRecord, LayerRecord, Store

__all__ = [
    "ProgressEvent",
    "ProgressRenderer",
    "pull",
    "push",
    "search",
    "login",
    "logout",
    "save",
    "load",
]

WORKERS = 4  # parallel layer transfers: enough to fill a link, few enough to be polite
COMPRESSIONS = ("gzip", "zstd")
_CONFIG_LIMIT = 32 << 20  # an image config is a few KiB; refuse memory bombs
_CHUNK = 1 << 20
_SOURCES_FILE = "registry-sources.json"
_SOURCES_PER_BLOB = 8  # repositories remembered per blob, newest first


# --------------------------------------------------------------------------- progress


@attrs.frozen
class ProgressEvent:
    """One step of a pull or push, as Docker prints them.

    ``id`` is the layer's short digest (12 hex digits), or "" for a line about the whole
    image (then ``action`` is the whole message, e.g. "Digest: sha256:..."). Pull actions:
    "Pulling fs layer", "Downloading" (repeated, with current/total bytes), "Download
    complete", "Extracting", "Pull complete", "Already exists". Push actions: "Preparing",
    "Pushing", "Pushed", "Layer already exists", "Mounted from <repo>".
    """

    id: str
    action: str
    current: int = 0
    total: Optional[int] = None


ProgressCallback = Callable[[ProgressEvent], None]


def _short(digest: str) -> str:
    return digest.partition(":")[2][:12]


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.3g}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    raise AssertionError("unreachable")


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ipython = shell.get_ipython()  # type: ignore[attr-defined]
    except AttributeError:
        return False
    return ipython is not None and type(ipython).__name__ == "ZMQInteractiveShell"


class ProgressRenderer:
    """Draws Docker-like per-layer progress lines; silent when not interactive.

    In a terminal the block of lines is redrawn in place (ANSI cursor movement); in a
    Jupyter notebook one display area is updated; anywhere else nothing is written.
    Byte counts are redrawn at most ``interval`` seconds apart; state changes at once.
    """

    BAR_WIDTH = 50

    def __init__(self, stream: Any = None, *, interval: float = 0.1) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._interval = interval
        self._lines: dict[str, str] = {}
        self._drawn = 0
        self._last = 0.0
        self._lock = threading.Lock()
        self._display: Any = None
        if _in_notebook():
            self.mode = "notebook"
        elif hasattr(self._stream, "isatty") and self._stream.isatty():
            self.mode = "terminal"
        else:
            self.mode = "silent"

    def __call__(self, event: ProgressEvent) -> None:
        if self.mode == "silent":
            return
        with self._lock:
            key = event.id or f"#{len(self._lines)}"
            self._lines[key] = self._format(event)
            now = time.monotonic()
            if event.action == "Downloading" and now - self._last < self._interval:
                return
            self._last = now
            self._draw()

    def _format(self, event: ProgressEvent) -> str:
        if not event.id:
            return event.action
        text = f"{event.id}: {event.action}"
        if event.action == "Downloading" and event.total:
            filled = min(self.BAR_WIDTH, self.BAR_WIDTH * event.current // event.total)
            bar = "=" * max(filled - 1, 0) + (">" if filled else "")
            text += (f" [{bar:<{self.BAR_WIDTH}}] "
                     f"{_human(event.current)}/{_human(event.total)}")
        return text

    def _draw(self) -> None:
        lines = list(self._lines.values())
        if self.mode == "notebook":
            from IPython.display import display  # type: ignore[import-not-found]

            text = {"text/plain": "\n".join(lines)}
            if self._display is None:
                self._display = display(text, raw=True, display_id=True)
            else:
                self._display.update(text, raw=True)
            return
        out = f"\x1b[{self._drawn}A" if self._drawn else ""
        out += "".join(f"\x1b[2K{line}\n" for line in lines)
        self._drawn = len(lines)
        self._stream.write(out)
        self._stream.flush()


def _reporter(progress: Optional[ProgressCallback]) -> ProgressCallback:
    """Serialise events from worker threads, so callbacks need not be thread-safe."""
    target = progress if progress is not None else ProgressRenderer()
    lock = threading.Lock()

    def report(event: ProgressEvent) -> None:
        with lock:
            target(event)

    return report


class _Cancelled(Exception):
    """Raised inside a worker's transfer when another worker failed."""


# --------------------------------------------------------------------------- helpers


def _client(ref: Reference, insecure: Optional[bool],
            credentials: Optional[Credentials]) -> RegistryClient:
    """A client for the reference's registry, with config.json credentials by default."""
    if credentials is None:
        credentials = auth.credentials_for(ref.domain)
    return RegistryClient(ref.domain, insecure=insecure, credentials=credentials)


def _default_platform() -> str:
    spec = host_platform()
    return "/".join(p for p in (spec["os"], spec["architecture"], spec.get("variant")) if p)


def _run_parallel(jobs: Sequence[Callable[[threading.Event], None]]) -> None:
    """Run jobs on WORKERS threads; on the first failure cancel the rest and re-raise it.

    Each job gets an Event that is set once another job failed, so a long transfer can
    stop early instead of finishing work nobody will use.
    """
    failed = threading.Event()
    futures: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=max(1, min(WORKERS, len(jobs))),
                            thread_name_prefix="contain-transfer") as pool:
        try:
            futures.extend(pool.submit(job, failed) for job in jobs)
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            errors = [e for e in (f.exception() for f in done) if e is not None]
            if errors:
                # The first real error, not a _Cancelled echo of it.
                raise next((e for e in errors if not isinstance(e, _Cancelled)), errors[0])
        except BaseException:  # also Ctrl-C: running transfers stop at their next chunk
            failed.set()
            for future in futures:
                future.cancel()
            raise


@contextlib.contextmanager
def _sources_lock(store: Store) -> Iterator[str]:
    with FileLock(os.path.join(store.root, "locks", "registry-sources.lock")).exclusive():
        yield os.path.join(store.root, _SOURCES_FILE)


def _read_sources(path: str) -> dict[str, list[str]]:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (FileNotFoundError, ValueError):
        return {}  # a lost or torn hint file only costs mounts, never correctness
    return data if isinstance(data, dict) else {}


def _blob_sources(store: Store, digest: str) -> list[str]:
    """Repositories ("host/path") a blob is known to be in, newest first."""
    sources = _read_sources(os.path.join(store.root, _SOURCES_FILE)).get(digest)
    return [s for s in sources if isinstance(s, str)] if isinstance(sources, list) else []


def _remember_sources(store: Store, repository: str, digests: Sequence[str]) -> None:
    """Note that `repository` holds these blobs, for cross-repository mounts on push."""
    with store.ingest(), _sources_lock(store) as path:
        sources = _read_sources(path)
        for digest in digests:
            known = [s for s in sources.get(digest) or [] if s != repository]
            sources[digest] = ([repository] + known)[:_SOURCES_PER_BLOB]
        # Blobs gc has since removed are dropped so the file does not grow forever.
        sources = {d: repos for d, repos in sources.items() if store.has_blob(d)}
        fd, temp = tempfile.mkstemp(dir=os.path.join(store.root, "tmp"), prefix="sources-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(sources, f, sort_keys=True)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise


# --------------------------------------------------------------------------- pull


def _fetch_into_store(client: RegistryClient, store: Store, repo: str, desc: Descriptor,
                      progress: Optional[Callable[[int, Optional[int]], None]] = None) -> None:
    """Download a blob into the store; the client verifies digest and size as it streams."""
    if store.has_blob(desc.digest):
        return
    tmp_dir = os.path.join(store.root, "tmp")
    staging = tempfile.mkdtemp(dir=tmp_dir, prefix="pull-")
    try:
        staged = os.path.join(staging, "blob")
        client.fetch_blob(repo, desc.digest, staged, size=desc.size, progress=progress)
        os.chmod(staged, 0o444)  # as BlobWriter leaves blobs: immutable
        target = store.blob_path(desc.digest)
        os.rename(staged, target)
        fd = os.open(os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(staging, "blob"))
        os.rmdir(staging)


def _pull_layer(client: RegistryClient, store: Store, repo: str, desc: Descriptor,
                diff_id: str, report: ProgressCallback, cancelled: threading.Event) -> None:
    short = _short(desc.digest)
    if store.has_blob(desc.digest) and store.has_layer(diff_id):
        report(ProgressEvent(short, "Already exists"))
        return
    fetched = not store.has_blob(desc.digest)
    if fetched:
        def downloading(current: int, total: Optional[int]) -> None:
            if cancelled.is_set():
                raise _Cancelled(f"download of {desc.digest} cancelled")
            report(ProgressEvent(short, "Downloading", current, total))

        _fetch_into_store(client, store, repo, desc, downloading)
        report(ProgressEvent(short, "Download complete", desc.size, desc.size))
    if cancelled.is_set():
        raise _Cancelled(f"unpacking of {desc.digest} cancelled")
    report(ProgressEvent(short, "Extracting", 0, desc.size))
    # A blob fetched just now was hashed on its way in: not again here.
    store.ensure_layer(diff_id, desc.digest, desc.media_type, blob_verified=fetched)
    report(ProgressEvent(short, "Pull complete", desc.size, desc.size))


def pull(root: RootArg, ref: str, *, platform: Optional[str] = None,
         progress: Optional[ProgressCallback] = None, insecure: Optional[bool] = None,
         credentials: Optional[Credentials] = None) -> ImageRecord:
    """Pull an image (``docker pull``): verify and store every blob, unpack, record, tag.

    ``platform`` ("os/arch[/variant]") picks from a multi-platform index; the host's by
    default. A reference with a tag is tagged locally; the repo digest recorded is the
    index's digest when the image came through one, as Docker reports it. A missing
    image is ImageNotFound; every other registry failure is RegistryError, and then no
    record or tag is written. ``progress`` receives ProgressEvents (from worker threads,
    one at a time); by default a ProgressRenderer draws them when interactive.
    """
    store = get_root(root).store
    reference = Reference.parse(ref)
    repo = reference.path
    report = _reporter(progress)
    with _client(reference, insecure, credentials) as client, store.ingest():
        try:
            fetched = client.get_manifest(repo, reference.identifier,
                                          platform=platform or _default_platform())
        except RegistryError as exc:
            if exc.status == 404:
                raise ImageNotFound(f"manifest for {reference} not found: {exc}") from exc
            raise
        if fetched.media_type not in mt.MANIFESTS:
            raise RegistryError(f"{reference}: unsupported manifest type {fetched.media_type}")
        try:
            manifest = Manifest.from_json(fetched.data)
        except InvalidArgument as exc:
            raise RegistryError(f"{reference}: invalid manifest: {exc}") from None
        if manifest.config.media_type not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
            raise RegistryError(f"{reference} is not a container image (config type "
                                f"{manifest.config.media_type!r})")
        if manifest.config.size > _CONFIG_LIMIT:
            raise RegistryError(f"{reference}: config of {manifest.config.size} bytes refused")
        _fetch_into_store(client, store, repo, manifest.config)
        config_bytes = store.read_blob(manifest.config.digest)
        try:
            diff_ids = ImageConfig.from_json(config_bytes).rootfs.diff_ids
        except InvalidArgument as exc:
            raise RegistryError(f"{reference}: invalid image config: {exc}") from None
        if len(diff_ids) != len(manifest.layers):
            raise RegistryError(f"{reference}: manifest has {len(manifest.layers)} layers, "
                                f"config {len(diff_ids)} diff ids")
        if reference.tag and not reference.digest:
            report(ProgressEvent("", f"{reference.tag}: Pulling from {reference.name}"))
        up_to_date = all(store.has_blob(desc.digest) and store.has_layer(diff_id)
                         for desc, diff_id in zip(manifest.layers, diff_ids))
        for desc in manifest.layers:
            report(ProgressEvent(_short(desc.digest), "Pulling fs layer", 0, desc.size))
        _run_parallel([partial(_pull_layer, client, store, repo, desc, diff_id, report)
                       for desc, diff_id in zip(manifest.layers, diff_ids)])
        repo_digest = fetched.index_digest or fetched.digest
        tags = [str(reference)] if reference.digest is None else []
        record = store.add_image(fetched.data, config_bytes, tags=tags,
                                 repo_digest=f"{reference.name}@{repo_digest}")
        _remember_sources(store, reference.repository,
                          [manifest.config.digest] + [d.digest for d in manifest.layers])
    report(ProgressEvent("", f"Digest: {repo_digest}"))
    report(ProgressEvent("", f"Status: Image is up to date for {reference}" if up_to_date
                         else f"Status: Downloaded newer image for {reference}"))
    return record


# --------------------------------------------------------------------------- push


def _stored_compression(store: Store, layer: LayerRecord) -> str:
    compression = mt.layer_compression(layer.media_type)
    if compression != "auto":
        return compression
    with store.open_blob(layer.digest) as f:
        head = f.read(4)
    return "gzip" if head.startswith(b"\x1f\x8b") else (
        "zstd" if head.startswith(b"\x28\xb5\x2f\xfd") else "none")


def _recompress(store: Store, layer: LayerRecord, stored: str, wanted: str) -> Descriptor:
    """A new blob holding the layer compressed with `wanted`; its diff id is checked."""
    with store.open_blob(layer.digest) as src, store.new_blob() as writer:
        if wanted == "gzip":
            # mtime=0, no name: the same layer recompresses to the same blob every time.
            compressor: Any = gzip.GzipFile(filename="", mode="wb", fileobj=writer,
                                            mtime=0, compresslevel=6)
        else:
            compressor = zstandard.ZstdCompressor(level=3).stream_writer(
                writer, closefd=False)  # type: ignore[arg-type]  # BlobWriter is file-like
        for plain in archive.decompressed(src, stored, layer.diff_id, layer.digest):
            compressor.write(plain)
        compressor.close()
        digest, size = writer.commit()
    media_type = mt.OCI_LAYER_GZIP if wanted == "gzip" else mt.OCI_LAYER_ZSTD
    return Descriptor(media_type, digest, size)


def _push_target(store: Store, image: Union[str, ImageRecord],
                 dest_ref: Optional[str]) -> tuple[ImageRecord, Reference]:
    if isinstance(image, ImageRecord):
        record, tag = image, None
    else:
        record, tag = store.lookup(image)
    if dest_ref is None:
        dest_ref = tag or (record.repo_tags[0] if record.repo_tags else None)
        if dest_ref is None:
            raise InvalidArgument(f"image {record.short_id} has no tag: name where to push it")
    return record, Reference.parse(dest_ref)


def push(root: RootArg, image: Union[str, ImageRecord], dest_ref: Optional[str] = None, *,
         compression: str = "gzip", progress: Optional[ProgressCallback] = None,
         insecure: Optional[bool] = None, credentials: Optional[Credentials] = None) -> str:
    """Push an image (``docker push``); returns the manifest digest.

    ``dest_ref`` defaults to the tag the image was named by, else its first tag. Layers
    go as stored when already in ``compression``, else recompressed (same diff id); when
    nothing was recompressed the stored manifest is pushed byte for byte, so its digest
    is kept and recorded as a repo digest of the image. Blobs the registry has are
    skipped, and blobs known to be in another repository of the same registry are
    mounted from there.
    """
    if compression not in COMPRESSIONS:
        raise InvalidArgument(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
    store = get_root(root).store
    report = _reporter(progress)
    with store.ingest():
        record, dest = _push_target(store, image, dest_ref)
        repo = dest.path
        descriptors: list[Optional[Descriptor]] = [None] * len(record.layers)

        with _client(dest, insecure, credentials) as client:
            def push_layer(index: int, cancelled: threading.Event) -> None:
                layer = record.layers[index]
                short = _short(layer.digest)
                report(ProgressEvent(short, "Preparing", 0, layer.size))
                stored = _stored_compression(store, layer)
                if stored == compression:
                    desc = Descriptor(layer.media_type, layer.digest, layer.size)
                else:
                    desc = _recompress(store, layer, stored, compression)
                descriptors[index] = desc
                if cancelled.is_set():
                    raise _Cancelled(f"push of {desc.digest} cancelled")
                _push_blob(client, store, dest, desc, short, report)

            _run_parallel([partial(push_layer, i) for i in range(len(record.layers))])
            layers = [d for d in descriptors if d is not None]
            config_size = store.blob_size(record.config_digest)
            client.push_blob(repo, store.blob_path(record.config_digest), record.config_digest,
                             mount_from=_mount_source(store, dest, record.config_digest))
            unchanged = [d.digest for d in layers] == [layer.digest for layer in record.layers]
            if unchanged:
                manifest_bytes = store.read_blob(record.manifest_digest)
                media_type = record.manifest_media_type or mt.OCI_MANIFEST
            else:
                # Docker's schema 2 has no zstd layer type: such manifests must be OCI.
                docker = (record.manifest_media_type == mt.DOCKER_MANIFEST
                          and compression != "zstd")
                manifest_bytes = build_manifest(record.config_digest, config_size, layers,
                                                media="docker" if docker else "oci")
                media_type = mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST
            digest = client.put_manifest(repo, dest.digest or dest.tag or "latest",
                                         media_type, manifest_bytes)
        _remember_sources(store, dest.repository,
                          [record.config_digest] + [d.digest for d in layers])
        if unchanged:
            store.add_image(manifest_bytes, store.read_blob(record.config_digest),
                            repo_digest=f"{dest.name}@{digest}")
    tag = dest.tag or dest.digest
    report(ProgressEvent("", f"{tag}: digest: {digest} size: {len(manifest_bytes)}"))
    return digest


def _mount_source(store: Store, dest: Reference, digest: str) -> Optional[str]:
    """Another repository of dest's registry known to hold the blob, as a path."""
    prefix = dest.domain + "/"
    for source in _blob_sources(store, digest):
        if source.startswith(prefix) and source != dest.repository:
            return source[len(prefix):]
    return None


def _push_blob(client: RegistryClient, store: Store, dest: Reference, desc: Descriptor,
               short: str, report: ProgressCallback) -> None:
    """Push one layer blob; events carry `short`, the stored layer's id, even when the
    blob sent is a recompressed one, so each layer keeps one line."""
    mount_from = _mount_source(store, dest, desc.digest)
    report(ProgressEvent(short, "Pushing", 0, desc.size))
    outcome = client.push_blob(dest.path, store.blob_path(desc.digest), desc.digest,
                               mount_from=mount_from)
    if outcome == "exists":
        report(ProgressEvent(short, "Layer already exists", desc.size, desc.size))
    elif outcome == "mounted":
        report(ProgressEvent(short, f"Mounted from {mount_from}", desc.size, desc.size))
    else:
        report(ProgressEvent(short, "Pushed", desc.size, desc.size))


# --------------------------------------------------------------------------- search/auth


def search(term: str, *, registry: Optional[str] = None, limit: int = 25,
           insecure: Optional[bool] = None,
           credentials: Optional[Credentials] = None) -> list[dict[str, Any]]:
    """Repositories matching `term` (``docker search``), as Docker Hub's result dicts.

    The registry is `registry`, else a host prefix of the term ("127.0.0.1:5000/busy"),
    else Docker Hub.
    """
    if registry is None:
        first, slash, rest = term.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, term = first, rest
        else:
            registry = DEFAULT_DOMAIN
    if credentials is None:
        credentials = auth.credentials_for(registry)
    with RegistryClient(registry, insecure=insecure, credentials=credentials) as client:
        return client.search(term, limit=limit)


def login(registry: str, username: str, password: str, *,
          insecure: Optional[bool] = None) -> dict[str, str]:
    """Check credentials with the registry and store them in Docker's config.json."""
    auth.login(registry, username, password, insecure=insecure)
    return {"Status": "Login Succeeded"}


def logout(registry: str) -> bool:
    """Forget the stored credentials of `registry`; False if there were none."""
    return auth.logout(registry)


# --------------------------------------------------------------------------- archives


def save(root: RootArg, refs: Union[str, Sequence[str]], path: Union[str, os.PathLike[str]],
         *, format: str = "docker-archive") -> None:
    """Write images to a docker-archive, oci-archive or oci-dir (``docker save``)."""
    archive.save(get_root(root).store, refs, path, format=format)


def load(root: RootArg, path: Union[str, os.PathLike[str]]) -> list[ImageRecord]:
    """Load every image of an archive or OCI layout (``docker load``)."""
    return archive.load(get_root(root).store, path)
