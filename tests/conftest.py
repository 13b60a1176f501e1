"""Shared fixtures: a private state root and a busybox image made from the
host's busybox-static, plus a check that the suite leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: containers are made with real namespaces, mounts and cgroups")


def make_busybox_rootfs(path: str) -> str:
    from contain._busybox import find_busybox, make_rootfs
    from contain.errors import NotFound

    try:
        find_busybox()
    except NotFound:
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    return make_rootfs(path)


@pytest.fixture(scope="session")
def croot(tmp_path_factory):
    """A state root of the test session's own."""
    _require_root()
    path = str(tmp_path_factory.mktemp("contain-root"))
    yield path
    from contain import Container

    leftover = Container.list(all=True, root=path)
    for c in leftover:
        c.remove(force=True)
    from contain import Network
    from contain._root import get_root

    # Networks of this root (its default bridge included) go with it.
    for net in Network.list(root=path):
        net.remove(force=True)

    # The parent cgroup is shared by every container of the host; the
    # suite takes it away once its containers are gone (if no one else's remain).
    try:
        get_root(path).cgroups.remove_parent()
    except Exception:
        pass
    assert not leftover, f"tests left containers behind: {leftover}"


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory):
    return make_busybox_rootfs(str(tmp_path_factory.mktemp("busybox-rootfs")))


@pytest.fixture(scope="session")
def busybox(croot, busybox_rootfs):
    from contain import Image

    return Image.from_directory(busybox_rootfs, tag="busybox:test", config={"Cmd": ["sh"]}, root=croot)


@pytest.fixture
def run(croot, busybox):
    """Start containers from the busybox image; each is removed after the test."""
    from contain import Container

    made = []

    def _run(command, **options):
        options.setdefault("root", croot)
        c = Container.run(options.pop("image", busybox), command, **options)
        made.append(c)
        return c

    yield _run
    for c in made:
        c.remove(force=True)


def host_leaks(container_id: str) -> list[str]:
    """Kernel objects or files that still name a removed container."""
    found = []
    with open("/proc/self/mountinfo") as f:
        found += [f"mount: {line.strip()}" for line in f if container_id in line]
    for top in os.listdir("/sys/fs/cgroup"):
        base = os.path.join("/sys/fs/cgroup", top)
        for dirpath, dirnames, _ in os.walk(base):
            found += [f"cgroup: {os.path.join(dirpath, d)}" for d in dirnames if container_id in d]
            if dirpath.count("/") > 6:
                dirnames[:] = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if container_id.encode() in f.read():
                    found.append(f"process: {pid}")
        except OSError:
            continue
    return found


CONTAINERS_CONF = "/etc/containers/containers.conf"


def _crun_refuses_hybrid() -> bool:
    try:
        with open("/sys/fs/cgroup/unified/cgroup.controllers") as f:
            return bool(f.read().split())
    except OSError:
        return False


@pytest.fixture
def podman(tmp_path):
    """podman with private storage under tmp_path; its images are removed afterwards."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    if not os.path.exists(CONTAINERS_CONF):
        # This host cannot raise rlimits; podman's defaults would try (see DESIGN.md).
        os.makedirs(os.path.dirname(CONTAINERS_CONF), exist_ok=True)
        with open(CONTAINERS_CONF, "w") as f:
            f.write('[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n')
    # podman refuses a runroot longer than 50 characters: pytest's tmp_path is longer.
    runroot = tempfile.mkdtemp(prefix="contain-podman-", dir="/tmp")
    base = [shutil.which("podman"), "--root", str(tmp_path / "podman-root"), "--runroot", runroot,
            "--storage-driver", "vfs"]
    if _crun_refuses_hybrid() and shutil.which("runc"):
        # crun refuses a hybrid host whose v2 tree holds a controller (see
        # DESIGN.md); runc runs there.
        base += ["--runtime", shutil.which("runc")]

    def run(*args: str) -> str:
        proc = subprocess.run(base + list(args), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    yield run
    subprocess.run(base + ["rmi", "-a", "-f"], capture_output=True)
    shutil.rmtree(tmp_path / "podman-root", ignore_errors=True)
    shutil.rmtree(runroot, ignore_errors=True)
