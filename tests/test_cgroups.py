"""Tests of contain.linux.cgroups.

Two kinds:
* fake trees under tmp_path (v2, v1, hybrid), driven through a FakeKernel that imitates
  what cgroupfs does on mkdir/rmdir/write (control files appear, v1 cpuset refuses tasks
  until set, memsw must stay >= limit, rmdir of a populated cgroup is EBUSY).  They check
  detection and the exact values written; they cannot enforce limits.
* real tests on this host's kernel (need root and a mounted cgroup layout), under a
  unique parent name that is removed at the end; they check that nothing is left.
"""

from __future__ import annotations

import errno
import os
import secrets
import subprocess
import sys

import pytest

from contain.errors import Conflict, InvalidArgument, NotFound, RuntimeFailure
from contain.linux import cgroups as cg
from contain.linux.cgroups import (
    CGROUP2_SUPER_MAGIC,
    CGROUP_SUPER_MAGIC,
    CgroupManager,
    Layout,
    Resources,
    Syscalls,
    detect,
    parse_size,
)

UNLIMITED_V1 = "9223372036854771712"

# --------------------------------------------------------------------------- fake kernel

V2_CONTROLLER_FILES = {
    "memory": {
        "memory.max": "max\n", "memory.swap.max": "max\n", "memory.low": "0\n",
        "memory.current": "0\n", "memory.peak": "0\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    },
    "cpu": {"cpu.weight": "100\n", "cpu.max": "max 100000\n"},
    "pids": {"pids.max": "max\n", "pids.current": "0\n"},
    "cpuset": {"cpuset.cpus": "\n", "cpuset.mems": "\n"},
    "io": {"io.weight": "default 100\n"},
}

V1_ROOT_FILES = {
    "memory": {
        "memory.limit_in_bytes": UNLIMITED_V1, "memory.memsw.limit_in_bytes": UNLIMITED_V1,
        "memory.soft_limit_in_bytes": UNLIMITED_V1, "memory.usage_in_bytes": "0",
        "memory.max_usage_in_bytes": "0",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    },
    "cpu": {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"},
    "cpuacct": {"cpuacct.usage": "0"},
    "cpuset": {"cpuset.cpus": "0-3", "cpuset.mems": "0"},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "freezer": {"freezer.state": "THAWED"},
    "devices": {"devices.list": "a *:* rwm"},
    "blkio": {"blkio.weight": "500"},
    "name=systemd": {},
}


def _put(path, text):
    with open(path, "w") as f:
        f.write(text)


def _get(path):
    with open(path) as f:
        return f.read()


class FakeKernel(Syscalls):
    """cgroupfs semantics, on ordinary directories."""

    def __init__(self):
        self.writes: list[tuple[str, str]] = []
        self.fail: dict[str, int] = {}  # file name -> errno to fail writes with
        self.killed: list[int] = []
        self.roots: list[str] = []

    # a directory is v2 when it has cgroup.subtree_control
    def mkdir(self, path):
        parent = os.path.dirname(path)
        os.mkdir(path)
        if os.path.exists(parent + "/cgroup.subtree_control"):
            enabled = _get(parent + "/cgroup.subtree_control").split()
            files = {
                "cgroup.procs": "", "cgroup.controllers": " ".join(enabled) + "\n",
                "cgroup.subtree_control": "\n", "cgroup.events": "populated 0\nfrozen 0\n",
                "cgroup.freeze": "0\n", "cgroup.kill": "", "cpu.stat": "usage_usec 0\n",
            }
            for c in enabled:
                files.update(V2_CONTROLLER_FILES.get(c, {}))
        else:
            files = {}
            for entry in os.scandir(parent):
                if entry.is_file():
                    files[entry.name] = _get(entry.path)
            files.update({"cgroup.procs": "", "tasks": ""})
            for name in ("cpuset.cpus", "cpuset.mems"):
                if name in files:
                    files[name] = "\n"  # a fresh v1 cpuset is empty
        for name, text in files.items():
            _put(os.path.join(path, name), text)

    def rmdir(self, path):
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if self.subdirs(path) or _get(path + "/cgroup.procs").split():
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        for entry in os.scandir(path):
            os.unlink(entry.path)
        os.rmdir(path)

    def write(self, path, data):
        self.writes.append((path, data))
        name = os.path.basename(path)
        if name in self.fail:
            raise OSError(self.fail[name], os.strerror(self.fail[name]), path)
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        d = os.path.dirname(path)
        if name == "cgroup.procs":
            for f in ("cpuset.cpus", "cpuset.mems"):
                if os.path.exists(f"{d}/{f}") and not _get(f"{d}/{f}").strip():
                    raise OSError(errno.ENOSPC, "No space left on device", path)
            _put(path, _get(path) + data.strip() + "\n")
        elif name == "cgroup.freeze":
            _put(path, data + "\n")
            _put(d + "/cgroup.events", f"populated 0\nfrozen {data.strip()}\n")
        elif name == "cgroup.kill":
            for pid in _get(d + "/cgroup.procs").split():
                self.kill(int(pid), 9)
        elif name == "cgroup.subtree_control":
            enabled = _get(path).split()
            for token in data.split():
                if token[0] == "+" and token[1:] not in enabled:
                    enabled.append(token[1:])
                elif token[0] == "-" and token[1:] in enabled:
                    enabled.remove(token[1:])
            _put(path, " ".join(enabled) + "\n")
        elif name == "memory.limit_in_bytes":
            memsw = d + "/memory.memsw.limit_in_bytes"
            if os.path.exists(memsw) and _limit(data) > _limit(_get(memsw)):
                raise OSError(errno.EINVAL, "Invalid argument", path)
            _put(path, data)
        elif name == "memory.memsw.limit_in_bytes":
            if _limit(data) < _limit(_get(d + "/memory.limit_in_bytes")):
                raise OSError(errno.EINVAL, "Invalid argument", path)
            _put(path, data)
        else:
            _put(path, data)

    def kill(self, pid, sig):
        self.killed.append(pid)
        for root in self.roots:
            for d, _, files in os.walk(root):
                if "cgroup.procs" in files:
                    procs = _get(d + "/cgroup.procs").split()
                    if str(pid) in procs:
                        procs.remove(str(pid))
                        _put(d + "/cgroup.procs", "".join(p + "\n" for p in procs))

    def written(self, path):
        """The last value written to ``path``."""
        values = [data for p, data in self.writes if p == path]
        assert values, f"nothing was written to {path}"
        return values[-1]


def _limit(text):
    value = int(text.strip())
    return 1 << 63 if value == -1 else value


def _mountinfo_line(n, point, fstype, options):
    point = point.replace(" ", "\\040")
    return f"{n} 20 0:{n} / {point} rw,relatime - {fstype} {fstype} rw,{options}\n"


@pytest.fixture
def kernel():
    return FakeKernel()


def make_v2(tmp_path, kernel, controllers="cpuset cpu io memory hugetlb pids rdma misc"):
    root = tmp_path / "cgroup"
    root.mkdir()
    for name, text in {
        "cgroup.controllers": controllers + "\n", "cgroup.subtree_control": "\n",
        "cgroup.procs": "1\n", "cpu.stat": "usage_usec 5\n",
    }.items():
        _put(root / name, text)
    mountinfo = tmp_path / "mountinfo"
    _put(mountinfo, "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
         + _mountinfo_line(30, str(root), "cgroup2", "nsdelegate"))
    kernel.roots.append(str(root))
    return str(root), str(mountinfo)


def make_v1(tmp_path, kernel, *, hybrid=False, combined=False, memsw=True):
    root = tmp_path / "cgroup"
    root.mkdir()
    lines = [_mountinfo_line(29, str(root), "tmpfs", "mode=755")]
    hierarchies = {c: c for c in V1_ROOT_FILES if c not in ("cpu", "cpuacct", "name=systemd")}
    hierarchies["systemd"] = "name=systemd"
    if combined:
        hierarchies["cpu,cpuacct"] = "cpu,cpuacct"
    else:
        hierarchies["cpu"] = "cpu"
        hierarchies["cpuacct"] = "cpuacct"
    for n, (dirname, options) in enumerate(sorted(hierarchies.items()), start=31):
        d = root / dirname
        d.mkdir()
        _put(d / "cgroup.procs", "1\n")
        _put(d / "tasks", "1\n")
        for controller in options.split(","):
            for name, text in V1_ROOT_FILES[controller].items():
                if name.startswith("memory.memsw") and not memsw:
                    continue
                _put(d / name, text)
        lines.append(_mountinfo_line(n, str(d), "cgroup", options))
        kernel.roots.append(str(d))
    if combined:
        os.symlink("cpu,cpuacct", root / "cpu")
        os.symlink("cpu,cpuacct", root / "cpuacct")
    if hybrid:
        u = root / "unified"
        u.mkdir()
        for name, text in {"cgroup.controllers": "hugetlb\n", "cgroup.subtree_control": "\n",
                           "cgroup.procs": "1\n"}.items():
            _put(u / name, text)
        lines.append(_mountinfo_line(50, str(u), "cgroup2", "nsdelegate"))
        kernel.roots.append(str(u))
    mountinfo = tmp_path / "mountinfo"
    _put(mountinfo, "".join(lines))
    return str(root), str(mountinfo)


def manager(root, mountinfo, kernel, **kw):
    return CgroupManager.for_host(kw.pop("parent", "contain"), root=root,
                                  mountinfo=mountinfo, syscalls=kernel, **kw)


def all_dirs(root):
    return sorted(d for d, _, _ in os.walk(root))


# --------------------------------------------------------------------------- detection


def test_detect_v2(tmp_path, kernel):
    root, mountinfo = make_v2(tmp_path, kernel)
    layout = detect(root, mountinfo, syscalls=kernel)
    assert layout.mode == "v2"
    assert layout.v2 == root and dict(layout.v1) == {}
    assert layout.v2_controllers == {"cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"}


def test_detect_v1(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel)
    layout = detect(root, mountinfo, syscalls=kernel)
    assert layout.mode == "v1"
    assert layout.v2 is None
    assert layout.v1["memory"] == f"{root}/memory"
    assert layout.v1["cpu"] == f"{root}/cpu" and layout.v1["cpuacct"] == f"{root}/cpuacct"
    assert layout.v1["name=systemd"] == f"{root}/systemd"
    assert set(layout.v1) == set(V1_ROOT_FILES)


def test_detect_hybrid_and_combined_mounts(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel, hybrid=True, combined=True)
    layout = detect(root, mountinfo, syscalls=kernel)
    assert layout.mode == "hybrid"
    assert layout.v2 == f"{root}/unified"
    assert layout.v2_controllers == {"hugetlb"}
    assert layout.v1["cpu"] == layout.v1["cpuacct"] == f"{root}/cpu,cpuacct"


def test_detect_ignores_mounts_elsewhere_and_hidden_ones(tmp_path, kernel):
    root = tmp_path / "cg"
    root.mkdir()
    mountinfo = tmp_path / "mountinfo"
    _put(mountinfo, _mountinfo_line(1, "/elsewhere/memory", "cgroup", "memory")
         + _mountinfo_line(2, f"{root}", "cgroup2", "")
         + _mountinfo_line(3, f"{root}", "tmpfs", "")  # hides the cgroup2 mount
         + _mountinfo_line(4, f"{root}/with space", "cgroup", "xattr,name=systemd"))
    layout = detect(str(root), str(mountinfo), syscalls=kernel)
    assert layout.mode == "v1"
    assert dict(layout.v1) == {"name=systemd": f"{root}/with space"}


def test_detect_nothing_mounted(tmp_path, kernel):
    mountinfo = tmp_path / "mountinfo"
    _put(mountinfo, "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
    with pytest.raises(RuntimeFailure, match="no cgroup filesystem"):
        detect(str(tmp_path), str(mountinfo), syscalls=kernel)


def test_detect_falls_back_to_statfs_magic(tmp_path, kernel):
    root = tmp_path / "cg"
    for name in ("memory", "cpu,cpuacct", "systemd", "unified"):
        (root / name).mkdir(parents=True)
    os.symlink("cpu,cpuacct", root / "cpu")
    magic = {str(root / "memory"): CGROUP_SUPER_MAGIC, str(root / "cpu,cpuacct"): CGROUP_SUPER_MAGIC,
             str(root / "systemd"): CGROUP_SUPER_MAGIC, str(root / "unified"): CGROUP2_SUPER_MAGIC}
    kernel.statfs_magic = lambda path: magic.get(path, 0x01021994)
    layout = detect(str(root), str(tmp_path / "no-mountinfo"), syscalls=kernel)
    assert layout.mode == "hybrid"
    assert layout.v1 == {"memory": f"{root}/memory", "cpu": f"{root}/cpu,cpuacct",
                         "cpuacct": f"{root}/cpu,cpuacct", "name=systemd": f"{root}/systemd"}
    assert layout.v2 == f"{root}/unified"
    kernel.statfs_magic = lambda path: CGROUP2_SUPER_MAGIC
    assert detect(str(root), str(tmp_path / "no-mountinfo"), syscalls=kernel).mode == "v2"


def test_statfs_magic_of_real_paths():
    assert cg._statfs_magic("/") not in (None, CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC)
    assert cg._statfs_magic("/nonexistent-path-xyz") is None


# --------------------------------------------------------------------------- resources


def test_parse_size():
    assert parse_size("512m") == 512 << 20
    assert parse_size("1g") == 1 << 30
    assert parse_size("1.5GiB") == 3 << 29
    assert parse_size("100") == 100
    assert parse_size("64k") == 65536
    assert parse_size(4096) == 4096
    assert parse_size("-1") == -1
    for bad in ("12x", "", "m", "1..2g", 1.5, True, None):
        with pytest.raises(InvalidArgument):
            parse_size(bad)


def test_from_docker():
    r = Resources.from_docker(memory="512m", cpus=1.5, cpu_shares=512, pids_limit=100,
                              cpuset_cpus="0-1")
    assert r == Resources(memory=512 << 20, memory_swap=1 << 30, cpu_quota=150000,
                          cpu_period=100000, cpu_shares=512, pids_limit=100, cpuset_cpus="0-1")
    assert Resources.from_docker(nano_cpus=500_000_000).cpu_quota == 50000
    assert Resources.from_docker(mem_limit=1 << 30, memswap_limit=-1).memory_swap == -1
    assert Resources.from_docker(mem_limit="1g", memswap_limit="1g").memory_swap == 1 << 30
    assert Resources.from_docker(mem_limit=0, cpu_shares=0) == Resources()
    assert Resources.from_docker(pids_limit=0).pids_limit == -1
    assert Resources.from_docker(cpu_quota=20000, cpu_period=50000) == Resources(
        cpu_quota=20000, cpu_period=50000)


@pytest.mark.parametrize("kwargs, message", [
    (dict(memory="1m"), "minimum memory"),
    (dict(memswap_limit="1g"), "memory limit"),
    (dict(memory="1g", mem_limit="2g"), "disagree"),
    (dict(cpus=1.5, cpu_quota=1000), "conflicting"),
    (dict(cpus=0.001), "0.01"),
    (dict(cpus=0.0000000001), "too precise"),
    (dict(cpus="lots"), "invalid cpus"),
    (dict(memory="2g", memory_swap="1g"), "at least"),
])
def test_from_docker_rejects(kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        Resources.from_docker(**kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(memory=0), dict(memory=-2), dict(memory="1g"), dict(memory_swap=1 << 30),
    dict(memory=1 << 30, memory_swap=1 << 20), dict(memory=-1, memory_swap=1 << 30),
    dict(memory=1 << 20, memory_reservation=1 << 30), dict(cpu_shares=1),
    dict(cpu_shares=262145), dict(cpu_quota=999), dict(cpu_period=999),
    dict(cpu_period=1_000_001), dict(pids_limit=-2), dict(cpuset_cpus="0-"),
    dict(cpuset_cpus="3-1"), dict(cpuset_mems="a"), dict(pids_limit=True),
])
def test_resources_rejects(kwargs):
    with pytest.raises(InvalidArgument):
        Resources(**kwargs)


@pytest.mark.parametrize("shares, weight", [(2, 1), (1024, 39), (512, 20), (262144, 10000)])
def test_cpu_weight_as_crun(shares, weight):
    assert Resources(cpu_shares=shares).cpu_weight == weight


# --------------------------------------------------------------------------- v2 fake tree


def test_v2_create_writes_exact_values(tmp_path, kernel):
    root, mountinfo = make_v2(tmp_path, kernel)
    m = manager(root, mountinfo, kernel)
    r = Resources.from_docker(memory="512m", memory_swap="1g", memory_reservation="256m",
                              cpus=1.5, cpu_shares=1024, pids_limit=64,
                              cpuset_cpus="0-1", cpuset_mems="0")
    c = m.create("abc", r)
    d = f"{root}/contain/abc"
    assert c.paths == {"unified": d} and c.v2_path == d
    assert c.procs_files() == [d + "/cgroup.procs"]
    assert c.procs_files(include_v2=False) == []
    assert c.join_files() == [d + "/cgroup.procs"] and c.join_files(include_v2=False) == []
    # controllers enabled along the path, only those the kernel has, in one write each
    assert kernel.written(f"{root}/cgroup.subtree_control") == "+cpu +cpuset +io +memory +pids"
    assert kernel.written(f"{root}/contain/cgroup.subtree_control") == "+cpu +cpuset +io +memory +pids"
    assert _get(d + "/memory.max") == str(512 << 20)
    assert _get(d + "/memory.swap.max") == str(512 << 20)  # (memory+swap) - memory
    assert _get(d + "/memory.low") == str(256 << 20)
    assert _get(d + "/cpu.max") == "150000 100000"
    assert _get(d + "/cpu.weight") == "39"
    assert _get(d + "/pids.max") == "64"
    assert _get(d + "/cpuset.cpus") == "0-1" and _get(d + "/cpuset.mems") == "0"


def test_v2_second_create_does_not_rewrite_subtree_control(tmp_path, kernel):
    root, mountinfo = make_v2(tmp_path, kernel)
    m = manager(root, mountinfo, kernel)
    m.create("one")
    before = len(kernel.writes)
    m.create("two")
    assert kernel.writes[before:] == []  # nothing to write for empty resources
    assert m.leftovers() == ["one", "two"]


def test_v2_update_and_unlimited(tmp_path, kernel):
    root, mountinfo = make_v2(tmp_path, kernel)
    c = manager(root, mountinfo, kernel).create("u", Resources(cpu_quota=50000, memory=1 << 30))
    d = c.v2_path
    c.update(Resources(memory=-1, memory_swap=-1, pids_limit=0, cpu_quota=-1))
    assert _get(d + "/memory.max") == "max"
    assert _get(d + "/memory.swap.max") == "max"
    assert _get(d + "/pids.max") == "max"
    assert _get(d + "/cpu.max") == "max 100000"
    c.update(Resources(cpu_quota=20000))
    c.update(Resources(cpu_period=50000))  # the quota stays
    assert _get(d + "/cpu.max") == "20000 50000"
    c.update(Resources(memory=1 << 30, memory_swap=1 << 30))
    assert _get(d + "/memory.swap.max") == "0"


def test_v2_missing_controller_fails_before_mkdir(tmp_path, kernel):
    root, mountinfo = make_v2(tmp_path, kernel, controllers="cpu io")
    m = manager(root, mountinfo, kernel)
    with pytest.raises(RuntimeFailure, match="memory controller") as info:
        m.create("x", Resources(memory=1 << 30))
    assert info.value.errno == errno.EOPNOTSUPP
    assert not os.path.exists(f"{root}/contain/x")
    c = m.create("y", Resources(cpu_shares=100))
    with pytest.raises(RuntimeFailure, match="pids controller"):
        c.update(Resources(pids_limit=10))


def test_v2_failure_mid_create_leaves_nothing(tmp_path, kernel):
    root, mountinfo = make_v2(tmp_path, kernel)
    m = manager(root, mountinfo, kernel)
    kernel.fail["pids.max"] = errno.EINVAL
    with pytest.raises(RuntimeFailure) as info:
        m.create("half", Resources(memory=1 << 30, pids_limit=10))
    assert info.value.step == "cgroup write pids.max" and info.value.errno == errno.EINVAL
    assert "pids.max" in str(info.value) and "'10'" in str(info.value)
    assert all_dirs(root) == [root, f"{root}/contain"]
    assert m.leftovers() == []


def test_v2_freeze_kill_remove(tmp_path, kernel):
    root, mountinfo = make_v2(tmp_path, kernel)
    m = manager(root, mountinfo, kernel)
    c = m.create("f")
    _put(c.v2_path + "/cgroup.procs", "4242\n4343\n")
    assert c.pids() == [4242, 4343]
    c.freeze()
    assert _get(c.v2_path + "/cgroup.freeze") == "1\n" and c.frozen
    c.thaw()
    assert not c.frozen
    c.kill()
    assert kernel.written(c.v2_path + "/cgroup.kill") == "1"
    assert sorted(kernel.killed) == [4242, 4343] and c.pids() == []
    c.remove()
    c.remove()  # idempotent
    assert not os.path.exists(c.v2_path)
    with pytest.raises(NotFound):
        m.open("f")
    m.remove_parent()
    assert all_dirs(root) == [root]


def test_v2_remove_takes_nested_cgroups(tmp_path, kernel):
    root, mountinfo = make_v2(tmp_path, kernel)
    c = manager(root, mountinfo, kernel).create("n")
    kernel.mkdir(c.v2_path + "/init.scope")
    _put(c.v2_path + "/init.scope/cgroup.procs", "77\n")
    assert c.pids() == [77]
    c.remove()
    assert 77 in kernel.killed
    assert not os.path.exists(c.v2_path)


def test_v2_stats(tmp_path, kernel):
    root, mountinfo = make_v2(tmp_path, kernel)
    c = manager(root, mountinfo, kernel).create("s", Resources(memory=1 << 30))
    d = c.v2_path
    _put(d + "/memory.current", "1000\n")
    _put(d + "/memory.peak", "2000\n")
    _put(d + "/cpu.stat", "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n")
    _put(d + "/pids.current", "3\n")
    _put(d + "/memory.events", "low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\n")
    assert c.stats() == cg.Stats(memory_usage=1000, memory_max_usage=2000, memory_limit=1 << 30,
                                 cpu_usage_ns=1234000, pids_current=3, oom_kills=2)


def test_conflict_leaves_existing_cgroup(tmp_path, kernel):
    root, mountinfo = make_v2(tmp_path, kernel)
    m = manager(root, mountinfo, kernel)
    m.create("dup", Resources(pids_limit=5))
    with pytest.raises(Conflict):
        m.create("dup", Resources(pids_limit=7))
    assert _get(f"{root}/contain/dup/pids.max") == "5"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", ".hidden", "-x", "x" * 256, "a\nb"])
def test_bad_names(tmp_path, kernel, name):
    root, mountinfo = make_v2(tmp_path, kernel)
    with pytest.raises(InvalidArgument):
        manager(root, mountinfo, kernel).create(name)


def test_parent_from_environment_and_nested(tmp_path, kernel, monkeypatch):
    root, mountinfo = make_v2(tmp_path, kernel)
    monkeypatch.setenv(cg.PARENT_ENV, "outer/inner")
    m = manager(root, mountinfo, kernel, parent=None)
    assert m.parent == "outer/inner"
    c = m.create("z", Resources(memory=1 << 30))
    assert c.v2_path == f"{root}/outer/inner/z"
    assert "+memory" in kernel.written(f"{root}/outer/cgroup.subtree_control")
    with pytest.raises(InvalidArgument):
        manager(root, mountinfo, kernel, parent="../escape")


# --------------------------------------------------------------------------- v1 and hybrid


V1_DIRS = ("cpuset", "cpu", "cpuacct", "memory", "pids", "freezer", "devices", "blkio")


def test_v1_cpuset_only_when_limited(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel)
    m = manager(root, mountinfo, kernel)
    plain = m.create("plain", Resources(memory=1 << 30))
    assert "cpuset" not in plain.paths
    assert not os.path.exists(f"{root}/cpuset/contain/plain")
    pinned = m.create("pinned", Resources(cpuset_cpus="0-1"))
    assert pinned.paths["cpuset"] == f"{root}/cpuset/contain/pinned"


def test_deferred_cgroup_only_for_v1_without_resources(tmp_path, kernel):
    # What a start may leave to the native core to make while the child
    # builds its root: v1 directories with nothing but device rules to write.
    root, mountinfo = make_v1(tmp_path, kernel)
    m = manager(root, mountinfo, kernel)
    cg_ = m.deferred("d")
    assert cg_ is not None and cg_.paths == {k: v for k, v in m.paths("d").items() if k != "cpuset"}
    assert cg_.paths["memory"] == f"{root}/memory/contain/d"
    assert kernel.writes == [] and not os.path.exists(f"{root}/memory/contain")  # nothing made
    assert m.deferred("d", Resources()) is not None
    assert m.deferred("d", Resources(memory=1 << 30)) is None  # its writes read and order
    assert m.deferred("d", Resources(pids_limit=10)) is None
    (tmp_path / "h").mkdir()
    (tmp_path / "v2").mkdir()
    hroot, hmountinfo = make_v1(tmp_path / "h", kernel, hybrid=True)
    assert manager(hroot, hmountinfo, kernel).deferred("d") is None  # born in its v2 directory
    assert manager(hroot, hmountinfo, kernel, track_unified=False).deferred("d") is not None
    vroot, vmountinfo = make_v2(tmp_path / "v2", kernel)
    assert manager(vroot, vmountinfo, kernel).deferred("d") is None


def test_v1_create_writes_exact_values(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel)
    m = manager(root, mountinfo, kernel)
    assert m.mode == "v1"
    r = Resources.from_docker(memory="512m", memory_reservation="128m", cpus=1.5,
                              cpu_shares=512, pids_limit=32, cpuset_cpus="0-3")
    c = m.create("abc", r)
    assert c.v2_path is None
    assert c.paths == {**{k: f"{root}/{k}/contain/abc" for k in V1_DIRS},
                       "name=systemd": f"{root}/systemd/contain/abc"}
    assert c.procs_files() == [f"{root}/{k}/contain/abc/cgroup.procs"
                               for k in V1_DIRS + ("systemd",)]
    # a single-threaded joiner writes "0" into tasks (no RCU wait, see join_files)
    assert c.join_files() == [f"{root}/{k}/contain/abc/tasks" for k in V1_DIRS + ("systemd",)]
    # cpuset: copied into the parent, then into the container
    for d in (f"{root}/cpuset/contain", f"{root}/cpuset/contain/abc"):
        assert _get(d + "/cpuset.cpus") == "0-3" and _get(d + "/cpuset.mems") == "0"
    mem = c.paths["memory"]
    assert _get(mem + "/memory.limit_in_bytes") == str(512 << 20)
    assert _get(mem + "/memory.memsw.limit_in_bytes") == str(1 << 30)
    assert _get(mem + "/memory.soft_limit_in_bytes") == str(128 << 20)
    assert _get(c.paths["cpu"] + "/cpu.shares") == "512"
    assert _get(c.paths["cpu"] + "/cpu.cfs_quota_us") == "150000"
    assert _get(c.paths["cpu"] + "/cpu.cfs_period_us") == "100000"
    assert _get(c.paths["pids"] + "/pids.max") == "32"
    # the joining child can be accepted by cpuset now
    for f in c.procs_files():
        kernel.write(f, "0")


def test_v1_memory_and_swap_write_order(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel)
    c = manager(root, mountinfo, kernel).create("m", Resources(memory=1 << 30, memory_swap=2 << 30))
    mem = c.paths["memory"]
    c.update(Resources(memory=4 << 30, memory_swap=8 << 30))  # raise: memsw first
    assert (_get(mem + "/memory.limit_in_bytes"), _get(mem + "/memory.memsw.limit_in_bytes")) == (
        str(4 << 30), str(8 << 30))
    c.update(Resources(memory=64 << 20, memory_swap=64 << 20))  # lower: limit first
    assert (_get(mem + "/memory.limit_in_bytes"), _get(mem + "/memory.memsw.limit_in_bytes")) == (
        str(64 << 20), str(64 << 20))
    c.update(Resources(memory=-1, memory_swap=-1))
    assert _get(mem + "/memory.limit_in_bytes") == "-1"
    c.update(Resources(memory_reservation=0, pids_limit=-1, cpu_quota=-1))
    assert _get(mem + "/memory.soft_limit_in_bytes") == "-1"
    assert _get(c.paths["pids"] + "/pids.max") == "max"
    assert _get(c.paths["cpu"] + "/cpu.cfs_quota_us") == "-1"


def test_v1_without_swap_accounting_skips_memsw(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel, memsw=False)
    c = manager(root, mountinfo, kernel).create("m", Resources(memory=1 << 30, memory_swap=2 << 30))
    assert _get(c.paths["memory"] + "/memory.limit_in_bytes") == str(1 << 30)
    assert not any(p.endswith("memsw.limit_in_bytes") for p, _ in kernel.writes)


def test_v1_explicit_cpuset(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel)
    c = manager(root, mountinfo, kernel).create("c", Resources(cpuset_cpus="1"))
    assert _get(c.paths["cpuset"] + "/cpuset.cpus") == "1"
    assert _get(c.paths["cpuset"] + "/cpuset.mems") == "0"


def test_v1_period_retried_after_quota(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel)
    c = manager(root, mountinfo, kernel).create("p")
    cpu = c.paths["cpu"]
    real_write = kernel.write
    refused = []

    def write(path, data):  # the kernel refuses the shorter period until the quota is lower
        if path.endswith("cfs_period_us") and not refused:
            refused.append(data)
            raise OSError(errno.EINVAL, "Invalid argument", path)
        real_write(path, data)

    kernel.write = write
    c.update(Resources(cpu_quota=10000, cpu_period=20000))
    assert refused == ["20000"]
    assert _get(cpu + "/cpu.cfs_quota_us") == "10000" and _get(cpu + "/cpu.cfs_period_us") == "20000"


def test_v1_failure_mid_create_leaves_nothing(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel, hybrid=True)
    m = manager(root, mountinfo, kernel)
    kernel.fail["pids.max"] = errno.EINVAL
    before = set(all_dirs(root))
    with pytest.raises(RuntimeFailure):
        m.create("half", Resources(memory=1 << 30, pids_limit=10))
    created = set(all_dirs(root)) - before
    assert all(d.endswith("/contain") for d in created)  # only the shared parents
    assert m.leftovers() == []
    m.remove_parent()
    assert set(all_dirs(root)) == before


def test_v1_missing_hierarchy_is_reported(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel)
    layout = detect(root, mountinfo, syscalls=kernel)
    layout = Layout(mode="v1", root=root, v1={k: v for k, v in layout.v1.items() if k != "pids"})
    m = CgroupManager(layout, "contain", syscalls=kernel)
    with pytest.raises(RuntimeFailure, match="pids controller"):
        m.create("x", Resources(pids_limit=3))
    assert m.leftovers() == []
    assert "pids" not in m.create("y").paths


def test_hybrid_tracks_in_unified_and_dedupes_combined(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel, hybrid=True, combined=True)
    m = manager(root, mountinfo, kernel)
    assert m.mode == "hybrid"
    c = m.create("h", Resources(cpu_shares=256, memory=1 << 30))
    assert c.paths["cpu"] == c.paths["cpuacct"] == f"{root}/cpu,cpuacct/contain/h"
    assert c.v2_path == f"{root}/unified/contain/h"
    files = c.procs_files()
    # 7 v1 dirs + systemd + unified, less cpuset (joined only for cpuset limits)
    assert len(files) == len(set(files)) == 8
    assert c.v2_path + "/cgroup.procs" in files
    assert c.v2_path + "/cgroup.procs" not in c.procs_files(include_v2=False)
    joins = c.join_files()
    assert c.v2_path + "/cgroup.procs" in joins and len(joins) == 8
    assert all(f.endswith("/tasks") for f in c.join_files(include_v2=False))
    assert len(c.join_files(include_v2=False)) == 7
    assert _get(c.paths["cpu"] + "/cpu.shares") == "256"
    # resources go to v1; the unified tree gets no controllers enabled
    assert not any("subtree_control" in p for p, _ in kernel.writes)
    no_track = manager(root, mountinfo, kernel, track_unified=False, systemd=False)
    c2 = no_track.create("h2")
    assert c2.v2_path is None and "name=systemd" not in c2.paths


def test_v1_freeze_kill_stats_remove_open_leftovers(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel, hybrid=True)
    m = manager(root, mountinfo, kernel)
    c = m.create("k", Resources(memory=1 << 30))
    for f in c.procs_files(include_v2=False):
        kernel.write(f, "555")
    assert c.pids() == [555]
    c.freeze()
    assert _get(c.paths["freezer"] + "/freezer.state") == "FROZEN" and c.frozen
    c.thaw()
    assert _get(c.paths["freezer"] + "/freezer.state") == "THAWED"
    _put(c.paths["memory"] + "/memory.usage_in_bytes", "4096")
    _put(c.paths["memory"] + "/memory.max_usage_in_bytes", "8192")
    _put(c.paths["memory"] + "/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    _put(c.paths["cpuacct"] + "/cpuacct.usage", "99")
    _put(c.paths["pids"] + "/pids.current", "1")
    assert c.stats() == cg.Stats(memory_usage=4096, memory_max_usage=8192, memory_limit=1 << 30,
                                 cpu_usage_ns=99, pids_current=1, oom_kills=3)
    # another process finds it again
    again = m.open("k")
    assert again.paths == c.paths and again.pids() == [555]
    assert m.leftovers() == ["k"]
    with pytest.raises(Conflict):
        m.remove_parent()
    again.remove()  # kills what is left first (the tracking cgroup was empty)
    assert kernel.killed == [555]
    assert m.leftovers() == [] and not c.exists()
    m.remove_parent()
    assert not any("contain" in d for d in all_dirs(root))


def test_kill_gives_up_when_processes_survive(tmp_path, kernel):
    root, mountinfo = make_v1(tmp_path, kernel)
    c = manager(root, mountinfo, kernel).create("z")
    kernel.write(c.paths["pids"] + "/cgroup.procs", "999")
    kernel.kill = lambda pid, sig: None  # an unkillable process
    with pytest.raises(RuntimeFailure, match="survived") as info:
        c.kill(timeout=0.05)
    assert info.value.errno == errno.EBUSY


def test_rmdir_retries_on_ebusy(tmp_path, kernel):
    root, mountinfo = make_v2(tmp_path, kernel)
    c = manager(root, mountinfo, kernel).create("r")
    real_rmdir, attempts = kernel.rmdir, []

    def rmdir(path):
        attempts.append(path)
        if len(attempts) < 3:
            raise OSError(errno.EBUSY, "busy", path)
        real_rmdir(path)

    kernel.rmdir = rmdir
    c.remove()
    assert len(attempts) == 3 and not os.path.exists(c.v2_path)


# --------------------------------------------------------------------------- real kernel


def _real_layout():
    if os.geteuid() != 0:
        pytest.skip("real cgroup tests need root")
    try:
        return detect()
    except RuntimeFailure as exc:
        pytest.skip(f"no cgroup filesystem on this host: {exc}")


@pytest.fixture
def real_manager():
    layout = _real_layout()
    parent = f"contain-test-{secrets.token_hex(4)}"
    m = CgroupManager(layout, parent)
    try:
        yield m
    finally:
        for name in m.leftovers():
            m.open(name).remove()
        if any(os.path.isdir(d) for d in m.parent_dirs()):
            m.remove_parent()
        left = [d for d in m.parent_dirs() if os.path.exists(d)]
        assert left == [], f"test left cgroups behind: {left}"


CHILD = r"""
import os, sys
sys.stdout.write("ready\n"); sys.stdout.flush()
for line in sys.stdin:
    command = line.split()
    if command[0] == "alloc":
        block = bytearray(int(command[1]) << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        sys.stdout.write("allocated\n"); sys.stdout.flush()
    elif command[0] == "fork":
        made = 0
        for _ in range(int(command[1])):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                os.read(0, 1)  # wait, never reached stdin's data (parent reads it)
                os._exit(0)
            made += 1
        sys.stdout.write(f"forked {made}\n"); sys.stdout.flush()
"""


class Child:
    """A Python process we move into a cgroup and then steer through its stdin."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == "ready\n"
        self.pid = self.proc.pid

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def join(self, cgroup):
        for f in cgroup.procs_files():
            fd = os.open(f, os.O_WRONLY)
            try:
                os.write(fd, str(self.pid).encode())
            finally:
                os.close(fd)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def child():
    c = Child()
    yield c
    c.close()


def _proc_state(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("State:"):
                return line.split()[1]
    return None


def _cgroup_lines(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        return f.read().splitlines()


def test_real_create_limits_join_stats_freeze_kill_remove(real_manager, child):
    m = real_manager
    r = Resources.from_docker(memory="64m", memory_swap="128m", memory_reservation="32m",
                              cpus=0.5, cpu_shares=512, pids_limit=32, cpuset_cpus="0",
                              cpuset_mems="0")
    c = m.create("full", r)
    assert all(os.path.isdir(d) for d in c.dirs())
    p = c.paths
    if m.mode == "v2":
        d = c.v2_path
        assert _get(d + "/memory.max").strip() == str(64 << 20)
        if os.path.exists(d + "/memory.swap.max"):
            assert _get(d + "/memory.swap.max").strip() == str(64 << 20)
        assert _get(d + "/memory.low").strip() == str(32 << 20)
        assert _get(d + "/cpu.max").strip() == "50000 100000"
        assert _get(d + "/cpu.weight").strip() == "20"
        assert _get(d + "/pids.max").strip() == "32"
        assert _get(d + "/cpuset.cpus").strip() == "0"
    else:
        assert _get(p["memory"] + "/memory.limit_in_bytes").strip() == str(64 << 20)
        if os.path.exists(p["memory"] + "/memory.memsw.limit_in_bytes"):
            assert _get(p["memory"] + "/memory.memsw.limit_in_bytes").strip() == str(128 << 20)
        assert _get(p["memory"] + "/memory.soft_limit_in_bytes").strip() == str(32 << 20)
        assert _get(p["cpu"] + "/cpu.shares").strip() == "512"
        assert _get(p["cpu"] + "/cpu.cfs_quota_us").strip() == "50000"
        assert _get(p["cpu"] + "/cpu.cfs_period_us").strip() == "100000"
        assert _get(p["pids"] + "/pids.max").strip() == "32"
        assert _get(p["cpuset"] + "/cpuset.cpus").strip() == "0"
        assert _get(p["cpuset"] + "/cpuset.mems").strip() == "0"

    child.join(c)
    lines = _cgroup_lines(child.pid)
    assert any(line.endswith(f"/{m.parent}/full") for line in lines)
    if m.mode != "v2":
        assert any(":memory:" in line and line.endswith(f"/{m.parent}/full") for line in lines)
    assert c.pids() == [child.pid]

    assert child.ask("alloc 20") == "allocated\n"
    s = c.stats()
    assert s.pids_current == 1
    assert s.memory_usage is not None and s.memory_usage >= 20 << 20
    assert s.memory_limit == 64 << 20
    assert s.cpu_usage_ns is not None and s.cpu_usage_ns > 0
    assert s.oom_kills == 0

    c.freeze()
    assert c.frozen
    if "freezer" in p:
        assert _get(p["freezer"] + "/freezer.state").strip() == "FROZEN"
    assert _proc_state(child.pid) in ("D", "S", "T")
    c.thaw()
    assert not c.frozen
    assert child.ask("alloc 1") == "allocated\n"  # it runs again

    again = m.open("full")
    assert again.paths == c.paths
    assert m.leftovers() == ["full"]
    again.kill()
    assert child.proc.wait(timeout=5) == -9
    assert c.pids() == []
    c.remove()
    c.remove()
    assert not any(os.path.exists(d) for d in c.dirs())
    assert m.leftovers() == []


def test_real_memory_limit_kills_with_oom(real_manager, child):
    m = real_manager
    c = m.create("oom", Resources(memory=32 << 20, memory_swap=32 << 20))
    child.join(c)
    assert child.ask("alloc 200") == ""  # killed before it could answer
    assert child.proc.wait(timeout=10) == -9
    assert c.stats().oom_kills >= 1
    c.remove()


def test_real_pids_limit_stops_forks(real_manager, child):
    # Without the v2 tracking cgroup, kill() cannot use cgroup.kill on a v1/hybrid host:
    # this exercises the freeze / SIGKILL every pid / thaw loop.
    m = CgroupManager(real_manager.layout, real_manager.parent, track_unified=False)
    c = m.create("pids", Resources(pids_limit=4))
    if m.mode != "v2":
        assert c.v2_path is None
    child.join(c)
    assert child.ask("fork 10") == "forked 3\n"  # itself plus three
    assert len(c.pids()) == 4 and c.stats().pids_current == 4
    c.remove()  # kills all four
    assert child.proc.wait(timeout=5) == -9
    assert not c.exists()


def test_real_remove_kills_leftover_processes(real_manager, child):
    m = real_manager
    c = m.create("busy")
    child.join(c)
    c.remove()
    assert child.proc.wait(timeout=5) == -9
    assert not c.exists() and m.leftovers() == []


def test_real_failure_mid_create_leaves_nothing(real_manager):
    m = real_manager
    with pytest.raises(RuntimeFailure) as info:
        m.create("bad", Resources(cpuset_cpus="4095"))  # no such CPU
    assert info.value.errno in (errno.EINVAL, errno.ERANGE)
    assert m.leftovers() == []
    assert not any(os.path.exists(d) for d in m.paths("bad").values())


def test_real_v2_tree_freeze_and_kill(child):
    """The v2 backend on this host's real cgroup2 tree (the unified one on hybrid hosts)."""
    layout = _real_layout()
    if layout.v2 is None or not os.path.exists(layout.v2 + "/cgroup.subtree_control"):
        pytest.skip("no cgroup2 tree on this host")
    v2_only = Layout(mode="v2", root=layout.v2, v2=layout.v2, v2_controllers=layout.v2_controllers)
    m = CgroupManager(v2_only, f"contain-test-{secrets.token_hex(4)}")
    try:
        c = m.create("v2")
        if not os.path.exists(c.v2_path + "/cgroup.freeze"):
            pytest.skip("kernel without cgroup v2 freezer")
        child.join(c)
        assert c.pids() == [child.pid]
        assert f"0::/{m.parent}/v2" in _cgroup_lines(child.pid)
        c.freeze()
        assert "frozen 1" in _get(c.v2_path + "/cgroup.events")
        c.thaw()
        assert child.ask("alloc 1") == "allocated\n"
        c.kill()
        assert child.proc.wait(timeout=5) == -9
        c.remove()
        assert not os.path.exists(c.v2_path)
    finally:
        for name in m.leftovers():
            m.open(name).remove()
        if any(os.path.isdir(d) for d in m.parent_dirs()):
            m.remove_parent()
    assert not any(os.path.exists(d) for d in m.parent_dirs())


def test_real_detect_matches_statfs():
    layout = _real_layout()
    for point in set(layout.v1.values()):
        assert cg._statfs_magic(point) == CGROUP_SUPER_MAGIC
    if layout.v2:
        assert cg._statfs_magic(layout.v2) == CGROUP2_SUPER_MAGIC


def test_real_nothing_left_on_host():
    """Runs last in this file: no contain-test-* cgroup anywhere on the host."""
    layout = _real_layout()
    mounts = set(layout.v1.values()) | ({layout.v2} if layout.v2 else set())
    left = [f"{p}/{n}" for p in mounts for n in os.listdir(p) if n.startswith("contain-test-")]
    assert left == []
