"""Rootless: contain run by an ordinary user, confined by a user namespace.

The unit tests run anywhere.  The end-to-end tests need root only to stand
up the scene: a fresh ordinary user with subordinate ranges in /etc/subuid
and /etc/subgid (removed again, with its home, at teardown), the uidmap
package (newuidmap/newgidmap), /dev/net/tun mode 0666 as on a standard
Debian.  The containers themselves are then made by that user, through
`runuser`, with the user's own HOME and XDG directories: contain detects
that it runs as an ordinary user and applies the rootless policy itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest
from conftest import host_leaks

from contain.errors import InvalidArgument, RuntimeFailure
from contain.linux import rootless
from contain.linux.spec import IDMapping

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ units
def test_read_subids_by_name_and_uid(tmp_path):
    f = tmp_path / "subuid"
    f.write_text("# comment\nalice:100000:65536\n1234:300000:1000\nbob:200000:65536\n"
                 "alice:bad:line\nalice:500000:0\n")
    assert rootless.read_subids(str(f), "alice", 1234) == [
        rootless.IdRange(100000, 65536), rootless.IdRange(300000, 1000)]
    assert rootless.read_subids(str(f), "carol", 99) == []
    assert rootless.read_subids(str(tmp_path / "missing"), "alice", 1) == []


def test_id_maps_with_ranges(tmp_path):
    (tmp_path / "subuid").write_text("alice:100000:65536\n")
    (tmp_path / "subgid").write_text("alice:200000:65536\n")
    m = rootless.id_maps(uid=1234, gid=4321, user="alice", subuid=str(tmp_path / "subuid"),
                         subgid=str(tmp_path / "subgid"), newuidmap="/x/newuidmap",
                         newgidmap="/x/newgidmap")
    assert m.uid_mappings == [IDMapping(0, 1234, 1), IDMapping(1, 100000, 65536)]
    assert m.gid_mappings == [IDMapping(0, 4321, 1), IDMapping(1, 200000, 65536)]
    assert m.uidmap_helper == ["/x/newuidmap", "{pid}", "0", "1234", "1", "1", "100000", "65536"]
    assert m.gidmap_helper == ["/x/newgidmap", "{pid}", "0", "4321", "1", "1", "200000", "65536"]
    assert not m.single
    assert m.host_uid(0) == 1234 and m.host_uid(1) == 100000 and m.host_uid(65536) == 165535
    assert m.host_uid(65537) is None
    m.check_ids([0, 1000, 65534], [0, 5])
    assert m.unshare_argv("/usr/bin/unshare") == [
        "/usr/bin/unshare", "--user", "--map-user=0", "--map-group=0",
        "--map-users=100000,1,65536", "--map-groups=200000,1,65536"]


def test_single_id_mapping_and_the_clear_error(tmp_path):
    m = rootless.id_maps(uid=1234, gid=1234, user="alice", subuid=str(tmp_path / "none"),
                         subgid=str(tmp_path / "none"))
    assert m.single and m.uidmap_helper is None and m.gidmap_helper is None
    assert m.uid_mappings == [IDMapping(0, 1234, 1)]
    m.check_ids([0], [0])
    with pytest.raises(InvalidArgument) as info:
        m.check_ids([0, 1000], [0, 50], what="image busybox:test")
    text = str(info.value)
    assert "uids 1000" in text and "/etc/subuid" in text and "gids 50" in text
    assert "alice" in text and "usermod --add-subuids" in text


def test_runtime_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert rootless.runtime_dir(uid=os.getuid(), environ={"XDG_RUNTIME_DIR": str(run)}) == str(run / "contain")
    path = rootless.runtime_dir(uid=os.getuid(), environ={}, tmp=str(tmp_path))
    assert path == str(tmp_path / f"contain-{os.getuid()}")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    os.chmod(path, 0o755)  # someone else's, or readable by others: refused
    with pytest.raises(RuntimeFailure):
        rootless.runtime_dir(uid=os.getuid(), environ={}, tmp=str(tmp_path))


def test_limits_without_delegation_are_refused():
    from contain.linux.cgroups import Resources

    with pytest.raises(InvalidArgument) as info:
        rootless.check_resources(Resources(memory=64 << 20), delegated=None, user="alice")
    assert "no delegated cgroup v2 subtree for user alice" in str(info.value)
    assert "mem_limit" in str(info.value)
    rootless.check_resources(Resources(), delegated=None)
    with pytest.raises(InvalidArgument, match="offers no memory controller"):
        rootless.check_resources(Resources(memory=64 << 20), delegated="/sys/fs/cgroup/nonexistent")
    with pytest.raises(InvalidArgument):
        rootless.NoCgroupManager("alice").create("c", Resources(pids_limit=10))
    assert rootless.NoCgroupManager("alice").create("c", Resources()).procs_files() == []


def _fake_cgroup_files(d, subtree_control="\n"):
    d.mkdir(parents=True, exist_ok=True)
    (d / "cgroup.subtree_control").write_text(subtree_control)
    (d / "cgroup.procs").write_text("")


def test_delegation_detection_on_a_fake_tree(tmp_path):
    cg = tmp_path / "cgroup"
    deleg = cg / "user.slice" / "user-1000.slice" / "user@1000.service" / "app.slice"
    own = deleg / "app-term.scope"
    _fake_cgroup_files(own)
    _fake_cgroup_files(deleg, "cpu memory pids\n")
    (tmp_path / "self_cgroup").write_text("0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-term.scope\n")
    (tmp_path / "mountinfo").write_text(
        f"30 1 0:26 / {cg} rw,nosuid - cgroup2 cgroup2 rw\n")

    def found():
        return rootless.delegated_cgroup(cgroup_root=str(cg), proc_self_cgroup=str(tmp_path / "self_cgroup"),
                                         mountinfo=str(tmp_path / "mountinfo"))

    # The parent first: it holds no process of its own, so it can pass controllers on.
    assert found() == str(deleg)
    # Delegated with no controllers enabled is still delegated.
    (deleg / "cgroup.subtree_control").write_text("\n")
    assert found() == str(deleg)
    # A parent that cannot be managed: the caller's own cgroup, where it is one.
    (deleg / "cgroup.procs").unlink()
    assert found() == str(own)
    (own / "cgroup.subtree_control").unlink()
    assert found() is None
    # A cgroup right under the root: the root itself is never delegated.
    _fake_cgroup_files(cg / "admin-given")
    (tmp_path / "self_cgroup").write_text("0::/admin-given\n")
    assert found() == str(cg / "admin-given")
    (tmp_path / "self_cgroup").write_text("0::/\n")
    assert found() is None


def test_delegated_subtree_applies_limits_as_for_root(tmp_path):
    from test_cgroups import FakeKernel, _get, make_v2

    from contain.linux.cgroups import Resources

    kernel = FakeKernel()
    root, mountinfo = make_v2(tmp_path, kernel, controllers="cpu memory pids")
    kernel.write(root + "/cgroup.subtree_control", "+cpu +memory +pids")
    deleg = root + "/user.slice"
    kernel.mkdir(deleg)
    m = rootless.delegated_manager(deleg, cgroup_root=root, mountinfo=mountinfo, syscalls=kernel)
    assert m.mode == "v2" and m.layout.v2_controllers == {"cpu", "memory", "pids"}
    limits = Resources.from_docker(mem_limit="64m", cpus=0.5, pids_limit=10)
    rootless.check_resources(limits, delegated=deleg)  # offered: no error
    c = m.create("c1", limits)
    d = deleg + "/contain/c1"
    assert c.v2_path == d and c.procs_files() == [d + "/cgroup.procs"]
    assert kernel.written(deleg + "/cgroup.subtree_control") == "+cpu +memory +pids"
    assert _get(d + "/memory.max") == str(64 << 20)
    assert _get(d + "/cpu.max") == "50000 100000"
    assert _get(d + "/pids.max") == "10"
    kernel.write(d + "/memory.current", "4096")
    assert c.stats().memory_usage == 4096 and c.stats().memory_limit == 64 << 20
    assert m.open("c1").v2_path == d
    c.remove()
    assert not os.path.exists(d)
    # A controller the subtree does not offer: refused, naming it and the limit.
    with pytest.raises(InvalidArgument) as info:
        rootless.check_resources(Resources.from_docker(cpuset_cpus="0"), delegated=deleg)
    assert f"the delegated cgroup v2 subtree {deleg} offers no cpuset controller" in str(info.value)
    assert "cpuset_cpus" in str(info.value) and "cpu memory pids" in str(info.value)


def test_a_subtree_holding_the_caller_passes_no_controllers(tmp_path):
    """An administrator's subtree the caller runs in directly: containers
    get cgroups there, but no controller is enabled (the kernel refuses it
    with EBUSY while the caller is in it), and a limit says why."""
    from test_cgroups import FakeKernel, make_v2

    from contain.linux.cgroups import Resources

    kernel = FakeKernel()
    root, mountinfo = make_v2(tmp_path, kernel, controllers="cpu memory pids")
    kernel.write(root + "/cgroup.subtree_control", "+cpu +memory +pids")
    own = root + "/admin-given"
    kernel.mkdir(own)
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text("0::/admin-given\n")
    assert rootless.holds_caller(own, cgroup_root=root, proc_self_cgroup=str(self_cgroup), mountinfo=mountinfo)
    m = rootless.delegated_manager(own, cgroup_root=root, mountinfo=mountinfo,
                                   proc_self_cgroup=str(self_cgroup), syscalls=kernel)
    assert m.layout.v2_controllers == frozenset()
    c = m.create("c1", Resources())
    assert c.v2_path == own + "/contain/c1"
    assert not [w for w in kernel.writes if w[0].endswith("cgroup.subtree_control") and w[0] != root + "/cgroup.subtree_control"]
    c.remove()


def test_forked_children_get_no_namespaces_of_the_parents_pool():
    from contain.net import pool

    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    p = pool._Pool()
    p.ready.append(fd)
    pool._bare_in[-7] = p
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if pool._bare_in == {} else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        pool._bare_in.pop(-7, None)
        os.close(fd)


def test_this_host_has_no_delegation_for_root_either():
    # cgroup v1 hybrid here; the v2 tree has no delegated subtree for us.
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        pytest.skip("a pure cgroup v2 host")
    assert rootless.delegated_cgroup() is None or os.geteuid() == 0


def test_adapt_spec_drops_cgroup_mounts_and_refuses_other_networks():
    from contain.linux import defaults
    from contain.linux.spec import Namespace, Process, Root, Spec

    m = rootless.IdMaps([IDMapping(0, 1000, 1)], [IDMapping(0, 1000, 1)], None, None, "alice", 1000, 1000)
    spec = Spec(Process(["sh"]), Root("/x"),
                mounts=defaults.default_mounts() + defaults.cgroup_mounts("hybrid", ["memory"]),
                )
    spec.linux.namespaces = [Namespace("mount")]
    rootless.adapt_spec(spec, m, network_mode="host")
    assert spec.namespace("user") is not None
    assert spec.linux.uid_mappings == [IDMapping(0, 1000, 1)]
    assert not any(x.destination.startswith("/sys/fs/cgroup") for x in spec.mounts)
    sysfs = [x for x in spec.mounts if x.destination == "/sys"]
    assert sysfs[0].type == "bind" and "ro" in sysfs[0].options
    pts = [x for x in spec.mounts if x.type == "devpts"][0]
    assert "gid=5" not in pts.options  # gid 5 is not mapped with a single id
    with pytest.raises(InvalidArgument) as info:
        rootless.adapt_spec(spec, m, network_mode="mynet")
    assert "slirp4netns" in str(info.value) and "none" in str(info.value) and "host" in str(info.value)
    # slirp4netns: a new netns owned by the new user namespace: sysfs mounts anew.
    spec2 = Spec(Process(["sh"]), Root("/x"), mounts=defaults.default_mounts())
    rootless.adapt_spec(spec2, m, network_mode="slirp4netns:allow_host_loopback=true")
    assert [x for x in spec2.mounts if x.destination == "/sys"][0].type == "sysfs"


def test_rootless_network_modes(monkeypatch):
    from contain.net import userspace

    monkeypatch.setattr(userspace, "require", lambda tun="/dev/net/tun": "/usr/bin/slirp4netns")
    assert rootless.network_mode(None) == "slirp4netns"
    assert rootless.network_mode("bridge") == "slirp4netns"  # as podman: bridge means slirp4netns
    assert rootless.network_mode("none") == "none" and rootless.network_mode("host") == "host"
    assert rootless.network_mode("slirp4netns:allow_host_loopback=true") == \
        "slirp4netns:allow_host_loopback=true"
    with pytest.raises(InvalidArgument, match="user-defined networks are not supported"):
        rootless.network_mode("mynet")
    with pytest.raises(InvalidArgument, match="pasta"):
        rootless.network_mode("pasta")
    with pytest.raises(InvalidArgument, match="unsupported slirp4netns option"):
        rootless.network_mode("slirp4netns:port_handler=rootlesskit")
    assert userspace.parse_mode("slirp4netns") == userspace.Options()
    assert userspace.parse_mode("slirp4netns:allow_host_loopback=true,mtu=1500") == \
        userspace.Options(allow_host_loopback=True, mtu=1500)


def test_slirp4netns_missing_is_a_clear_error(monkeypatch):
    from contain.net import userspace

    monkeypatch.setattr(userspace, "find", lambda name, search=(): None)
    with pytest.raises(InvalidArgument) as info:
        rootless.network_mode(None)
    assert "slirp4netns" in str(info.value) and "apt-get install slirp4netns" in str(info.value)
    assert "network='none'" in str(info.value)


def test_port_conflict_is_found_before_start():
    import socket

    from contain.errors import Conflict
    from contain.net import endpoint, userspace

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(Conflict, match=f"127.0.0.1:{port}/tcp failed: port is already allocated"):
            userspace.resolve_ports(endpoint.parse_ports({80: ("127.0.0.1", port)}))
        with pytest.raises(Conflict, match=f"0.0.0.0:{port}/tcp"):
            userspace.resolve_ports(endpoint.parse_ports({80: port}))
    with pytest.raises(Conflict, match="published twice"):
        userspace.resolve_ports(endpoint.parse_ports({80: port, 81: port}))
    picked = userspace.resolve_ports(endpoint.parse_ports({80: None}))
    assert picked[0].host_port and picked[0].port == 80


def test_helper_failure_names_it_and_kills_the_container(tmp_path, monkeypatch):
    """A slirp4netns that fails: its own words in the error, the container
    (here a stand-in process) killed, nothing left in the runtime dir."""
    from contain.net import userspace

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    fake = tmp_path / "slirp4netns"
    fake.write_text("#!/bin/sh\necho 'WARNING: noise' >&2\necho 'open(\"/dev/net/tun\"): Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    proc = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(RuntimeFailure) as info:
            userspace.start_helper(str(tmp_path), "c" * 64, proc.pid, userspace.Options(), [],
                                   binary=str(fake))
        assert info.value.step == "slirp4netns"
        assert "Permission denied" in str(info.value)
        assert proc.wait(timeout=5) == -9  # a container without its network is killed
    finally:
        proc.kill()
        proc.wait()
    assert os.listdir(tmp_path / "contain") == []


# ------------------------------------------------------- as an ordinary user
def _needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root to create the ordinary user the rootless tests run as")


def _ensure_uidmap():
    if shutil.which("newuidmap") and shutil.which("newgidmap"):
        return
    r = subprocess.run(["apt-get", "install", "-y", "-q", "uidmap"], capture_output=True, text=True)
    if r.returncode != 0 or not shutil.which("newuidmap"):
        pytest.skip(f"uidmap (newuidmap/newgidmap) is not installed and apt-get failed: {r.stderr[-300:]}")


def _traversable(path: str) -> list[tuple[str, int]]:
    """chmod o+x every directory on the way to `path` that lacks it (the
    interpreter behind the venv lives under /root here); returns what to
    restore."""
    changed = []
    p = os.path.dirname(os.path.realpath(path))
    parts = []
    while True:
        parts.append(p)
        if p == "/":
            break
        p = os.path.dirname(p)
    for d in reversed(parts):
        mode = stat.S_IMODE(os.stat(d).st_mode)
        if not mode & 0o001:
            os.chmod(d, mode | 0o001)
            changed.append((d, mode))
    return changed


def _remove_subids(user: str) -> None:
    for path in (rootless.SUBUID, rootless.SUBGID):
        try:
            with open(path) as f:
                lines = f.readlines()
        except FileNotFoundError:
            continue
        kept = [line for line in lines if line.split(":")[0] != user]
        if kept != lines:
            with open(path + ".contain-tmp", "w") as f:
                f.writelines(kept)
            os.chmod(path + ".contain-tmp", 0o644)
            os.replace(path + ".contain-tmp", path)


class User:
    def __init__(self, name: str) -> None:
        self.name = name
        pw = pwd.getpwnam(name)
        self.uid, self.gid, self.home = pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.subid_start = 0

    @property
    def data(self) -> str:
        return os.path.join(self.home, ".local", "share")

    @property
    def store(self) -> str:
        return os.path.join(self.data, "contain")

    def env(self) -> dict:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name,
                "PATH": "/usr/local/bin:/usr/bin:/bin", "XDG_DATA_HOME": self.data,
                "XDG_RUNTIME_DIR": os.path.join(self.home, ".run"), "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1"}

    def python(self, code: str, timeout: float = 60, cgroup: str | None = None) -> subprocess.CompletedProcess:
        """Run Python code as this user (through runuser, a clean environment);
        in the cgroup v2 directory `cgroup` when given (placed there by root
        first, as a login manager would)."""
        script = os.path.join(self.home, f"script-{secrets.token_hex(4)}.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(code))
        os.chown(script, self.uid, self.gid)
        try:
            place = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup] if cgroup else []
            return subprocess.run([*place, "runuser", "-u", self.name, "--", "env", "-i",
                                   *[f"{k}={v}" for k, v in self.env().items()],
                                   sys.executable, script],
                                  capture_output=True, text=True, timeout=timeout, cwd=self.home)
        finally:
            os.unlink(script)

    def result(self, code: str, timeout: float = 60, cgroup: str | None = None):
        """Run `code` as the user; it prints one JSON document last."""
        r = self.python(code, timeout, cgroup)
        assert r.returncode == 0, f"as {self.name}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return json.loads(r.stdout.strip().splitlines()[-1])


_SHARED = "/run/contain-test-traversable"  # .lock, .json


def _shared_traversal(paths: list[str]):
    """_traversable for `paths`, and /dev/net/tun mode 0666, shared by the
    test processes (pytest-xdist runs this module's tests in several at
    once): the first records what it changed, the last one still alive
    restores it.  Returns the release."""
    def update(change):
        fd = os.open(_SHARED + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                with open(_SHARED + ".json") as f:
                    rec = json.load(f)
            except (FileNotFoundError, ValueError):
                rec = {"pids": [], "restore": []}
            rec["pids"] = [p for p in rec["pids"] if os.path.exists(f"/proc/{p}")]
            change(rec)
            if rec["pids"]:
                with open(_SHARED + ".json", "w") as f:
                    json.dump(rec, f)
            else:
                for d, mode in reversed(rec["restore"]):
                    with contextlib.suppress(OSError):
                        os.chmod(d, mode)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(_SHARED + ".json")
        finally:
            os.close(fd)

    def take(rec):
        for path in paths:
            rec["restore"] += _traversable(path)
        tun = "/dev/net/tun"
        if os.path.exists(tun) and stat.S_IMODE(os.stat(tun).st_mode) != 0o666:
            rec["restore"].append((tun, stat.S_IMODE(os.stat(tun).st_mode)))
            os.chmod(tun, 0o666)  # as a standard Debian has it
        rec["pids"].append(os.getpid())

    def give_back(rec):
        rec["pids"] = [p for p in rec["pids"] if p != os.getpid()]

    update(take)
    return lambda: update(give_back)


@pytest.fixture(scope="module")
def user():
    _needs_root()
    _ensure_uidmap()
    name = f"contain-rl-{secrets.token_hex(3)}"
    release = _shared_traversal([sys.executable, os.path.join(REPO, "src", "contain", "__init__.py")])
    try:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
        # useradd may have assigned ranges (SUB_UID_MIN...); ours, known, instead.
        _remove_subids(name)
        start = rootless.free_subid_start()
        for path in (rootless.SUBUID, rootless.SUBGID):
            with open(path, "a") as f:
                f.write(f"{name}:{start}:65536\n")
        u = User(name)
        u.subid_start = start
        os.makedirs(os.path.join(u.home, ".run"), mode=0o700, exist_ok=True)
        os.chown(os.path.join(u.home, ".run"), u.uid, u.gid)
        yield u
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)  # only this user's
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True)
        shutil.rmtree(f"/tmp/contain-{u.uid}" if "u" in locals() else "/nonexistent", ignore_errors=True)
        home = f"/home/{name}"
        if os.path.exists(home):
            shutil.rmtree(home, ignore_errors=True)
        _remove_subids(name)
        release()


# Prepended to the user-side scripts: a busybox image made as the user.
# The runtime dir's entries once the helpers of ended containers are gone:
# their socket and record go moments after the container (userspace.release).
_SETTLED = """
import os as _os, time as _time
def _settled(runtime_dir, timeout=5.0):
    deadline = _time.monotonic() + timeout
    while True:
        # The record of the user's long-lived user namespace stays (linux.userns).
        left = [n for n in _os.listdir(runtime_dir()) if not n.startswith("userns.")]
        if not left or _time.monotonic() > deadline:
            return left
        _time.sleep(0.02)
"""

_INTEGRATION = """
import json, os, sys
import contain

def busybox_image():
    from contain._busybox import make_rootfs
    from contain import Image
    import tempfile
    import shutil
    d = tempfile.mkdtemp()
    try:
        try:
            make_rootfs(d)
        except PermissionError:
            pass  # home/user cannot be given to uid 1000 by an ordinary user: stays ours (root inside)
        return Image.from_directory(d, tag="busybox:rootless", config={"Cmd": ["sh"]})
    finally:
        shutil.rmtree(d, ignore_errors=True)
"""


def test_user_scene(user):
    assert os.getuid() != user.uid
    r = user.python("import os, contain; print(os.geteuid(), contain.__file__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == str(user.uid)


def test_busybox_as_an_ordinary_user(user):
    out = user.result(_INTEGRATION + """
from contain import Container
from contain._root import default_root
img = busybox_image()
c = Container.run(img, ["sh", "-c", "echo pid=$$; id -u; hostname; echo hello > /written; sleep 30"],
                  network="none", hostname="inside")
import time
deadline = time.time() + 10
while time.time() < deadline and b"inside" not in c.logs():
    time.sleep(0.05)
logs = c.logs().decode()
pid = c.attrs["State"]["Pid"]
with open(f"/proc/{pid}/status") as f:
    uid_line = [l for l in f if l.startswith("Uid:")][0].split()
p = c.exec(["sh", "-c", "id -u; echo $$; cat /written"])
exec_out = p.stdout.read().decode()
exec_code = p.wait()
upper = c._path("upper")
st = os.stat(os.path.join(upper, "written"))
cid = c.id
c.remove(force=True)
print(json.dumps({"logs": logs, "host_uid": uid_line, "exec": exec_out, "exec_code": exec_code,
                  "written_owner": st.st_uid, "root": default_root(), "id": cid, "pid": pid}))
""")
    lines = out["logs"].split()
    assert "pid=1" in lines and "0" in lines and "inside" in lines, out
    assert out["host_uid"][1:] == [str(user.uid)] * 4  # the host sees the user, not root
    assert out["exec_code"] == 0
    assert out["exec"].split()[0] == "0" and out["exec"].split()[2] == "hello"
    assert out["written_owner"] == user.uid
    assert out["root"] == user.store
    # Nothing left behind: no process, no mount, no cgroup naming the container.
    assert host_leaks(out["id"]) == []
    assert not os.path.exists(f"/proc/{out['pid']}") or _owner(out["pid"]) != user.uid
    assert not os.path.exists(os.path.join(user.store, "containers", out["id"]))


def _owner(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return -1


def test_host_network_as_an_ordinary_user(user):
    out = user.result(_INTEGRATION + """
from contain import Container
img = busybox_image()
c = Container.run(img, ["sh", "-c", "ls /sys/class/net | grep -c . ; id -u"], network="host")
code = c.wait(timeout=20)
logs = c.logs().decode()
c.remove()
print(json.dumps({"code": code, "logs": logs}))
""")
    assert out["code"] == 0, out
    count, uid = out["logs"].split()
    assert int(count) >= 1 and uid == "0"


def test_limits_are_a_clear_error_as_an_ordinary_user(user):
    out = user.result(_INTEGRATION + """
from contain import Container
from contain.errors import InvalidArgument
img = busybox_image()
try:
    Container.run(img, ["true"], network="none", mem_limit="64m")
    print(json.dumps({"error": None}))
except InvalidArgument as e:
    print(json.dumps({"error": str(e), "left": [c.id for c in Container.list(all=True)]}))
""")
    assert out["error"] and "no delegated cgroup v2 subtree for user " + user.name in out["error"]
    assert "mem_limit" in out["error"]
    assert out["left"] == []


@pytest.fixture
def delegated(user):
    """A cgroup v2 subtree delegated to the user as systemd's Delegate= does
    it (the directory and the files that manage it are the user's), with a
    leaf the user's process is put in.  On this hybrid host the v2 tree has
    no controllers: the subtree offers none."""
    from contain.linux import cgroups

    v2 = cgroups.detect().v2
    if v2 is None:
        pytest.skip("no cgroup2 hierarchy is mounted on this host")
    top = os.path.join(v2, f"contain-deleg-{secrets.token_hex(3)}")
    os.mkdir(top)
    try:
        caller = os.path.join(top, "caller")
        os.mkdir(caller)
        for d in (top, caller):
            for p in (d, d + "/cgroup.procs", d + "/cgroup.subtree_control", d + "/cgroup.threads"):
                os.chown(p, user.uid, user.gid)
        yield top, caller
    finally:
        # Deepest first; a container's monitor may be removing its own meanwhile.
        for d, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            try:
                with open(d + "/cgroup.procs") as f:
                    left = f.read().split()
            except FileNotFoundError:
                continue
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            cgroups._rmdir(cgroups._SYSCALLS, d, time.monotonic() + 5)  # retried while busy


def test_containers_get_cgroups_in_a_delegated_subtree(user, delegated):
    top, caller = delegated
    with open(top + "/cgroup.controllers") as f:
        offered = f.read().split()
    out = user.result(_INTEGRATION + """
import time
from contain import Container
from contain.errors import InvalidArgument
from contain._root import get_root
img = busybox_image()
root = get_root()
c = Container.run(img, ["sh", "-c", "cat /proc/self/cgroup; echo ready; sleep 60"],
                  network="none")
deadline = time.monotonic() + 10
while b"ready" not in c.logs() and time.monotonic() < deadline:
    time.sleep(0.01)
pid = c.attrs["State"]["Pid"]
cg = root.cgroups.open(c.id)
with open(cg.v2_path + "/cgroup.procs") as f:
    procs = f.read().split()
c.pause()
paused = c.status
frozen = cg.frozen
c.unpause()
top_pids = [row[1] for row in c.top()["Processes"]]
# exec joins the container's cgroup: its process is listed there while it runs.
ex_code, ex_out = c.exec_run(["sh", "-c", "grep -c . /sys/fs/cgroup/cgroup.procs; cat /proc/self/cgroup"])
limited = {}
try:
    d = Container.run(img, ["sleep", "30"], network="none", mem_limit="64m", pids_limit=20)
    with open(root.cgroups.open(d.id).v2_path + "/memory.max") as f:
        limited["memory.max"] = f.read().strip()
    d.remove(force=True)
except InvalidArgument as e:
    limited["error"] = str(e)
logs = c.logs().decode()
c.kill()
code = c.wait(timeout=20)
c.remove()
print(json.dumps({"id": c.id, "pid": pid, "dir": cg.v2_path, "procs": procs, "logs": logs,
                  "paused": paused, "frozen": frozen, "top": top_pids, "limited": limited,
                  "code": code, "left": os.path.exists(cg.v2_path),
                  "exec": [ex_code, ex_out.decode()],
                  "version": contain.info()["CgroupVersion"]}))
""", cgroup=caller)
    assert out["dir"] == f"{top}/contain/{out['id']}", out
    assert str(out["pid"]) in out["procs"]
    assert out["paused"] == "paused" and out["frozen"] is True
    assert str(out["pid"]) in [str(p) for p in out["top"]]
    assert out["code"] == 137 and out["left"] is False
    assert out["version"] == "2"
    # Its cgroup namespace: the container sees its own cgroup as the root.
    assert "0::/" in out["logs"].splitlines(), out["logs"]
    ex_code, ex_out = out["exec"]
    assert ex_code == 0 and "0::/" in ex_out.splitlines(), out["exec"]
    assert int(ex_out.split()[0]) >= 3  # sleep's shell, the exec'd shell, grep: one cgroup
    if "memory" in offered and "pids" in offered:
        assert out["limited"] == {"memory.max": str(64 << 20)}
    else:
        missing = [c for c in ("memory", "pids") if c not in offered]
        assert f"the delegated cgroup v2 subtree {top} offers no {', '.join(missing)}" in out["limited"]["error"]
    assert [e for e in os.listdir(top + "/contain") if os.path.isdir(os.path.join(top, "contain", e))] == []


_SHARED_USERNS = _INTEGRATION + """
import time
from contain import Container
from contain._root import get_root
from contain.linux import userns
from contain.linux.rootless import runtime_dir
img = busybox_image()
inodes, stats = [], []
for i in range(4):  # from the second on, a root mounted ahead in the shared namespace
    c = Container.run(img, ["sh", "-c", "id -u; stat -c %u /etc/passwd; ls /sys/class/net; sleep 30"],
                      network="none")
    deadline = time.monotonic() + 10
    while len(c.logs().split()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    inodes.append(os.stat(f"/proc/{c.attrs['State']['Pid']}/ns/user").st_ino)
    stats.append(c.logs().decode().split())
    c.kill()
    c.wait(timeout=10)
    c.remove()
prep = get_root().preparer
holder = userns.holder(runtime_dir())
from contain.net import pool
print(json.dumps({"inodes": inodes, "stats": stats, "holder": holder,
                  "netns_ahead": sum(p.hits for p in pool._bare_in.values()),
                  "holder_ns": os.stat(f"/proc/{holder}/ns/user").st_ino if holder else None,
                  "prepared_used": prep.used if prep else None}))
"""


def test_containers_join_one_long_lived_user_namespace(user):
    """No newuidmap per container: one holder per user keeps the namespace,
    every container of every process of the user joins it, and a holder
    that is gone is made anew."""
    first = user.result(_SHARED_USERNS)
    assert first["holder"] and len(set(first["inodes"])) == 1, first
    assert first["inodes"][0] == first["holder_ns"]
    # Root inside, the image's owners kept, only lo in its network namespace.
    assert all(s == ["0", "0", "lo"] for s in first["stats"]), first["stats"]
    # Roots mounted and network namespaces made ahead, as members of the namespace.
    assert first["prepared_used"] >= 1 and first["netns_ahead"] >= 1, first
    # Another process of the user: the same holder, the same namespace.
    second = user.result(_SHARED_USERNS)
    assert second["holder"] == first["holder"] and second["inodes"][0] == first["holder_ns"]
    # The holder is an ordinary process of the user, nobody's child.
    with open(f"/proc/{first['holder']}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    assert status["Uid"].split()[0] == str(user.uid)
    assert int(status["PPid"]) != os.getpid()
    # Killed, it is made anew (a record naming a dead pid does not count).
    os.kill(first["holder"], 9)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{first['holder']}") and time.monotonic() < deadline:
        time.sleep(0.01)
    third = user.result(_SHARED_USERNS)
    assert third["holder"] not in (None, first["holder"])
    # (Its inode may be the old one's: the kernel reuses a freed namespace's.)
    assert set(third["inodes"]) == {third["holder_ns"]}


def test_restart_policy_as_an_ordinary_user(user):
    """The restart process the monitor execs runs as the user on the host
    (not as uid 0 of the container's user namespace), finds the user's
    root, and starts the container again in the shared namespace."""
    out = user.result(_INTEGRATION + """
import time
from contain import Container
img = busybox_image()
c = Container.run(img, ["sh", "-c", "echo run; exit 3"], network="none",
                  restart_policy={"Name": "on-failure", "MaximumRetryCount": 2})
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    info = c.inspect()
    if info["RestartCount"] == 2 and not info["State"]["Running"] and not c._monitor_running():
        break
    time.sleep(0.05)
info = c.inspect()
logs = c.logs().decode()
c.remove(force=True)
print(json.dumps({"restarts": info["RestartCount"], "logs": logs, "code": info["State"]["ExitCode"]}))
""")
    assert out == {"restarts": 2, "logs": "run\nrun\nrun\n", "code": 3}, out
    # It used the user's runtime directory, and with it the one holder.
    assert not os.path.exists(f"/tmp/contain-{user.uid}")
    holders = [pid for pid in os.listdir("/proc") if pid.isdigit() and _owner(int(pid)) == user.uid
               and _cmdline(int(pid)).endswith("--hold-userns")]
    assert len(holders) == 1, holders


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def test_joining_a_user_namespace_needs_a_monitor():
    from contain.linux import runtime
    from contain.linux.spec import Linux, Namespace, Process, Root, Spec

    spec = Spec(process=Process(args=["/bin/true"]), root=Root("/nonexistent"),
                linux=Linux(namespaces=[Namespace("user"), Namespace("mount")]))
    fd = os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(InvalidArgument, match="needs a monitor"):
            runtime.spawn(spec, userns_fd=fd)
    finally:
        os.close(fd)


def test_newuidmap_failure_names_the_step(user, tmp_path):
    """A range the user does not own: newuidmap refuses, and the error says so."""
    out = user.result("""
import json, os, tempfile
from contain.linux import rootless
from contain.linux.spec import Spec, Process, Root, Linux, Namespace
from contain.linux.runtime import spawn
from contain.errors import RuntimeFailure
import shutil
d = tempfile.mkdtemp()
with open(os.path.join(d, "subuid"), "w") as f:
    f.write(f"{os.getuid()}:7000000:65536\\n")
maps = rootless.id_maps(subuid=os.path.join(d, "subuid"), subgid="/etc/subgid")
shutil.rmtree(d)
spec = Spec(Process(["/bin/true"]), Root("/"), linux=Linux(namespaces=[Namespace("user"), Namespace("mount")]))
rootless.adapt_spec(spec, maps, network_mode="host")
try:
    spawn(spec, **rootless.spawn_options(maps))
    print(json.dumps({"ok": True}))
except RuntimeFailure as e:
    print(json.dumps({"step": e.step, "text": str(e)}))
""")
    assert out.get("step") == "newuidmap", out
    assert "exit status 1" in out["text"] and "7000000" in out["text"]


def test_unpack_in_the_user_namespace_keeps_owners(user, tmp_path):
    """A layer with files of several owners, unpacked by the user inside a
    user namespace of the container's mapping: owner u lands on subuid+u-1."""
    layer = os.path.join(user.home, "layer.tar")
    with tarfile.open(layer, "w") as tar:
        for name, uid, gid in (("rootfile", 0, 0), ("userfile", 1000, 1000), ("nobody", 65534, 65534)):
            info = tarfile.TarInfo(name)
            info.size = 2
            info.uid, info.gid = uid, gid
            import io

            tar.addfile(info, io.BytesIO(b"x\n"))
    os.chown(layer, user.uid, user.gid)
    out = user.result("""
import json, os
from contain.linux import rootless
from contain.storage import userns
maps = rootless.id_maps()
dest = os.path.join(os.environ["HOME"], "unpacked")
with open(os.path.join(os.environ["HOME"], "layer.tar"), "rb") as f:
    userns.unpack(maps, f, dest)
print(json.dumps({n: [os.lstat(os.path.join(dest, n)).st_uid, os.lstat(os.path.join(dest, n)).st_gid]
                  for n in os.listdir(dest)}))
""")
    s = user.subid_start
    assert out == {"rootfile": [user.uid, user.gid], "userfile": [s + 999, s + 999],
                   "nobody": [s + 65533, s + 65533]}


def test_single_id_mapping_runs_a_root_owned_image(user):
    out = user.result(_INTEGRATION + """
# As for a user with no subordinate ranges: only its own id is mapped.
from contain._root import get_root
from contain.linux import rootless
get_root().store._id_maps = rootless.id_maps(subuid="/nonexistent", subgid="/nonexistent")
from contain import Container
img = busybox_image()
c = Container.run(img, ["id", "-u"], network="none")
code = c.wait(timeout=20)
logs = c.logs().decode()
err = c.attrs["State"]["Error"]
c.remove()
print(json.dumps({"code": code, "logs": logs, "error": err}))
""")
    assert out["code"] == 0 and out["logs"].strip() == "0", out


# ------------------------------------------- the rootless network: slirp4netns
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch(url: str, timeout: float = 10) -> bytes:
    """GET a loopback URL, retrying while the server inside comes up."""
    import time
    import urllib.request

    assert url.startswith("http://127.0.0.1:")  # loopback only
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def _helpers(user) -> list[int]:
    from contain.net.userspace import helper_pids

    return helper_pids(user.uid)


def _wait_no_helpers(user, timeout: float = 3.0) -> list[int]:
    import time

    deadline = time.time() + timeout
    while _helpers(user) and time.time() < deadline:
        time.sleep(0.02)
    return _helpers(user)


@pytest.fixture(scope="module")
def slirp(user):
    if shutil.which("slirp4netns") is None:
        r = subprocess.run(["apt-get", "install", "-y", "-q", "slirp4netns"], capture_output=True, text=True)
        if r.returncode != 0 or shutil.which("slirp4netns") is None:
            pytest.skip(f"slirp4netns is not installed and apt-get failed: {r.stderr[-300:]}")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun on this host: slirp4netns needs a tap device")
    return user


_HTTPD = ["sh", "-c", "mkdir -p /www && echo hello-rootless > /www/index.html && "
                      "exec httpd -f -p 80 -h /www"]


def test_published_port_on_the_default_network(slirp):
    user = slirp
    port = _free_port()
    out = user.result(_INTEGRATION + f"""
from contain import Container
img = busybox_image()
c = Container.run(img, {_HTTPD!r}, ports={{80: {port}}}, detach=True) if False else \\
    Container.run(img, {_HTTPD!r}, ports={{80: {port}}})
print(json.dumps({{"id": c.id, "mode": c.attrs["HostConfig"]["NetworkMode"],
                  "ports": c.attrs["NetworkSettings"]["Ports"],
                  "ip": c.attrs["NetworkSettings"]["Networks"]["slirp4netns"]["IPAddress"]}}))
""")
    # The caller has exited: the container and its network live on (detached).
    try:
        assert out["mode"] == "slirp4netns"  # the rootless default
        assert out["ports"]["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": str(port)}]
        assert out["ip"] == "10.0.2.100"
        assert _fetch(f"http://127.0.0.1:{port}/") == b"hello-rootless\n"
        assert len(_helpers(user)) == 1
    finally:
        gone = user.result(_SETTLED + f"""
import json, os
from contain import Container
c = Container.get({out["id"]!r})
c.remove(force=True)
from contain.linux.rootless import runtime_dir
from contain._root import get_root, wait_for_discards
wait_for_discards(10)
d = get_root().containers
# Spares (a root mounted ahead and never used, kept for the next) are empty containers.
print(json.dumps({{"left": _settled(runtime_dir),
                  "trash": [n for n in os.listdir(d) if n.startswith(".") and not n.startswith(".spare-")],
                  "spares": [os.listdir(os.path.join(d, n, "upper")) for n in os.listdir(d)
                             if n.startswith(".spare-")]}}))
""")
    assert _helpers(user) == []  # removed: no helper process left ...
    assert gone["left"] == []  # ... and no API socket
    assert gone["trash"] == []  # its files deleted, overlay's mode-000 work/work included
    assert all(upper == [] for upper in gone["spares"]), gone["spares"]
    assert host_leaks(out["id"]) == []


def test_helper_ends_with_the_container(slirp):
    """No Python process watches: the helper ends when the container does."""
    user = slirp
    port = _free_port()
    out = user.result(_INTEGRATION + f"""
from contain import Container
img = busybox_image()
c = Container.run(img, ["sh", "-c", "sleep 0.5"], ports={{80: {port}}})
print(json.dumps({{"id": c.id}}))
""")
    assert _wait_no_helpers(user) == []
    after = user.result(_SETTLED + f"""
import json, os
from contain import Container
from contain.linux.rootless import runtime_dir
c = Container.get({out["id"]!r})
code = c.wait(timeout=10)
left = _settled(runtime_dir)
print(json.dumps({{"code": code, "left": left}}))
""")
    assert after == {"code": 0, "left": []}
    again = user.result(_SETTLED + f"""
import json, os
from contain import Container
from contain.linux.rootless import runtime_dir
c = Container.get({out["id"]!r})
c.start()  # again: a new helper, the same published port
code = c.wait(timeout=10)
left = _settled(runtime_dir)
c.remove()
from contain._root import wait_for_discards
wait_for_discards(10)
print(json.dumps({{"code": code, "left": left}}))
""")
    assert again == {"code": 0, "left": []}
    assert _helpers(user) == []


def test_the_same_port_right_after_an_ended_container(slirp):
    """An ended container's helper goes in the background, but a start of this
    process never finds its own dying helper still holding the port."""
    user = slirp
    port = _free_port()
    out = user.result(_INTEGRATION + f"""
from contain import Container
img = busybox_image()
codes = []
for i in range(5):
    c = Container.run(img, ["sh", "-c", "sleep 0.2"], ports={{80: {port}}})
    codes.append(c.wait(timeout=20))
    c.remove()
print(json.dumps({{"codes": codes}}))
""")
    assert out == {"codes": [0] * 5}
    assert _wait_no_helpers(user) == []


def test_port_in_use_is_a_clear_error(slirp):
    import socket

    user = slirp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = user.result(_INTEGRATION + f"""
from contain import Container
from contain.errors import Conflict
img = busybox_image()
try:
    Container.run(img, ["sleep", "30"], ports={{80: ("127.0.0.1", {port})}})
    print(json.dumps({{"error": None}}))
except Conflict as e:
    print(json.dumps({{"error": str(e), "left": [c.id for c in Container.list(all=True)]}}))
""")
    assert out["error"] == f"Bind for 127.0.0.1:{port}/tcp failed: port is already allocated"
    assert out["left"] == []
    assert _helpers(user) == []


def test_outbound_to_the_host_loopback(slirp):
    """10.0.2.2 is the host's loopback, only when asked for: a server on
    127.0.0.1 here answers then, and is out of reach by default."""
    import http.server
    import threading

    user = slirp
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = b"from-the-host\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = user.result(_INTEGRATION + f"""
from contain import Container
img = busybox_image()
# (no wget -T: this busybox build crashes with it; timeout bounds each try)
script = ("for i in 1 2 3 4 5 6 7 8 9 10; do timeout 2 wget -q -O- http://10.0.2.2:{port}/$0 && exit 0; "
          "sleep 0.2; done; exit 1")
res = {{}}
for mode, tag in (("slirp4netns:allow_host_loopback=true", "allowed"), (None, "default")):
    c = Container.run(img, ["sh", "-c", script, tag], network=mode)
    res[tag] = [c.wait(timeout=30), c.logs().decode()]
    c.remove()
from contain._root import wait_for_discards
wait_for_discards(10)
print(json.dumps(res))
""")
    finally:
        server.shutdown()
        server.server_close()
    # The helper starts once the container's process exists (see
    # docs/rootless.md): a first try may find no network yet.
    assert out["allowed"][0] == 0 and out["allowed"][1].endswith("from-the-host\n"), out
    assert set(out["allowed"][1].splitlines()[:-1]) <= {
        "wget: can't connect to remote host (10.0.2.2): Network is unreachable"}, out
    assert out["default"][0] != 0, out
    assert hits == ["/allowed"]
    assert _helpers(user) == []


def test_user_defined_network_is_a_clear_error(slirp):
    out = slirp.result(_INTEGRATION + """
from contain import Container
from contain.errors import InvalidArgument
img = busybox_image()
try:
    Container.create(img, ["true"], network="mynet")
    print(json.dumps({"error": None}))
except InvalidArgument as e:
    print(json.dumps({"error": str(e)}))
""")
    assert "user-defined networks are not supported for an ordinary user" in out["error"]
