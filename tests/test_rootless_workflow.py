"""Rootless: the whole workflow as an ordinary user, as for root.

pull and load keep the image's owners, build runs RUN steps in the user
namespace, commit and push record the container's ids (not the host's), a
detached container outlives its creator and another process lists, execs,
stops and removes it, and the root filesystem driver (the kernel's overlayfs
in a user namespace, or fuse-overlayfs) is chosen, used and reported.

Root only sets the scene (see test_rootless.py: a fresh user with
/etc/subuid and /etc/subgid ranges, a registry on 127.0.0.1, images made
with real owners); everything else runs as that user through `runuser`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile

import pytest
from conftest import host_leaks, make_busybox_rootfs
from registry_server import RegistryServer
from test_rootless import _INTEGRATION, _traversable, user  # noqa: F401  (`user`: a fixture)

from contain.errors import InvalidArgument
from contain.linux import rootless

OWNED_TAG = "owned:1"
STAT = "stat -c '%n %u:%g %a'"


# ------------------------------------------------------------------ the scene
@pytest.fixture(scope="module")
def registry():
    if not (shutil.which("docker-registry") and shutil.which("skopeo")):
        pytest.skip("needs docker-registry and skopeo (scripts/setup.sh --test installs them)")
    with RegistryServer() as server:
        yield server


def _owned_rootfs(path: str) -> str:
    """busybox, plus files of a non-root owner and of root."""
    make_busybox_rootfs(path)
    os.makedirs(os.path.join(path, "data"))
    for name, owner in (("data/mine", 1000), ("rootfile", 0), ("data/nobody", 65534)):
        with open(os.path.join(path, name), "w") as f:
            f.write(name + "\n")
        os.chown(os.path.join(path, name), owner, owner)
    os.chmod(os.path.join(path, "data", "mine"), 0o640)  # not readable by the host user
    os.chown(os.path.join(path, "data"), 1000, 1000)
    return path


@pytest.fixture(scope="module")
def owned_image(tmp_path_factory, registry):
    """An image with files of uids 0, 1000 and 65534: pushed to the registry as
    test/owned:1 and saved as a docker-archive the user may read."""
    from contain import Image

    root = str(tmp_path_factory.mktemp("owner-root"))
    rootfs = _owned_rootfs(str(tmp_path_factory.mktemp("owned-rootfs")))
    img = Image.from_directory(rootfs, tag=OWNED_TAG, config={"Cmd": ["sh"]}, root=root)
    archive = os.path.join(str(tmp_path_factory.mktemp("archive")), "owned.tar")
    img.save(archive)
    os.chmod(archive, 0o644)
    restore = _traversable(archive)  # pytest's tmp dirs are 0700
    ref = f"{registry.host}/test/owned:1"
    img.push(ref, insecure=True)
    yield {"archive": archive, "ref": ref}
    for d, mode in reversed(restore):
        os.chmod(d, mode)


@pytest.fixture(scope="module")
def fuse(user):
    """fuse-overlayfs installed and /dev/fuse usable by the user (mode 0666, as
    Debian has it; this VM has no udev)."""
    if shutil.which("fuse-overlayfs") is None:
        r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "fuse-overlayfs"],
                           capture_output=True, text=True)
        if r.returncode != 0 or shutil.which("fuse-overlayfs") is None:
            pytest.skip(f"fuse-overlayfs is not installed and apt-get failed: {r.stderr[-300:]}")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse on this host (the fuse module is not loaded)")
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    os.chmod("/dev/fuse", 0o666)
    yield user
    os.chmod("/dev/fuse", mode)


def _own_root(name: str) -> str:
    """Script lines giving the test a state root of its own (CONTAIN_ROOT)."""
    return f'import os\nos.environ["CONTAIN_ROOT"] = os.path.expanduser("~/roots/{name}")\n'


def _stats(text: str) -> dict:
    """`stat -c '%n %u:%g %a'` lines as {path: "uid:gid mode"}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("/"):
            out[parts[0]] = f"{parts[1]} {parts[2]}"
    return out


def _layer_members(blob: bytes) -> dict:
    """{name: (uid, gid)} of a (gzip) layer tar."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
        return {m.name: (m.uid, m.gid) for m in tar.getmembers()}


def _pushed_layers(registry, ref: str, dest) -> list[dict]:
    """The layers of `ref` as skopeo (an independent client) fetches them."""
    layout = str(dest / "oci")
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{ref}", f"oci:{layout}:x"], check=True, capture_output=True, timeout=60)
    with open(os.path.join(layout, "index.json")) as f:
        manifest_digest = json.load(f)["manifests"][0]["digest"]

    def blob(digest: str) -> bytes:
        with open(os.path.join(layout, "blobs", "sha256", digest.split(":")[1]), "rb") as f:
            return f.read()

    manifest = json.loads(blob(manifest_digest))
    return [_layer_members(blob(layer["digest"])) for layer in manifest["layers"]]


# ---------------------------------------------------- the layer format, units
def _tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, owner, extra in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.uid, info.gid = owner
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            data = None
            if kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = extra
            elif kind == tarfile.REGTYPE:
                data = extra or b""
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def test_unpacking_for_a_user_namespace(tmp_path):
    """userns_ids: user.overlay.opaque markers, device nodes skipped, and every
    owner outside the mapping named before anything is kept."""
    from contain.storage.unpack import UnmappedOwners, unpack_layer

    layer = _tar([("d", tarfile.DIRTYPE, (0, 0), None),
                  ("d/.wh..wh..opq", tarfile.REGTYPE, (0, 0), None),
                  ("dev", tarfile.DIRTYPE, (0, 0), None),
                  ("dev/null", tarfile.CHRTYPE, (0, 0), (1, 3)),
                  ("f", tarfile.REGTYPE, (5, 6), b"x")])
    out = tmp_path / "out"
    stats = unpack_layer(io.BytesIO(layer), out, userns_ids=(10, 10))
    assert stats.skipped_devices == 1 and not os.path.lexists(out / "dev" / "null")
    assert os.getxattr(out / "d", "user.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(out / "d")
    assert (os.stat(out / "f").st_uid, os.stat(out / "f").st_gid) == (5, 6)
    bad = _tar([("a", tarfile.REGTYPE, (70000, 5), b"1"), ("b", tarfile.REGTYPE, (3, 99999), b"2"),
                ("c", tarfile.REGTYPE, (80000, 99999), b"3")])
    with pytest.raises(UnmappedOwners) as info:
        unpack_layer(io.BytesIO(bad), tmp_path / "bad", userns_ids=(65537, 65537))
    assert info.value.uids == [70000, 80000] and info.value.gids == [99999]
    assert not os.path.exists(tmp_path / "bad")
    # As root (no userns_ids), the same layer keeps its device and root's marker.
    unpack_layer(io.BytesIO(layer), tmp_path / "root")
    assert stat.S_ISCHR(os.lstat(tmp_path / "root" / "dev" / "null").st_mode)
    assert os.getxattr(tmp_path / "root" / "d", "trusted.overlay.opaque") == b"y"


def test_packing_declared_owners_and_fuse_overlayfs_markers(tmp_path):
    from contain.storage.unpack import pack_directory

    src = tmp_path / "upper"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f").write_text("x")
    os.setxattr(src / "a", "user.fuseoverlayfs.opaque", b"y")
    os.setxattr(src / "a", "user.fuseoverlayfs.origin", b"/lower/a")
    os.setxattr(src / "a" / "f", "user.kept", b"1")
    buf = io.BytesIO()
    pack_directory(src, buf, owners={"a/f": (1000, 50)})
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"a", "a/.wh..wh..opq", "a/f"}
    assert (members["a/f"].uid, members["a/f"].gid) == (1000, 50)
    assert (members["a"].uid, members["a"].gid) == (os.getuid(), os.getgid())
    assert not any("fuseoverlayfs" in k for k in members["a"].pax_headers)
    assert members["a/f"].pax_headers["SCHILY.xattr.user.kept"] == "1"


# -------------------------------------------------------------- pull and load
def test_pulled_and_loaded_images_keep_their_owners(user, owned_image):
    out = user.result(_own_root("pull") + f"""
import json, os
from contain import Container, Image
from contain._root import get_root
pulled = Image.pull({owned_image["ref"]!r}, insecure=True)
c = Container.run(pulled, ["sh", "-c", "{STAT} /data /data/mine /data/nobody /rootfile /bin/busybox; "
                              "su -s /bin/sh user -c 'cat /data/mine'"],
                  network="none")
code = c.wait(timeout=30)
logs = c.logs().decode()
c.remove()
layer = get_root().store.lowerdirs(pulled.id)[0]
host = {{n: [os.lstat(os.path.join(layer, n)).st_uid, os.lstat(os.path.join(layer, n)).st_gid]
        for n in ("data/mine", "data/nobody", "rootfile", "bin/busybox")}}
# The same image from a docker-archive, into a store of its own.
other = os.path.join(os.environ["HOME"], "other-root")
loaded = Image.load({owned_image["archive"]!r}, root=other)
c = Container.run(loaded[0], ["sh", "-c", "{STAT} /data/mine /rootfile"], network="none", root=other)
code2 = c.wait(timeout=30)
logs2 = c.logs().decode()
c.remove()
print(json.dumps({{"code": code, "logs": logs, "host": host, "code2": code2, "logs2": logs2,
                  "tags": loaded[0].tags}}))
""")
    assert out["code"] == 0, out["logs"]
    seen = _stats(out["logs"])
    assert seen == {"/data": "1000:1000 755", "/data/mine": "1000:1000 640",
                    "/data/nobody": "65534:65534 644", "/rootfile": "0:0 644",
                    "/bin/busybox": "0:0 755"}, out
    assert "data/mine" in out["logs"]  # uid 1000 inside reads its own 0640 file
    s = user.subid_start
    # On the host: container uid u is subuid_start + u - 1, uid 0 is the user.
    assert out["host"] == {"data/mine": [s + 999, s + 999], "data/nobody": [s + 65533, s + 65533],
                           "rootfile": [user.uid, user.gid], "bin/busybox": [user.uid, user.gid]}
    assert out["code2"] == 0 and _stats(out["logs2"]) == {"/data/mine": "1000:1000 640",
                                                          "/rootfile": "0:0 644"}, out
    assert out["tags"] == [OWNED_TAG]


def test_single_id_mapping_names_the_missing_range(user, owned_image):
    """Without a subordinate range only the user's own id is mapped: an image
    with other owners is refused, naming the ids, the file and the fix, and
    nothing of the layer is left."""
    out = user.result(f"""
import json, os
from contain import Image
from contain.errors import InvalidArgument
from contain.linux import rootless
root = os.path.join(os.environ["HOME"], "single-root")
store_maps = rootless.id_maps(subuid="/nonexistent", subgid="/nonexistent")
from contain._root import get_root
r = get_root(root)
r.store._id_maps = store_maps  # Root.id_maps is the store's
try:
    Image.load({owned_image["archive"]!r}, root=r)
    error = None
except InvalidArgument as e:
    error = str(e)
print(json.dumps({{"error": error, "single": store_maps.single,
                  "layers": os.listdir(os.path.join(root, "layers")),
                  "tmp": os.listdir(os.path.join(root, "tmp")),
                  "images": [i.tags for i in Image.list(root=r)]}}))
""")
    assert out["single"]
    error = out["error"]
    assert error is not None, out
    assert f"uids 1000, 65534 need a range for {user.name} in /etc/subuid" in error
    assert f"gids 1000, 65534 need a range for {user.name} in /etc/subgid" in error
    assert "usermod --add-subuids" in error
    assert out["layers"] == [] and out["tmp"] == [] and out["images"] == []


def test_removed_layers_of_subordinate_owners_are_deleted(user, owned_image):
    """gc deletes an unpacked layer whose directories subordinate ids own
    (the user alone could not)."""
    out = user.result(f"""
import json, os
from contain import Image
from contain._root import get_root
root = os.path.join(os.environ["HOME"], "gc-root")
img = Image.load({owned_image["archive"]!r}, root=root)[0]
r = get_root(root)
r.store.lowerdirs(img.id)
before = os.listdir(os.path.join(root, "layers"))
img.remove()
freed = r.store.gc()
print(json.dumps({{"before": before, "after": os.listdir(os.path.join(root, "layers")),
                  "tmp": os.listdir(os.path.join(root, "tmp")), "freed": freed}}))
""")
    assert len(out["before"]) == 1
    assert out["after"] == [] and out["tmp"] == [], out
    assert out["freed"] > 0


# ---------------------------------------------------------------------- build
def test_build_runs_its_steps_in_the_user_namespace(user):
    ctx = os.path.join(user.home, "ctx")
    os.makedirs(ctx)
    with open(os.path.join(ctx, "hello.txt"), "w") as f:
        f.write("hello\n")
    with tarfile.open(os.path.join(ctx, "bundle.tar"), "w") as tar:
        info = tarfile.TarInfo("bundled/file")
        info.size, info.uid, info.gid, info.mode = 3, 1000, 50, 0o600
        tar.addfile(info, io.BytesIO(b"in\n"))
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write("FROM busybox:rootless\n"
                "RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && "
                "mkdir -p /home/app && chown 1000:1000 /home/app && rm /bin/vi\n"
                "RUN su -s /bin/sh app -c 'echo x > /home/app/by-app'\n"
                "RUN echo built > /built\n"
                "COPY hello.txt /hello.txt\n"
                "COPY --chown=app hello.txt /home/app/h\n"
                "ADD bundle.tar /opt/\n"
                "USER app\n"
                "WORKDIR /home/app/work\n"
                "RUN id -u > /home/app/work/as-user\n")
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", ctx], check=True)
    out = user.result(_own_root("build") + _INTEGRATION + f"""
from contain import Builder, Container, Image
from contain._root import get_root
busybox_image()
img = Builder.from_dockerfile({ctx!r}, tag="built:1", quiet=True)
c = Container.run(img, ["sh", "-c", "{STAT} /home/app /home/app/by-app /home/app/h /hello.txt /built "
                                    "/opt/bundled/file /home/app/work /home/app/work/as-user; "
                                    "echo as-user=$(cat /home/app/work/as-user) now=$(id -u); ls /bin/vi"],
                  network="none")
c.wait(timeout=30)
logs = c.logs().decode()
c.remove()
store = get_root().store
layers = []
import tarfile
for layer in img.layers:
    with store.open_blob(layer.digest) as f, tarfile.open(fileobj=f, mode="r:*") as tar:
        layers.append({{m.name: [m.uid, m.gid] for m in tar.getmembers()}})
print(json.dumps({{"logs": logs, "layers": layers}}))
""", timeout=180)
    seen = _stats(out["logs"])
    assert seen == {"/home/app": "1000:1000 755", "/home/app/by-app": "1000:1000 644",
                    "/home/app/h": "1000:1000 644", "/hello.txt": "0:0 644", "/built": "0:0 644",
                    "/opt/bundled/file": "1000:50 600", "/home/app/work": "1000:1000 755",
                    "/home/app/work/as-user": "1000:1000 644"}, out
    assert "ls: /bin/vi: No such file or directory" in out["logs"]  # RUN rm: a whiteout
    assert "as-user=1000 now=1000\n" in out["logs"]  # RUN and the container run as USER app
    # The layers record the image's ids, not the host's.
    ids = {tuple(v) for layer in out["layers"] for v in layer.values()}
    assert ids <= {(0, 0), (1000, 1000), (1000, 50)}, ids
    run_layer = out["layers"][1]
    assert run_layer["home/app"] == [1000, 1000] and run_layer["bin/.wh.vi"] == [0, 0]


def _build_and_run(user, name: str, dockerfile: str, script: str) -> str:
    """Build `dockerfile` (a context of its own) as the user, run `script`
    with sh in the image, and return the container's logs."""
    ctx = os.path.join(user.home, f"ctx-{name}")
    os.makedirs(ctx)
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(dockerfile)
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", ctx], check=True)
    out = user.result(_own_root(name) + _INTEGRATION + f"""
from contain import Builder, Container
busybox_image()
img = Builder.from_dockerfile({ctx!r}, tag="{name}:1", quiet=True)
c = Container.run(img, ["sh", "-c", {script!r}], network="none")
c.wait(timeout=30)
logs = c.logs().decode()
c.remove()
print(json.dumps({{"logs": logs}}))
""", timeout=180)
    return out["logs"]


def test_copy_from_a_stage_reads_files_only_their_owner_may(user):
    """COPY --from of a file of mode 0600 owned by uid 1000 of the image: on
    the host a subordinate id owns it, and the user may not read it; the
    copy is made as root of the user namespace instead."""
    logs = _build_and_run(user, "from", "FROM busybox:rootless AS one\n"
                          "RUN echo secret > /s && chown 1000:1000 /s && chmod 600 /s\n"
                          "FROM busybox:rootless\n"
                          "COPY --from=one /s /copied\n",
                          f"{STAT} /copied; cat /copied")
    assert _stats(logs) == {"/copied": "1000:1000 600"}, logs
    assert logs.splitlines()[-1] == "secret"


def test_copy_from_a_stage_reads_directories_only_their_owner_may_search(user):
    """COPY --from of a directory of mode 0700 owned by uid 1000 of the
    image, over two layers (a file added, one deleted): the user may not
    list it on the host, so it is looked through as root of the user
    namespace, and its files, symlink and owners arrive as in the stage."""
    logs = _build_and_run(
        user, "from-dir",
        "FROM busybox:rootless AS one\n"
        "RUN mkdir -p /d/sub && echo a > /d/a && echo b > /d/sub/b && echo k > /d/sub/keep"
        " && ln -s a /d/link && chown -R 1000:1000 /d && chmod 700 /d /d/sub"
        " && chmod 600 /d/a /d/sub/b /d/sub/keep && chown -h 1000:50 /d/link\n"
        "RUN echo c > /d/c && chown 1000:50 /d/c && chmod 640 /d/c && rm /d/sub/b\n"
        "FROM busybox:rootless\n"
        "COPY --from=one /d /copied\n",
        f"{STAT} /copied /copied/a /copied/c /copied/sub /copied/sub/keep; "
        "ls -a /copied/sub; readlink /copied/link; stat -c '%u:%g' /copied/link; "
        "cat /copied/a /copied/c /copied/sub/keep")
    # As Docker: the directory's contents are copied; the new /copied is root's.
    assert _stats(logs) == {"/copied": "0:0 755", "/copied/a": "1000:1000 600",
                            "/copied/c": "1000:50 640", "/copied/sub": "1000:1000 700",
                            "/copied/sub/keep": "1000:1000 600"}, logs
    rest = [line for line in logs.splitlines() if not line.startswith("/copied")]
    assert rest == [".", "..", "keep", "a", "1000:50", "a", "c", "k"], logs


# -------------------------------------------------------------- commit, push
def test_commit_and_push_record_the_containers_ids(user, registry, tmp_path):
    ref = f"{registry.host}/rootless/committed:1"
    out = user.result(_own_root("commit") + _INTEGRATION + f"""
from contain import Container
img = busybox_image()
c = Container.run(img, ["sh", "-c", "mkdir -p /srv/app && echo data > /srv/app/f && "
                                    "chown -R 1000:1000 /srv/app && chmod 600 /srv/app/f && "
                                    "rm /bin/vi"], network="none")
code = c.wait(timeout=30)
committed = c.commit("committed", "1", changes=["CMD [\\"cat\\", \\"/srv/app/f\\"]"])
c.remove()
digest = committed.push({ref!r}, insecure=True)
c = Container.run("committed:1", network="none", user="1000")
again = c.wait(timeout=30)
again_logs = c.logs().decode()
c.remove()
print(json.dumps({{"code": code, "digest": digest, "again": again, "again_logs": again_logs}}))
""", timeout=120)
    assert out["code"] == 0 and out["again"] == 0 and out["again_logs"] == "data\n", out
    layers = _pushed_layers(registry, ref, tmp_path)
    top = layers[-1]
    assert top["srv/app"] == (1000, 1000) and top["srv/app/f"] == (1000, 1000), top
    assert "bin/.wh.vi" in top
    # The base layer made with from_directory: the user's files are root's.
    assert {owner for owner in layers[0].values()} == {(0, 0)}
    # root pulls it back and sees the same owners.
    from contain import Container, Image

    root = str(tmp_path / "root-store")
    img = Image.pull(ref, insecure=True, root=root)
    c = Container.run(img, ["sh", "-c", f"{STAT} /srv/app /srv/app/f; ls /bin/vi"], network="none",
                      root=root)
    try:
        c.wait(timeout=30)
        logs = c.logs().decode()
    finally:
        c.remove(force=True)
    assert _stats(logs) == {"/srv/app": "1000:1000 755", "/srv/app/f": "1000:1000 600"}
    assert "No such file or directory" in logs


# ----------------------------------------------------- detached containers
def test_a_detached_container_outlives_its_creator(user):
    first = user.result(_own_root("detached") + _INTEGRATION + """
from contain import Container
img = busybox_image()
c = Container.run(img, ["sh", "-c", "echo started; mkdir /work && chown 1000:1000 /work; "
                                    "exec sleep 300"], network="none", name="outliving")
import time
deadline = time.time() + 10
while b"started" not in c.logs() and time.time() < deadline:
    time.sleep(0.05)
print(json.dumps({"id": c.id, "pid": c.attrs["State"]["Pid"], "creator": os.getpid()}))
""")
    # The creating process is gone; the container is not.
    assert not os.path.exists(f"/proc/{first['creator']}")
    assert os.stat(f"/proc/{first['pid']}").st_uid == user.uid
    second = user.result(_own_root("detached") + """
import json, time
from contain import Container
listed = [(c.name, c.status) for c in Container.list()]
c = Container.get("outliving")
logs = c.logs().decode()
ex = c.exec_run(["sh", "-c", "id -u; echo from-exec > /work/f; cat /work/f"], user="1000")
root_ex = c.exec_run(["id", "-u"])
t = time.monotonic()
c.stop(timeout=1)
stop_took = time.monotonic() - t
status, code = c.status, c.attrs["State"]["ExitCode"]
c.remove()
from contain._root import wait_for_discards
wait_for_discards(10)
print(json.dumps({"listed": listed, "logs": logs, "exec": [ex.exit_code, ex.output.decode()],
                  "root_exec": root_ex.output.decode(), "status": status, "code": code,
                  "stop_took": stop_took, "left": [x.name for x in Container.list(all=True)]}))
""")
    assert second["listed"] == [["outliving", "running"]]
    assert second["logs"] == "started\n"
    assert second["exec"] == [0, "1000\nfrom-exec\n"] and second["root_exec"] == "0\n"
    assert second["status"] == "exited" and second["code"] == 137  # sleep ignores SIGTERM as pid 1
    assert second["stop_took"] < 5
    assert second["left"] == []
    assert host_leaks(first["id"]) == []
    assert not os.path.exists(f"/proc/{first['pid']}")


def test_removing_a_container_deletes_files_of_subordinate_owners(user):
    out = user.result(_own_root("removal") + _INTEGRATION + """
from contain import Container
from contain._root import get_root, wait_for_discards
img = busybox_image()
c = Container.run(img, ["sh", "-c", "mkdir -p /a/b && echo x > /a/b/f && chown -R 1000:1000 /a"],
                  network="none")
c.wait(timeout=30)
c.remove()
wait_for_discards(10)
print(json.dumps({"left": [n for n in os.listdir(get_root().containers) if n.startswith(".removing")]}))
""")
    assert out["left"] == []


# ------------------------------------------------ the root filesystem driver
def test_driver_decision():
    kernel_says_no = (False, "mount -t overlay: Operation not permitted")
    fuse = rootless.choose_rootfs_driver(kernel_says_no, forced=None,
                                         fuse_program="/usr/bin/fuse-overlayfs", dev_fuse=(True, ""))
    assert fuse == rootless.RootfsDriver(
        "fuse-overlayfs", "the kernel refuses overlayfs in a user namespace "
        "(mount -t overlay: Operation not permitted)", "/usr/bin/fuse-overlayfs")
    kernel = rootless.choose_rootfs_driver((True, ""), forced=None, fuse_program="/usr/bin/fuse-overlayfs",
                                           dev_fuse=(True, ""))
    assert kernel.name == "overlay" and kernel.mount_program is None
    with pytest.raises(InvalidArgument) as info:
        rootless.choose_rootfs_driver(kernel_says_no, forced=None, fuse_program=None, dev_fuse=(True, ""))
    text = str(info.value)
    assert "Operation not permitted" in text and "Linux 5.11" in text
    assert "apt-get install fuse-overlayfs" in text
    no_dev = rootless.dev_fuse_usable("/nonexistent/fuse")
    with pytest.raises(InvalidArgument, match="there is no /nonexistent/fuse"):
        rootless.choose_rootfs_driver(kernel_says_no, forced=None, fuse_program="/usr/bin/fuse-overlayfs",
                                      dev_fuse=no_dev)
    with pytest.raises(InvalidArgument, match="CONTAIN_ROOTFS_DRIVER=fuse-overlayfs, but fuse-overlayfs is not"):
        rootless.choose_rootfs_driver((True, ""), forced="fuse-overlayfs", fuse_program=None,
                                      dev_fuse=(True, ""))
    with pytest.raises(InvalidArgument, match="the drivers are overlay, fuse-overlayfs"):
        rootless.choose_rootfs_driver((True, ""), forced="vfs", fuse_program=None, dev_fuse=(True, ""))


def test_the_kernel_overlay_works_in_a_user_namespace_here(tmp_path):
    release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    works, why = rootless.probe_kernel_overlay(str(tmp_path))
    if release < (5, 11):
        assert not works and why
    else:
        assert works, why
    assert os.listdir(tmp_path) == []  # the trial leaves nothing


def test_info_as_an_ordinary_user(user):
    out = user.result("""
import json, os
import contain
from contain.linux import rootless
info = contain.info()
home = os.environ["HOME"]
info["probe"] = rootless.probe_kernel_overlay(home)
info["probe_left"] = [n for n in os.listdir(home) if n.startswith(".rootfs-probe")]
with open(os.path.join(info["DockerRootDir"], "overlay-probe.json")) as f:
    info["kept"] = json.load(f)
print(json.dumps(info))
""")
    assert out["probe"] == [True, ""] and out["probe_left"] == []  # as the user too
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert out["kept"]["boot"] == f.read().strip() and out["kept"]["works"] is True
    assert out["Rootless"] is True
    assert out["Driver"] == "overlay"
    status = dict(out["DriverStatus"])
    assert status["Reason"] == "the kernel's overlayfs mounts in a user namespace (Linux 5.11+)"
    assert status["userxattr"] == "true" and status["Backing Filesystem"]
    assert "name=rootless" in out["SecurityOptions"]
    assert out["CgroupDriver"] == "none"  # no delegated cgroup v2 subtree on this host
    assert out["DockerRootDir"] == user.store
    assert out["IDMappings"]["UIDMap"] == [
        {"containerID": 0, "hostID": user.uid, "size": 1},
        {"containerID": 1, "hostID": user.subid_start, "size": 65536}]
    cli = user.python("import sys\nfrom contain.cli.main import main\nsys.exit(main(['info']))")
    assert cli.returncode == 0, cli.stderr
    assert " Storage Driver: overlay\n" in cli.stdout and "  rootless\n" in cli.stdout


def test_fuse_overlayfs_root_as_an_ordinary_user(fuse):
    """CONTAIN_ROOTFS_DRIVER=fuse-overlayfs: the container's root is a
    fuse-overlayfs mount (what the kernel's refusal would fall back to),
    ownership and whiteouts work, a commit carries them, info says so, and
    the daemon ends with the container."""
    user = fuse
    out = user.result(_own_root("fuse") + _INTEGRATION + f"""
os.environ["CONTAIN_ROOTFS_DRIVER"] = "fuse-overlayfs"
import subprocess
from contain import Container
img = busybox_image()
c = Container.run(img, ["sh", "-c", "grep ' / / ' /proc/self/mountinfo; mkdir /x && echo hi > /x/f && "
                                    "chown -R 1000:1000 /x && rm /bin/vi && "
                                    "su -s /bin/sh user -c 'echo y > /x/g' && "
                                    "{STAT} /x /x/f /x/g; sleep 1"], network="none")
def daemons():
    ps = subprocess.run(["ps", "-u", str(os.getuid()), "-o", "stat=,comm="], capture_output=True, text=True)
    return [l for l in ps.stdout.splitlines() if "fuse-overlayfs" in l and not l.startswith("Z")]
running = daemons()
code = c.wait(timeout=30)
logs = c.logs().decode()
committed = c.commit("fused", "1")
c.remove()
import time
deadline = time.time() + 5
while daemons() and time.time() < deadline:
    time.sleep(0.05)
left = daemons()
info = contain.info()
# The committed layer, under the kernel's overlay.
os.environ["CONTAIN_ROOTFS_DRIVER"] = "overlay"
c = Container.run(committed, ["sh", "-c", "{STAT} /x /x/f /x/g; ls /bin/vi"], network="none")
c.wait(timeout=30)
kernel_logs = c.logs().decode()
c.remove()
print(json.dumps({{"code": code, "logs": logs, "running": running, "left": left,
                  "driver": info["Driver"], "status": info["DriverStatus"],
                  "kernel_logs": kernel_logs}}))
""", timeout=120)
    assert out["code"] == 0, out
    assert " / / " in out["logs"] and "fuse.fuse-overlayfs" in out["logs"].splitlines()[0]
    expected = {"/x": "1000:1000 755", "/x/f": "1000:1000 644", "/x/g": "1000:1000 644"}
    assert _stats(out["logs"]) == expected
    assert len(out["running"]) == 1  # one daemon while the container runs ...
    assert out["left"] == []  # ... and none once it is gone, with nothing watching
    assert out["driver"] == "fuse-overlayfs"
    status = dict(out["status"])
    assert status["Mount Program"] == shutil.which("fuse-overlayfs")
    assert status["Reason"] == "chosen by CONTAIN_ROOTFS_DRIVER"
    assert _stats(out["kernel_logs"]) == expected
    assert "ls: /bin/vi: No such file or directory" in out["kernel_logs"]
