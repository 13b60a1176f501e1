"""docker-archive and OCI layout interoperability with podman and skopeo, import/export."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading

import pytest

from contain.errors import DigestMismatch, InvalidArgument, LayerError
from contain.oci import archive
from contain.storage.store import Store

BUSYBOX = "/bin/busybox"
SKOPEO = shutil.which("skopeo")
PODMAN = shutil.which("podman")

pytestmark = [
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="unpacked layers hold 0/0 whiteout devices"),
]
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
needs_podman = pytest.mark.skipif(PODMAN is None, reason="podman is not installed")


def _busybox_rootfs(path) -> str:
    """A tiny rootfs: static busybox plus a few applet links (never 'busybox' itself)."""
    os.makedirs(os.path.join(path, "bin"))
    shutil.copy2(BUSYBOX, os.path.join(path, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in [a for a in applets if a != "busybox"][:20] + ["sh", "ls", "echo", "cat"]:
        link = os.path.join(path, "bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    for d in ("etc", "tmp", "root"):
        os.makedirs(os.path.join(path, d))
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    return str(path)


def _skopeo(*args: str) -> str:
    proc = subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


@pytest.fixture
def image(store, tmp_path):
    rootfs = _busybox_rootfs(tmp_path / "rootfs")
    return archive.import_rootfs(store, rootfs, tag="contain-test/busybox:1",
                                 config_changes={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})


def _no_records(store: Store) -> None:
    assert store.images() == []
    assert not os.path.exists(os.path.join(store.root, "tags.json")) or \
        json.load(open(os.path.join(store.root, "tags.json"))) == {}


# ------------------------------------------------------------------ import


def test_import_rootfs_directory(store, image):
    assert image.repo_tags == ["contain-test/busybox:1"]
    assert image.config.config.cmd == ["/bin/sh"]
    assert image.config.os == "linux" and image.config.architecture
    assert len(image.layers) == 1 and image.layers[0].media_type.endswith("+gzip")
    (lower,) = store.lowerdirs(image.id)
    assert os.path.islink(os.path.join(lower, "bin", "sh"))
    assert os.stat(os.path.join(lower, "tmp")).st_mode & 0o7777 == 0o1777


@pytest.mark.parametrize("compress", [False, True])
def test_import_rootfs_tarball(store, tmp_path, compress):
    rootfs = _busybox_rootfs(tmp_path / "rootfs")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(rootfs, arcname=".")
    raw = buf.getvalue()
    data = gzip.compress(raw) if compress else raw
    record = archive.import_rootfs(store, io.BytesIO(data), tag="imported")
    assert record.diff_ids == ["sha256:" + hashlib.sha256(raw).hexdigest()]
    assert record.layers[0].digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert os.path.isfile(os.path.join(store.lowerdirs("imported")[0], "bin", "busybox"))


def test_import_hostile_tarball_refused(store):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../evil")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(LayerError):
        archive.import_rootfs(store, io.BytesIO(buf.getvalue()), tag="evil")
    _no_records(store)
    assert os.listdir(os.path.join(store.root, "layers")) == []


def test_export_directory(tmp_path):
    rootfs = _busybox_rootfs(tmp_path / "rootfs")
    out = io.BytesIO()
    archive.export_directory(rootfs, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        names = {m.name.lstrip("./").rstrip("/"): m for m in tar.getmembers()}
    assert names["bin/busybox"].isreg() and names["bin/sh"].issym()
    assert names["bin/busybox"].size == os.path.getsize(BUSYBOX)


# ------------------------------------------------------------ docker-archive


@needs_podman
@needs_skopeo
def test_docker_archive_accepted_by_podman_and_skopeo(store, image, tmp_path, podman):
    path = tmp_path / "image.tar"
    archive.save(store, "contain-test/busybox:1", path)
    with tarfile.open(path) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
        layer = tar.extractfile(image.diff_ids[0][7:] + ".tar").read()
    assert "repositories" in names
    assert manifest == [{"Config": image.id[7:] + ".json",
                         "RepoTags": ["docker.io/contain-test/busybox:1"],
                         "Layers": [image.diff_ids[0][7:] + ".tar"]}]
    assert "sha256:" + hashlib.sha256(layer).hexdigest() == image.diff_ids[0]

    out = podman("load", "-i", str(path))
    assert "contain-test/busybox:1" in out
    inspect = json.loads(podman("image", "inspect", "docker.io/contain-test/busybox:1"))
    assert "docker.io/contain-test/busybox:1" in inspect[0]["RepoTags"]
    assert inspect[0]["RootFS"]["Layers"] == image.diff_ids
    assert inspect[0]["Id"] == image.id[7:]

    _skopeo("copy", f"docker-archive:{path}", f"oci:{tmp_path / 'oci'}:copied")
    info = json.loads(_skopeo("inspect", f"oci:{tmp_path / 'oci'}:copied"))
    assert info["Layers"]


def test_docker_archive_round_trip_several_images(store, image, tmp_path):
    second = archive.import_rootfs(store, _busybox_rootfs(tmp_path / "r2"), tag="second:v2",
                                   config_changes={"Cmd": ["/bin/ls"]})
    path = tmp_path / "two.tar"
    archive.save(store, ["contain-test/busybox:1", "second:v2", image.id], path)
    other = Store(tmp_path / "other")
    loaded = archive.load(other, path)
    assert sorted(r.id for r in loaded) == sorted([image.id, second.id])
    by_id = {r.id: r for r in loaded}
    assert by_id[image.id].repo_tags == ["contain-test/busybox:1"]
    assert by_id[second.id].repo_tags == ["second:v2"]
    assert by_id[image.id].diff_ids == image.diff_ids
    assert other.resolve("second:v2").config.config.cmd == ["/bin/ls"]
    assert os.path.isfile(os.path.join(other.lowerdirs("second:v2")[0], "bin", "busybox"))


def test_load_from_stream_and_gzip(store, image, tmp_path):
    raw = io.BytesIO()
    archive.save(store, image.id, raw)
    assert json.load(tarfile.open(fileobj=io.BytesIO(raw.getvalue())).extractfile(
        "manifest.json"))[0]["RepoTags"] is None  # saved by id: untagged, as Docker does
    read_fd, write_fd = os.pipe()
    data = gzip.compress(raw.getvalue(), 1)

    def feed():
        with os.fdopen(write_fd, "wb") as w:
            w.write(data)

    t = threading.Thread(target=feed)
    t.start()
    other = Store(tmp_path / "other")
    with os.fdopen(read_fd, "rb") as r:
        (loaded,) = archive.load(other, r)
    t.join()
    assert loaded.id == image.id and loaded.repo_tags == []


@needs_podman
def test_load_podman_saved_archives(store, image, tmp_path, podman):
    path = tmp_path / "ours.tar"
    archive.save(store, "contain-test/busybox:1", path)
    podman("load", "-i", str(path))
    podman("tag", "docker.io/contain-test/busybox:1", "localhost/renamed:2")
    for fmt in ("docker-archive", "oci-archive", "oci-dir"):
        out = tmp_path / f"podman-{fmt}"
        podman("save", "--format", fmt, "-o", str(out), "localhost/renamed:2")
        other = Store(tmp_path / f"store-{fmt}")
        (loaded,) = archive.load(other, out)
        assert loaded.diff_ids == image.diff_ids, fmt
        assert other.resolve("localhost/renamed:2").id == loaded.id, fmt


# ---------------------------------------------------------------- OCI layout


@needs_skopeo
def test_oci_dir_and_archive_read_by_skopeo(store, image, tmp_path):
    layout = tmp_path / "layout"
    archive.save(store, "contain-test/busybox:1", layout, format="oci-dir")
    index = json.load(open(layout / "index.json"))
    assert index["manifests"][0]["digest"] == image.manifest_digest
    info = json.loads(_skopeo("inspect", f"oci:{layout}"))
    assert info["Digest"] == image.manifest_digest
    assert info["Env"] == ["PATH=/bin"]
    for blob in os.listdir(layout / "blobs" / "sha256"):
        data = open(layout / "blobs" / "sha256" / blob, "rb").read()
        assert hashlib.sha256(data).hexdigest() == blob

    tar_path = tmp_path / "layout.tar"
    archive.save(store, "contain-test/busybox:1", tar_path, format="oci-archive")
    info = json.loads(_skopeo("inspect", f"oci-archive:{tar_path}"))
    assert info["Digest"] == image.manifest_digest
    other = Store(tmp_path / "other")
    (loaded,) = archive.load(other, tar_path)
    assert (loaded.id, loaded.manifest_digest) == (image.id, image.manifest_digest)
    assert loaded.repo_tags == ["contain-test/busybox:1"]


@needs_skopeo
def test_skopeo_copies_load_with_matching_diff_ids(store, image, tmp_path):
    layout = tmp_path / "ours"
    archive.save(store, image.id, layout, format="oci-dir")
    oci_out, docker_out = tmp_path / "sk-oci", tmp_path / "sk-docker.tar"
    _skopeo("copy", f"oci:{layout}", f"oci:{oci_out}:v1")
    _skopeo("copy", f"oci:{layout}", f"docker-archive:{docker_out}:example.com/bb:v1")
    from_oci = Store(tmp_path / "s1")
    (a,) = archive.load(from_oci, oci_out)
    assert a.repo_tags == []  # a bare ref.name ("v1") names no repository
    from_docker = Store(tmp_path / "s2")
    (b,) = archive.load(from_docker, docker_out)
    assert b.repo_tags == ["example.com/bb:v1"]
    assert a.diff_ids == b.diff_ids == image.diff_ids
    assert a.config.config.cmd == b.config.config.cmd == ["/bin/sh"]


# ------------------------------------------------------------------ hostile


def _tar_bytes(members: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_hostile_member_path_refused(store, image, tmp_path):
    raw = io.BytesIO()
    archive.save(store, "contain-test/busybox:1", raw)
    with tarfile.open(fileobj=io.BytesIO(raw.getvalue())) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}
    members["../evil"] = b"evil"
    other = Store(tmp_path / "other")
    with pytest.raises(InvalidArgument, match="leaves the archive"):
        archive.load(other, io.BytesIO(_tar_bytes(members)))
    _no_records(other)
    # A manifest.json pointing outside the archive directory is refused as well.
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    for name, data in members.items():
        if name != "../evil":
            os.makedirs(extracted / os.path.dirname(name), exist_ok=True)
            (extracted / name).write_bytes(data)
    manifest = json.loads(members["manifest.json"])
    manifest[0]["Layers"] = ["../" + manifest[0]["Layers"][0]]
    (extracted / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidArgument):
        archive.load(other, extracted)
    _no_records(other)


def test_tampered_blobs_refused(store, image, tmp_path):
    layout = tmp_path / "layout"
    archive.save(store, "contain-test/busybox:1", layout, format="oci-dir")
    layer = layout / "blobs" / "sha256" / image.layers[0].digest[7:]
    good = layer.read_bytes()
    layer.chmod(0o644)
    layer.write_bytes(good[:-10] + b"0123456789")
    other = Store(tmp_path / "other")
    with pytest.raises(DigestMismatch):
        archive.load(other, layout)
    _no_records(other)
    assert not other.has_blob(image.layers[0].digest)

    # docker-archive: a layer whose content is not the config's diff id.
    raw = io.BytesIO()
    archive.save(store, "contain-test/busybox:1", raw)
    with tarfile.open(fileobj=io.BytesIO(raw.getvalue())) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}
    name = image.diff_ids[0][7:] + ".tar"
    members[name] = members[name][:-1024] + b"\0" * 1024 + b"x" * 512
    with pytest.raises(DigestMismatch):
        archive.load(other, io.BytesIO(_tar_bytes(members)))
    _no_records(other)
    # ...and a config whose name claims another digest.
    members.pop(name)
    config_name = image.id[7:] + ".json"
    members[config_name] = members[config_name].replace(b"/bin/sh", b"/bin/ls")
    with pytest.raises(DigestMismatch):
        archive.load(other, io.BytesIO(_tar_bytes(members)))
    _no_records(other)


def test_not_an_archive(store):
    with pytest.raises(InvalidArgument):
        archive.load(store, io.BytesIO(b"definitely not a tar" * 100))
    with pytest.raises(InvalidArgument):
        archive.load(store, io.BytesIO(_tar_bytes({"hello.txt": b"hi"})))
    with pytest.raises(InvalidArgument):
        archive.save(store, [], io.BytesIO())
