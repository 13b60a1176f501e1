"""The image store: blobs, layers, records, tags, gc and locking, across processes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import tarfile
import threading
import time

import pytest

from contain.errors import Conflict, DigestMismatch, ImageNotFound, InvalidArgument, NotFound
from contain.oci import mediatypes as mt
from contain.oci.imageconfig import (
    ContainerConfig,
    Descriptor,
    ImageConfig,
    Manifest,
    RootFS,
    build_manifest,
)
from contain.storage.locks import FileLock, LockTimeout
from contain.storage.store import Store, sha256_digest

BUSYBOX = "/bin/busybox"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="layers hold 0/0 whiteout devices")


def _layer_tar(files: dict) -> bytes:
    """A deterministic uncompressed layer tar of {path: bytes}."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _make_image(store: Store, seed: str, *, tags=(), layers=1, gz=True):
    """Store layer blobs and an image of ``layers`` small layers; (record, layer blobs)."""
    descs, diff_ids = [], []
    for i in range(layers):
        raw = _layer_tar({f"{seed}-{i}.txt": f"{seed} {i}\n".encode()})
        blob = gzip.compress(raw, mtime=0) if gz else raw
        digest, size = store.put_blob(blob)
        descs.append(Descriptor(mt.OCI_LAYER_GZIP if gz else mt.OCI_LAYER, digest, size))
        diff_ids.append(sha256_digest(raw))
    config = ImageConfig(architecture="amd64", os="linux",
                         config=ContainerConfig(cmd=["/bin/sh"], labels={"seed": seed}),
                         rootfs=RootFS(diff_ids=diff_ids))
    config_bytes = config.to_json()
    manifest = build_manifest(sha256_digest(config_bytes), len(config_bytes), descs)
    return store.add_image(manifest, config_bytes, tags=tags), descs


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


# ------------------------------------------------------------------ blobs


def test_put_blob_bytes_and_stream(store):
    digest, size = store.put_blob(b"hello")
    assert digest == sha256_digest(b"hello") and size == 5
    assert store.has_blob(digest)
    with store.open_blob(digest) as f:
        assert f.read() == b"hello"
    data = os.urandom(3 << 20)
    digest2, size2 = store.put_blob(io.BytesIO(data), sha256_digest(data))
    assert size2 == len(data) and store.verify_blob(digest2) == len(data)
    assert store.blob_path(digest2).endswith("/blobs/sha256/" + digest2[7:])
    assert os.listdir(os.path.join(store.root, "tmp")) == []


def test_wrong_digest_leaves_nothing(store):
    wrong = sha256_digest(b"other")
    with pytest.raises(DigestMismatch):
        store.put_blob(b"content", wrong)
    with pytest.raises(DigestMismatch):
        store.put_blob(io.BytesIO(b"content"), wrong)
    with pytest.raises(DigestMismatch):
        store.put_blob(b"content", sha256_digest(b"content"), expected_size=3)
    assert not store.has_blob(wrong)
    assert not store.has_blob(sha256_digest(b"content"))
    assert os.listdir(os.path.join(store.root, "blobs", "sha256")) == []
    assert os.listdir(os.path.join(store.root, "tmp")) == []


def test_hostile_digests_refused(store):
    for bad in ("sha256:../../etc", "sha256:" + "A" * 64, "md5:" + "a" * 32, "sha256:abc", ""):
        with pytest.raises(InvalidArgument):
            store.blob_path(bad)
    with pytest.raises(NotFound):
        store.open_blob("sha256:" + "0" * 64)


def test_verify_blob_detects_corruption(store):
    digest, _ = store.put_blob(b"good data")
    path = store.blob_path(digest)
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(b"bad data!")
    with pytest.raises(DigestMismatch):
        store.verify_blob(digest)
    with pytest.raises(DigestMismatch):
        store.read_blob(digest)


def _put_many(root: str, seed: int, blobs: list, out) -> None:
    store = Store(root)
    got = [store.put_blob(data, sha256_digest(data))[0] for data in blobs]
    out.put((seed, got))


def test_concurrent_put_from_processes(tmp_path):
    root = str(tmp_path / "store")
    Store(root)
    blobs = [os.urandom(200_000 + i) for i in range(8)]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_put_many, args=(root, i, blobs[i % 3:] + blobs[: i % 3], out))
             for i in range(6)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    store = Store(root)
    for _, digests in results:
        for digest in digests:
            assert store.verify_blob(digest) > 0
    assert len(os.listdir(os.path.join(root, "blobs", "sha256"))) == len(blobs)
    assert os.listdir(os.path.join(root, "tmp")) == []


# ----------------------------------------------------------------- locks


def _hold_lock(path: str, ready, release) -> None:
    with FileLock(path).exclusive():
        ready.set()
        release.wait(30)


def test_file_lock_excludes_other_processes_and_times_out(tmp_path):
    path = str(tmp_path / "locks" / "x.lock")
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(path, ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        lock = FileLock(path)
        with pytest.raises(LockTimeout):
            with lock.exclusive(timeout=0.1):
                pass
        with pytest.raises(LockTimeout):
            with lock.shared(timeout=0.1):
                pass
    finally:
        release.set()
        proc.join(30)
    with FileLock(path).shared(timeout=5), FileLock(path).shared(timeout=5):
        pass  # readers coexist


def test_forked_child_does_not_keep_parents_lock(tmp_path):
    lock = FileLock(tmp_path / "f.lock")
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    with lock.exclusive():
        child = ctx.Process(target=stop.wait, args=(30,))
        child.start()  # inherits the locked descriptor, and must drop it
    try:
        with lock.exclusive(timeout=2):
            pass
    finally:
        stop.set()
        child.join(30)


def test_file_lock_reentrant_and_serializes_threads(tmp_path):
    lock = FileLock(tmp_path / "t.lock")
    with lock.exclusive():
        with lock.exclusive(), lock.shared():  # nested in the owning thread: no deadlock
            assert lock.held_exclusively()
    inside, overlaps = [0], []

    def work():
        for _ in range(50):
            with lock.exclusive():
                inside[0] += 1
                overlaps.append(inside[0])
                time.sleep(0.0005)
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlaps) == 1 and len(overlaps) == 200


# ------------------------------------------------------------ records/tags


def test_add_image_and_resolve_forms(store):
    record, descs = _make_image(store, "a", tags=["busybox", "quay.io/x/y:1"])
    assert record.id == record.config_digest
    assert record.repo_tags == ["busybox:latest", "quay.io/x/y:1"]
    assert record.config.config.cmd == ["/bin/sh"]
    assert [layer.digest for layer in record.layers] == [d.digest for d in descs]
    hex_id = record.id[7:]
    for text in ("busybox", "busybox:latest", "docker.io/library/busybox:latest",
                 "library/busybox", "quay.io/x/y:1", record.id, hex_id, hex_id[:4],
                 hex_id[:12], "sha256:" + hex_id[:6]):
        assert store.resolve(text).id == record.id, text
    for text in ("busybox:2", "nothere", hex_id[:3], "sha256:" + "f" * 64, "Bad Name"):
        with pytest.raises(ImageNotFound):
            store.resolve(text)
    tags = json.load(open(os.path.join(store.root, "tags.json")))
    assert tags == {"docker.io/library/busybox:latest": record.id, "quay.io/x/y:1": record.id}
    assert os.path.isfile(os.path.join(store.root, "images", hex_id + ".json"))
    assert [r.id for r in store.images()] == [record.id]


def test_ambiguous_prefix(store):
    # Craft configs until two ids share a 4-digit prefix (a birthday search, ~300 tries).
    seen: dict = {}
    n = 0
    while True:
        config = ImageConfig(architecture="amd64", os="linux", rootfs=RootFS(diff_ids=[]),
                             config=ContainerConfig(labels={"n": str(n)}))
        digest = sha256_digest(config.to_json())
        if digest[7:11] in seen:
            break
        seen[digest[7:11]] = config
        n += 1
    for cfg in (seen[digest[7:11]], config):
        data = cfg.to_json()
        store.add_image(build_manifest(sha256_digest(data), len(data), []), data)
    with pytest.raises(InvalidArgument, match="ambiguous"):
        store.resolve(digest[7:11])


def test_add_image_validates(store):
    config = ImageConfig(architecture="amd64", os="linux",
                         rootfs=RootFS(diff_ids=[sha256_digest(b"x")])).to_json()
    missing = Descriptor(mt.OCI_LAYER, sha256_digest(b"x"), 1)
    with pytest.raises(NotFound):
        store.add_image(build_manifest(sha256_digest(config), len(config), [missing]), config)
    store.put_blob(b"x")
    with pytest.raises(DigestMismatch):
        store.add_image(build_manifest(sha256_digest(b"other"), 5, [missing]), config)
    with pytest.raises(InvalidArgument):
        store.add_image(build_manifest(sha256_digest(config), len(config), []), config)
    assert store.images() == []
    record = store.add_image(build_manifest(sha256_digest(config), len(config), [missing]),
                             config, tags=["t"], repo_digest="example.com/t")
    assert record.repo_digests == [f"example.com/t@{record.manifest_digest}"]
    assert store.resolve(f"example.com/t@{record.manifest_digest}").id == record.id


def test_tag_moves_and_untag(store):
    a, _ = _make_image(store, "a", tags=["app:1"])
    b, _ = _make_image(store, "b")
    assert store.resolve("app:1").id == a.id
    store.tag(b.id[7:15], "app:1")
    assert store.resolve("app:1").id == b.id
    assert store.resolve(a.id).repo_tags == []
    assert store.resolve(b.id).repo_tags == ["app:1"]
    assert store.untag("app:1") == b.id
    with pytest.raises(ImageNotFound):
        store.untag("app:1")
    with pytest.raises(InvalidArgument):
        store.tag(a.id, "app@sha256:" + "a" * 64)


def test_remove_image_semantics(store):
    record, _ = _make_image(store, "a", tags=["one", "two"])
    with pytest.raises(Conflict):  # by id, several tags
        store.remove_image(record.id)
    assert store.remove_image("one") == [{"Untagged": "one:latest"}]
    with pytest.raises(Conflict):  # last tag, used by a container
        store.remove_image("two", in_use={record.id})
    with pytest.raises(Conflict):
        store.remove_image("two", in_use=lambda image_id: image_id == record.id)
    result = store.remove_image("two", in_use=lambda image_id: False)
    assert result == [{"Untagged": "two:latest"}, {"Deleted": record.id}]
    with pytest.raises(ImageNotFound):
        store.resolve(record.id)
    other, _ = _make_image(store, "b", tags=["x", "y"])
    result = store.remove_image(other.id[7:19], force=True, in_use={other.id})
    assert result[-1] == {"Deleted": other.id} and len(result) == 3
    assert store.images() == []


def _add_and_tag(root: str, i: int, out) -> None:
    try:
        store = Store(root)
        record, _ = _make_image(store, f"p{i}", tags=[f"mine:{i}"])
        for n in range(10):
            store.tag(record.id, f"many:{i}-{n}")
            store.tag(record.id, "common")
        out.put(("ok", record.id))
    except Exception as exc:  # reported to the parent, which fails the test
        out.put(("error", repr(exc)))


def test_concurrent_metadata_writes_lose_nothing(tmp_path):
    root = str(tmp_path / "store")
    Store(root)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_add_and_tag, args=(root, i, out)) for i in range(5)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert {r[0] for r in results} == {"ok"}, results
    store = Store(root)
    ids = {r[1] for r in results}
    assert {r.id for r in store.images()} == ids
    for i in range(5):
        record = store.resolve(f"mine:{i}")
        assert sorted(t for t in record.repo_tags if t.startswith("many:")) == sorted(
            f"many:{i}-{n}" for n in range(10))
    assert store.resolve("common").id in ids
    assert os.listdir(os.path.join(root, "tmp")) == []


def test_gc_frees_unreferenced_and_keeps_pinned(store):
    keep, keep_descs = _make_image(store, "keep", tags=["keep"], layers=2)
    drop, drop_descs = _make_image(store, "drop", tags=["drop"])
    pinned, pinned_descs = _make_image(store, "pinned")
    stray, _ = store.put_blob(b"stray")
    with open(os.path.join(store.root, "tmp", "debris"), "wb") as f:
        f.write(b"left by a crash")
    store.remove_image("drop")
    store.remove_image(pinned.id)
    freed = store.gc(keep_blobs={pinned_descs[0].digest})
    assert freed > 0
    assert not store.has_blob(stray)
    assert not store.has_blob(drop.manifest_digest) and not store.has_blob(drop.config_digest)
    assert not store.has_blob(drop_descs[0].digest)
    assert store.has_blob(pinned_descs[0].digest)
    for digest in [keep.manifest_digest, keep.config_digest] + [d.digest for d in keep_descs]:
        assert store.verify_blob(digest)
    assert os.listdir(os.path.join(store.root, "tmp")) == []
    assert store.resolve("keep").id == keep.id
    assert store.gc(keep_blobs={pinned_descs[0].digest}) == 0


def test_gc_waits_for_ingest(store):
    started, finished = threading.Event(), []

    def collect():
        started.set()
        finished.append(store.gc())

    with store.ingest():
        digest, _ = store.put_blob(b"not yet referenced")
        t = threading.Thread(target=collect)
        t.start()
        started.wait()
        time.sleep(0.2)
        assert finished == [] and store.has_blob(digest)
        with pytest.raises(Conflict):
            store.gc()  # same thread inside ingest would deadlock: refused
    t.join(10)
    assert finished and not store.has_blob(digest)


# ----------------------------------------------------------------- layers


def _busybox_rootfs(path) -> str:
    os.makedirs(os.path.join(path, "bin"))
    shutil.copy2(BUSYBOX, os.path.join(path, "bin", "busybox"))
    for applet in ("sh", "ls", "cat", "echo"):
        os.symlink("busybox", os.path.join(path, "bin", applet))
    os.makedirs(os.path.join(path, "etc"))
    with open(os.path.join(path, "etc", "hostname"), "w") as f:
        f.write("box\n")
    return str(path)


def _tar_of_dir(path: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(path, arcname=".")
    return buf.getvalue()


def _ensure_in_process(root: str, diff_id: str, digest: str, out) -> None:
    try:
        path = Store(root).ensure_layer(diff_id, digest, mt.OCI_LAYER_GZIP)
        out.put(("ok", path))
    except Exception as exc:  # reported to the parent, which fails the test
        out.put(("error", repr(exc)))


@needs_root
@pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static is not installed")
def test_ensure_layer_concurrent_processes(tmp_path):
    root = str(tmp_path / "store")
    store = Store(root)
    raw = _tar_of_dir(_busybox_rootfs(tmp_path / "rootfs"))
    digest, _ = store.put_blob(gzip.compress(raw, 1))
    diff_id = sha256_digest(raw)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_process, args=(root, diff_id, digest, out))
             for _ in range(5)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert {r[0] for r in results} == {"ok"}, results
    paths = {r[1] for r in results}
    assert len(paths) == 1
    path = paths.pop()
    assert path == store.layer_path(diff_id)
    assert os.path.islink(os.path.join(path, "bin", "sh"))
    with open(os.path.join(path, "bin", "busybox"), "rb") as f, open(BUSYBOX, "rb") as g:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(g.read()).digest()
    meta = json.load(open(os.path.join(os.path.dirname(path), "layer.json")))
    assert meta["diff_id"] == diff_id and meta["blob_digest"] == digest
    assert os.listdir(os.path.join(root, "layers")) == [diff_id[7:]]
    assert os.listdir(os.path.join(root, "tmp")) == []


@needs_root
def test_ensure_layer_wrong_diff_id_keeps_nothing(store):
    raw = _layer_tar({"a.txt": b"a"})
    digest, _ = store.put_blob(raw)
    wrong = sha256_digest(b"not the layer")
    with pytest.raises(DigestMismatch):
        store.ensure_layer(wrong, digest, mt.OCI_LAYER)
    assert not store.has_layer(wrong)
    assert os.listdir(os.path.join(store.root, "layers")) == []
    assert os.listdir(os.path.join(store.root, "tmp")) == []
    with pytest.raises(NotFound):
        store.layer_path(wrong)


@needs_root
def test_ensure_layer_detects_corrupt_blob(store):
    raw = _layer_tar({"a.txt": b"a" * 1000})
    digest, _ = store.put_blob(raw)
    path = store.blob_path(digest)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(600)
        f.write(b"b")
    with pytest.raises(DigestMismatch):
        store.ensure_layer(sha256_digest(raw), digest, mt.OCI_LAYER)
    assert os.listdir(os.path.join(store.root, "layers")) == []


@needs_root
def test_lowerdirs_top_first_and_gc_keeps_pinned_layers(store):
    record, descs = _make_image(store, "multi", tags=["multi"], layers=3)
    dirs = store.lowerdirs("multi")
    assert dirs == [store.layer_path(d) for d in reversed(record.diff_ids)]
    assert os.path.isfile(os.path.join(dirs[0], "multi-2.txt"))
    assert os.path.isfile(os.path.join(dirs[-1], "multi-0.txt"))
    store.remove_image("multi")
    store.gc(keep_layers={record.diff_ids[0]})
    assert store.has_layer(record.diff_ids[0])
    assert not store.has_layer(record.diff_ids[1])
    assert store.gc() > 0
    assert os.listdir(os.path.join(store.root, "layers")) == []


# ------------------------------------------------------------ imageconfig


def test_imageconfig_round_trip_keeps_unknown_fields():
    docker = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Hostname": "", "Env": ["PATH=/bin"], "Cmd": ["sh"], "Entrypoint": None,
                   "ExposedPorts": {"80/tcp": {}}, "Labels": None, "ArgsEscaped": True},
        "container": "abc", "docker_version": "24.0",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(b"l")]},
        "history": [{"created_by": "ADD x", "empty_layer": False}, {"empty_layer": True}],
    }).encode()
    config = ImageConfig.from_json(docker)
    assert config.config.cmd == ["sh"] and config.config.entrypoint is None
    assert config.config.exposed_ports == {"80/tcp": {}}
    assert config.extra == {"container": "abc", "docker_version": "24.0"}
    assert config.history[1].empty_layer
    again = ImageConfig.from_json(config.to_json())
    assert again == config
    out = json.loads(config.to_json())
    assert out["config"]["Hostname"] == "" and out["config"]["ArgsEscaped"] is True
    assert config.to_json() == json.dumps(out, sort_keys=True, separators=(",", ":")).encode()
    changed = config.config.apply({"Cmd": ["echo", "hi"], "working_dir": "/w", "Env": None})
    assert (changed.cmd, changed.working_dir, changed.env) == (["echo", "hi"], "/w", [])
    with pytest.raises(InvalidArgument):
        config.config.apply({"Nope": 1})
    with pytest.raises(InvalidArgument):
        ImageConfig.from_json(b"[1]")


def test_build_manifest_media_families():
    layer = Descriptor(mt.OCI_LAYER_GZIP, sha256_digest(b"l"), 1)
    zstd = Descriptor(mt.OCI_LAYER_ZSTD, sha256_digest(b"z"), 1)
    docker = Manifest.from_json(build_manifest(sha256_digest(b"c"), 1, [layer, zstd], "docker"))
    assert docker.media_type == mt.DOCKER_MANIFEST
    assert docker.config.media_type == mt.DOCKER_CONFIG
    assert [d.media_type for d in docker.layers] == [mt.DOCKER_LAYER_GZIP, mt.OCI_LAYER_ZSTD]
    oci = Manifest.from_json(build_manifest(sha256_digest(b"c"), 1, docker.layers, "oci"))
    assert oci.media_type == mt.OCI_MANIFEST
    assert [d.media_type for d in oci.layers] == [mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD]
    with pytest.raises(InvalidArgument):
        Manifest.from_json(b'{"schemaVersion":2,"manifests":[]}')
