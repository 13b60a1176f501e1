"""Pull, push, search, login and archives through _imageops, against a real docker-registry
on loopback, cross-checked with skopeo."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from contain import _imageops
from contain._imageops import ProgressEvent, ProgressRenderer
from contain._root import get_root
from contain.errors import AuthenticationError, DigestMismatch, ImageNotFound
from contain.oci import archive
from contain.oci import mediatypes as mt
from contain.oci.imageconfig import (
    Descriptor,
    HistoryEntry,
    ImageConfig,
    RootFS,
    build_manifest,
    host_platform,
)
from contain.storage.unpack import pack_directory

from registry_server import RegistryServer

pytestmark = pytest.mark.skipif(
    not (shutil.which("docker-registry") and shutil.which("skopeo") and shutil.which("htpasswd")),
    reason="needs docker-registry, skopeo and htpasswd (apache2-utils)",
)

USER, PASSWORD = "alice", "s3cret pass"


@pytest.fixture(scope="session")
def registry():
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def auth_registry():
    with RegistryServer(users={USER: PASSWORD}) as server:
        yield server


@pytest.fixture(autouse=True)
def docker_config(tmp_path, monkeypatch):
    """Keep credentials away from the real ~/.docker/config.json."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


@pytest.fixture
def fresh_root(tmp_path):
    return str(tmp_path / "root")


@pytest.fixture(scope="session")
def pushed(registry, croot, busybox):
    """The busybox image pushed (gzip) to busybox:gz; its manifest digest."""
    return _imageops.push(croot, busybox.id, f"{registry.host}/busybox:gz", progress=_quiet)


def _quiet(event: ProgressEvent) -> None:
    pass


def _raw_manifest(host: str, ref: str) -> dict:
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{host}/{ref}"], check=True, capture_output=True)
    return json.loads(out.stdout)


def _make_image(store, layers: list[dict[str, bytes]], tag: str):
    """An image whose layers hold the given files, each layer packed with pack_directory."""
    descriptors, diff_ids = [], []
    for index, files in enumerate(layers):
        src = os.path.join(store.root, "tmp", f"src-{secrets.token_hex(4)}")
        for name, data in files.items():
            path = os.path.join(src, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        with store.new_blob() as writer:
            stats = pack_directory(src, writer, compression="gzip")
            digest, size = writer.commit()
        shutil.rmtree(src)
        descriptors.append(Descriptor(mt.OCI_LAYER_GZIP, digest, size))
        diff_ids.append(stats.diff_id)
    platform = host_platform()
    config = ImageConfig(architecture=platform["architecture"], os="linux",
                         created="2024-01-01T00:00:00Z", rootfs=RootFS(diff_ids=diff_ids),
                         history=[HistoryEntry(created_by=f"layer {i}")
                                  for i in range(len(layers))])
    config_bytes = config.to_json()
    config_digest, config_size = store.put_blob(config_bytes)
    manifest = build_manifest(config_digest, config_size, descriptors, media="oci")
    return store.add_image(manifest, config_bytes, tags=[tag])


def _layer_files(store, record) -> set[str]:
    found: set[str] = set()
    for lower in store.lowerdirs(record.id):
        for dirpath, _, filenames in os.walk(lower):
            found.update(os.path.relpath(os.path.join(dirpath, n), lower) for n in filenames)
    return found


# --------------------------------------------------------------------------- push and pull


def test_push_then_pull_gzip(registry, croot, busybox, pushed, fresh_root):
    manifest = _raw_manifest(registry.host, "busybox:gz")
    assert [layer["mediaType"] for layer in manifest["layers"]] == [mt.OCI_LAYER_GZIP]
    # The stored manifest went out byte for byte, and the push is remembered locally.
    local = get_root(croot).store.resolve(busybox.id)
    assert f"{registry.host}/busybox@{pushed}" in local.repo_digests

    ref = f"{registry.host}/busybox:gz"
    record = _imageops.pull(fresh_root, ref, progress=_quiet)
    assert record.repo_tags == [ref]
    assert record.repo_digests == [f"{registry.host}/busybox@{pushed}"]
    assert record.manifest_digest == pushed
    assert record.id == busybox.id  # same config, same image id
    assert record.config.config.cmd == ["sh"]
    assert record.diff_ids == busybox.image_config.rootfs.diff_ids
    store = get_root(fresh_root).store
    (lower,) = store.lowerdirs(ref)
    assert os.path.isfile(os.path.join(lower, "bin", "busybox"))
    assert os.path.islink(os.path.join(lower, "bin", "sh")) or \
        os.path.isfile(os.path.join(lower, "bin", "sh"))


def test_push_zstd_recompresses_and_pulls_back(registry, croot, busybox, fresh_root):
    ref = f"{registry.host}/busybox:zstd"
    digest = _imageops.push(croot, busybox.id, ref, compression="zstd", progress=_quiet)
    manifest = _raw_manifest(registry.host, "busybox:zstd")
    assert manifest["mediaType"] == mt.OCI_MANIFEST
    assert [layer["mediaType"] for layer in manifest["layers"]] == [mt.OCI_LAYER_ZSTD]
    assert manifest["layers"][0]["digest"] != busybox.layers[0].digest

    record = _imageops.pull(fresh_root, ref, progress=_quiet)
    assert record.manifest_digest == digest
    assert record.diff_ids == busybox.image_config.rootfs.diff_ids
    assert record.layers[0].media_type == mt.OCI_LAYER_ZSTD
    assert "bin/busybox" in _layer_files(get_root(fresh_root).store, record)
    # The local image keeps its gzip layer: a recompressed push is not recorded on it.
    assert get_root(croot).store.resolve(busybox.id).layers[0].media_type == mt.OCI_LAYER_GZIP


@pytest.mark.parametrize("compression, manifest_format", [("gzip", "v2s2"), ("zstd", "oci")])
def test_pull_images_pushed_by_skopeo(registry, croot, tmp_path, fresh_root,
                                      compression, manifest_format):
    # Content of its own: skopeo's blob-info cache would otherwise substitute a gzip blob it
    # pushed earlier for the zstd one asked for.
    store = get_root(croot).store
    source_image = _make_image(store, [{"bin/unique": secrets.token_bytes(1 << 16)},
                                       {"etc/name": compression.encode()}],
                               f"skopeo-{compression}:test")
    layout = tmp_path / "layout"
    archive.save(store, f"skopeo-{compression}:test", str(layout), format="oci-dir")
    source = f"oci:{layout}"
    if compression == "zstd":
        # skopeo 1.9 keeps compressed layers as they are; it compresses with the requested
        # format only what it finds uncompressed.
        plain = tmp_path / "plain"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-decompress", source,
                        f"dir:{plain}"], check=True)
        source = f"dir:{plain}"
    ref = f"{registry.host}/skopeo/image:{compression}"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--format",
                    manifest_format, "--dest-compress-format", compression,
                    source, f"docker://{ref}"], check=True)
    manifest = _raw_manifest(registry.host, f"skopeo/image:{compression}")
    wanted = mt.OCI_LAYER_ZSTD if compression == "zstd" else mt.DOCKER_LAYER_GZIP
    assert [layer["mediaType"] for layer in manifest["layers"]] == [wanted, wanted]

    record = _imageops.pull(fresh_root, ref, progress=_quiet)
    assert record.diff_ids == source_image.diff_ids
    assert [layer.media_type for layer in record.layers] == [wanted, wanted]
    assert record.manifest_media_type == manifest["mediaType"]
    assert {"bin/unique", "etc/name"} <= _layer_files(get_root(fresh_root).store, record)


def test_second_pull_downloads_nothing(registry, pushed, fresh_root):
    ref = f"{registry.host}/busybox:gz"
    first: list[ProgressEvent] = []
    second: list[ProgressEvent] = []
    _imageops.pull(fresh_root, ref, progress=first.append)
    assert any(e.action == "Downloading" for e in first)
    blobs = sorted(os.listdir(os.path.join(fresh_root, "blobs", "sha256")))
    _imageops.pull(fresh_root, ref, progress=second.append)
    layer_actions = [e.action for e in second if e.id]
    assert "Downloading" not in layer_actions
    assert layer_actions == ["Pulling fs layer", "Already exists"]
    assert sorted(os.listdir(os.path.join(fresh_root, "blobs", "sha256"))) == blobs


def test_push_mounts_from_the_repository_it_was_pulled_from(registry, pushed, fresh_root):
    _imageops.pull(fresh_root, f"{registry.host}/busybox:gz", progress=_quiet)
    events: list[ProgressEvent] = []
    target = f"{registry.host}/mounted/busybox:1"
    assert _imageops.push(fresh_root, f"{registry.host}/busybox:gz", target,
                          progress=events.append) == pushed
    assert [e.action for e in events if e.id][-1] == "Mounted from busybox"
    # Pushing again finds everything there.
    events.clear()
    _imageops.push(fresh_root, f"{registry.host}/busybox:gz", target, progress=events.append)
    assert [e.action for e in events if e.id][-1] == "Layer already exists"


def test_parallel_pull_of_three_layers_reports_in_order(registry, croot, fresh_root):
    store = get_root(croot).store
    layers = [{f"layer{i}/data": secrets.token_bytes(3 << 20), f"layer{i}/name": b"%d" % i}
              for i in range(3)]
    source = _make_image(store, layers, "three-layers:test")
    ref = f"{registry.host}/three-layers:1"
    _imageops.push(croot, "three-layers:test", ref, progress=_quiet)

    events: list[tuple[str, ProgressEvent]] = []
    record = _imageops.pull(fresh_root, ref,
                            progress=lambda e: events.append((threading.current_thread().name, e)))
    assert record.diff_ids == source.diff_ids
    files = _layer_files(get_root(fresh_root).store, record)
    assert {f"layer{i}/{n}" for i in range(3) for n in ("data", "name")} <= files

    per_layer: dict[str, list[ProgressEvent]] = defaultdict(list)
    for _, event in events:
        if event.id:
            per_layer[event.id].append(event)
    assert set(per_layer) == {layer.digest[7:19] for layer in record.layers}
    for layer_events in per_layer.values():
        actions = [e.action for e in layer_events]
        downloads = [e.current for e in layer_events if e.action == "Downloading"]
        assert actions == (["Pulling fs layer"] + ["Downloading"] * len(downloads)
                           + ["Download complete", "Extracting", "Pull complete"])
        assert downloads == sorted(downloads) and downloads[-1] == layer_events[0].total
    workers = {name for name, e in events if e.action == "Downloading"}
    assert len(workers) >= 2, "layers were not downloaded in parallel"


def test_corrupt_blob_in_registry_is_refused_and_nothing_recorded(registry, croot, fresh_root):
    store = get_root(croot).store
    source = _make_image(store, [{"only/file": secrets.token_bytes(1 << 16)}], "corrupt:test")
    ref = f"{registry.host}/corrupt:1"
    _imageops.push(croot, "corrupt:test", ref, progress=_quiet)
    hex_digest = source.layers[0].digest[7:]
    data = Path(registry.directory, "data", "docker", "registry", "v2", "blobs", "sha256",
                hex_digest[:2], hex_digest, "data")
    content = bytearray(data.read_bytes())
    content[-100] ^= 0xFF
    data.write_bytes(bytes(content))

    with pytest.raises(DigestMismatch):
        _imageops.pull(fresh_root, ref, progress=_quiet)
    fresh = get_root(fresh_root).store
    assert fresh.images() == []
    assert not fresh.has_blob(source.layers[0].digest)
    assert os.listdir(os.path.join(fresh_root, "tmp")) == []


def test_pull_of_missing_tag_is_image_not_found(registry, pushed, fresh_root):
    with pytest.raises(ImageNotFound, match="not found"):
        _imageops.pull(fresh_root, f"{registry.host}/busybox:no-such-tag", progress=_quiet)
    assert get_root(fresh_root).store.images() == []
    assert os.listdir(os.path.join(fresh_root, "blobs", "sha256")) == []


def test_search_finds_pushed_repository(registry, pushed):
    names = [r["name"] for r in _imageops.search("busy", registry=registry.host)]
    assert "busybox" in names
    prefixed = _imageops.search(f"{registry.host}/busy")
    assert [r["name"] for r in prefixed] == names


# --------------------------------------------------------------------------- auth


def test_authenticated_registry(auth_registry, croot, busybox, fresh_root):
    ref = f"{auth_registry.host}/private/busybox:1"
    with pytest.raises(AuthenticationError):
        _imageops.push(croot, busybox.id, ref, progress=_quiet)
    with pytest.raises(AuthenticationError):
        _imageops.login(auth_registry.host, USER, "wrong")

    assert _imageops.login(auth_registry.host, USER, PASSWORD) == {"Status": "Login Succeeded"}
    digest = _imageops.push(croot, busybox.id, ref, progress=_quiet)
    record = _imageops.pull(fresh_root, ref, progress=_quiet)
    assert record.manifest_digest == digest

    assert _imageops.logout(auth_registry.host) is True
    with pytest.raises(AuthenticationError):
        _imageops.pull(fresh_root, ref, progress=_quiet)
    # Explicit credentials need no login.
    again = _imageops.pull(str(Path(fresh_root).with_name("other")), ref, progress=_quiet,
                           credentials=(USER, PASSWORD))
    assert again.id == record.id


# --------------------------------------------------------------------------- archives


def test_save_and_load_round_trip(croot, busybox, tmp_path, fresh_root):
    path = tmp_path / "busybox.tar"
    _imageops.save(croot, ["busybox:test"], path)
    (record,) = _imageops.load(fresh_root, path)
    assert record.id == busybox.id
    assert record.repo_tags == ["busybox:test"]


# --------------------------------------------------------------------------- progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_renderer_draws_in_a_terminal_and_is_silent_otherwise():
    events = [ProgressEvent("abc123abc123", "Pulling fs layer", 0, 2_000_000),
              ProgressEvent("abc123abc123", "Downloading", 1_000_000, 2_000_000),
              ProgressEvent("abc123abc123", "Pull complete", 2_000_000, 2_000_000),
              ProgressEvent("", "Digest: sha256:1234")]
    terminal = _Terminal()
    renderer = ProgressRenderer(terminal, interval=0)
    assert renderer.mode == "terminal"
    for event in events:
        renderer(event)
    output = terminal.getvalue()
    assert "abc123abc123: Downloading [" + "=" * 24 + ">" in output
    assert "1MB/2MB" in output
    # Each redraw moves up over the lines drawn before and rewrites them all.
    assert output.endswith("\x1b[1A\x1b[2Kabc123abc123: Pull complete\n"
                           "\x1b[2KDigest: sha256:1234\n")

    pipe = io.StringIO()
    quiet = ProgressRenderer(pipe)
    for event in events:
        quiet(event)
    assert quiet.mode == "silent" and pipe.getvalue() == ""
