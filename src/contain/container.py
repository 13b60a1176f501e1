"""Containers: create, start, wait, logs, exec, stop, kill, remove.

A container lives in <root>/containers/<id>/: its record (state.json,
shaped like `docker inspect`), the writable layer (upper/, work/), the log
(container.log, written by its monitor), the monitor's exit file, the
hosts files, and `id`, which its name in <root>/names/ is a hard link to.
The record is the truth shared by every process using the root; the
monitor, a small C program that is the container's parent, records how it
ended.

Files are made once per directory and reused: the record and the exit file
keep their temporary file between writes, and a removed container's
directory whose layer stayed empty becomes the next container's (Root.
recycle).  From the second container on, the next root is mounted ahead
(_prepared.py) and network "none" gets a namespace made ahead (net/pool.py).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import functools
import os
import re
import select
import shutil
import signal as _signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import attrs

from . import _names, _timefmt
from ._jsonfile import load_json as _load_json, write_json as _write_json
from ._root import Root, RootArg, clear_volatile_marker, get_root
from .errors import (
    Conflict,
    ContainError,
    ContainerNotFound,
    InvalidArgument,
    NotFound,
    RuntimeFailure,
)
from .image import Image
from .linux import defaults, devices, seccomp
from .linux.proc import start_time
from .linux.sysctl import check_sysctls
from .linux.cgroups import Resources
from .linux.runtime import CgroupPlan, Monitor, join, spawn
from .linux.spec import Linux, Mount, Namespace, Process, Root as SpecRoot, Spec, User
from .linux.users import resolve_user, resolve_user_over
from .net import endpoint, ipam, pool

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_RECORD = struct.Struct("=QIBBH")  # see _native/monitor.c
STDOUT, STDERR = 1, 2




def _open_pidfd(pid: int, start: Optional[int]) -> Optional[int]:
    """A pidfd for pid if it is still the process that was recorded."""
    if not pid or pid <= 0:
        return None
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
    # Checked after opening: once we hold the pidfd the pid cannot be reused.
    if start is not None and start_time(pid) != start:
        os.close(fd)
        return None
    return fd


def _signal_process(pid: int, start: Optional[int], sig: int) -> bool:
    """Send `sig` to the process `pid` started at `start`; False if it is gone."""
    fd = _open_pidfd(pid, start)
    if fd is None:
        return False
    try:
        _signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def _signal_number(sig: Union[int, str, None]) -> int:
    if sig is None:
        return _signal.SIGKILL
    if isinstance(sig, int):
        return sig
    text = sig.upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(getattr(_signal.Signals, text))
    except AttributeError:
        raise InvalidArgument(f"invalid signal: {sig}") from None


def _parse_volumes(volumes, root: Root) -> list[Mount]:
    """docker-py's forms: {"/host": {"bind": "/c", "mode": "ro"}}, ["/host:/c:ro"]."""
    mounts: list[Mount] = []
    if not volumes:
        return mounts
    items: list[tuple[str, str, str]] = []
    if isinstance(volumes, Mapping):
        for src, v in volumes.items():
            if isinstance(v, str):
                items.append((src, v, "rw"))
            else:
                items.append((src, v["bind"], v.get("mode", "rw")))
    else:
        for text in volumes:
            parts = text.split(":")
            if len(parts) == 1:
                raise InvalidArgument(f"anonymous volumes are not supported yet: {text}")
            if len(parts) > 3:
                raise InvalidArgument(f"invalid volume specification: {text}")
            items.append((parts[0], parts[1], parts[2] if len(parts) == 3 else "rw"))
    for src, dst, mode in items:
        if not dst.startswith("/"):
            raise InvalidArgument(f"invalid volume destination (must be absolute): {dst}")
        modes = set(mode.split(","))
        if not modes <= {"ro", "rw", "z", "Z", "rprivate", "private", "nocopy"}:
            raise InvalidArgument(f"invalid volume mode: {mode}")
        if not src.startswith("/"):
            _names.check_name(src)
            src = os.path.join(root.volumes, src, "_data")
            os.makedirs(src, exist_ok=True)
        elif not os.path.exists(src):
            # Docker creates a missing host directory for a bind.
            os.makedirs(src, exist_ok=True)
        options = ["rbind", "ro" if "ro" in modes else "rw"]
        mounts.append(Mount(dst, "bind", os.path.realpath(src), options))
    return mounts


def _parse_tmpfs(tmpfs) -> list[Mount]:
    if not tmpfs:
        return []
    items = tmpfs.items() if isinstance(tmpfs, Mapping) else (
        (t.split(":", 1) + [""])[:2] for t in tmpfs)
    mounts = []
    for dst, opts in items:
        if not dst.startswith("/"):
            raise InvalidArgument(f"invalid tmpfs destination (must be absolute): {dst}")
        options = ["nosuid", "nodev", "noexec"] + [o for o in (opts or "").split(",") if o]
        if not any(o.startswith("mode=") for o in options):
            options.append("mode=1777")
        mounts.append(Mount(dst, "tmpfs", "tmpfs", options))
    return mounts


def _merge_env(base: Sequence[str], extra) -> list[str]:
    env: dict[str, str] = {}
    for item in base:
        k, _, v = item.partition("=")
        env[k] = v
    if isinstance(extra, Mapping):
        pairs = [(str(k), None if v is None else str(v)) for k, v in extra.items()]
    else:
        pairs = []
        for item in extra or ():
            k, sep, v = item.partition("=")
            pairs.append((k, v if sep else os.environ.get(k)))
    for k, v in pairs:
        if not k or "\0" in k or (v is not None and "\0" in v):
            raise InvalidArgument(f"invalid environment variable: {k!r}")
        if v is not None:
            env[k] = v
    return [f"{k}={v}" for k, v in env.items()]


def _as_list(cmd) -> Optional[list[str]]:
    if cmd is None:
        return None
    if isinstance(cmd, str):
        import shlex

        return shlex.split(cmd)
    return [str(c) for c in cmd]


@attrs.frozen
class LogLine:
    stream: int  # 1 stdout, 2 stderr
    time_ns: int
    data: bytes


def _reap_pidfd(pidfd: int) -> None:
    with contextlib.suppress(OSError):
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    os.close(pidfd)


def _stream_output(proc: "ExecProcess") -> Iterator[bytes]:
    """Chunks of an exec's stdout then stderr as they come; reaps it at the end."""
    import selectors

    sel = selectors.DefaultSelector()
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            sel.register(f, selectors.EVENT_READ)
    try:
        while sel.get_map():
            for key, _ in sel.select():
                try:
                    data = key.fileobj.read(65536)
                except OSError as exc:  # a pty master ends with EIO
                    if exc.errno != _errno.EIO:
                        raise
                    data = b""
                if data:
                    yield data
                else:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
    finally:
        sel.close()
        proc.wait()


def _read_all(f) -> bytes:
    """Read to the end; a pty master reports the end as EIO."""
    chunks = []
    while True:
        try:
            data = f.read(65536)
        except OSError as exc:
            if exc.errno == _errno.EIO:
                break
            raise
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


@attrs.frozen
class ExecResult:
    exit_code: int
    output: Any

    def __iter__(self):
        # docker-py's is a namedtuple: `code, out = c.exec_run(...)`.
        return iter((self.exit_code, self.output))


class ExecProcess:
    """A process run inside a container, used like subprocess.Popen."""

    def __init__(self, pid: int, pidfd: int, stdin, stdout, stderr) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            info = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
            if info is not None and info.si_pid:
                self._finish(info)
        return self.returncode

    def _finish(self, info) -> None:
        self.returncode = info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status
        os.close(self._pidfd)
        self._pidfd = -1

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.returncode is None:
            ready, _, _ = select.select([self._pidfd], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired("exec", timeout)
            self._finish(os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED))
        assert self.returncode is not None
        return self.returncode

    def communicate(self, input: Optional[bytes] = None, timeout: Optional[float] = None):
        out, err = [], []
        threads = []
        for f, acc in ((self.stdout, out), (self.stderr, err)):
            if f is not None:
                t = threading.Thread(target=lambda f=f, acc=acc: acc.append(_read_all(f)), daemon=True)
                t.start()
                threads.append(t)
        if self.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                if input:
                    self.stdin.write(input)
                self.stdin.close()
        for t in threads:
            t.join(timeout)
        self.wait(timeout)
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        return (out[0] if out else None), (err[0] if err else None)

    def detach(self) -> None:
        """Let the process run on by itself: it is reaped in the background
        when it ends (docker exec -d)."""
        for f in (self.stdin, self.stdout, self.stderr):
            if f is not None:
                f.close()
        threading.Thread(target=self.wait, daemon=True, name="contain-exec-reaper").start()

    def kill(self, sig: int = _signal.SIGKILL) -> None:
        if self.returncode is None and self._pidfd >= 0:
            _signal.pidfd_send_signal(self._pidfd, sig)

    def __del__(self) -> None:
        # Never block in a finalizer: a process still running is reaped in
        # the background when it ends.
        if getattr(self, "_pidfd", -1) >= 0 and self.returncode is None:
            with contextlib.suppress(Exception):
                if self.poll() is None:
                    threading.Thread(target=_reap_pidfd, args=(self._pidfd,), daemon=True,
                                     name="contain-exec-reaper").start()
                    self._pidfd = -1


@attrs.define(eq=False, repr=False)
class Container:
    """A handle on one container; any process can make one with `get`."""

    id: str
    _root: Root = attrs.field(alias="root")
    _monitor_pidfd: int = attrs.field(default=-1, alias="monitor_pidfd")
    # Read end of a pipe the monitor writes the exit line to, then closes
    # once the exit is recorded (before its clean-up): the starter's wait
    # ends at the line.
    _exited_fd: int = attrs.field(default=-1, alias="exited_fd")
    _dirpath: Optional[str] = attrs.field(default=None, init=False)

    def __repr__(self) -> str:
        return f"<Container: {self.short_id} {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Container) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # ------------------------------------------------------------------ paths
    @property
    def _dir(self) -> str:
        d = self._dirpath
        if d is None:  # asked for a score of times per start
            d = self._dirpath = self._root.container_dir(self.id)
        return d

    def _path(self, name: str) -> str:
        return f"{self._dir}/{name}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            # The directory itself is the lock: no file to make per container.
            fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotFound(f"No such container: {self.id}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self) -> dict:
        try:
            state = _load_json(self._path("state.json"))
        except FileNotFoundError:
            raise ContainerNotFound(f"No such container: {self.id}") from None
        if state.get("Id") != self.id:
            # A reused directory (Root.recycle) a moment before create wrote
            # the new record: the old one is not this container's.
            raise ContainerNotFound(f"No such container: {self.id}")
        return state

    def _save(self, state: dict) -> None:
        # Every writer holds the container's lock (_locked).
        _write_json(self._path("state.json"), state, serialized=True)

    # ------------------------------------------------------------- discovery
    @classmethod
    def get(cls, id_or_name: str, *, root: RootArg = None) -> "Container":
        """Find a container by full id, unique id prefix or name."""
        r = get_root(root)
        key = id_or_name.lstrip("/")
        cid = _names.lookup(r.names, key) if key else None
        if cid and os.path.isdir(r.container_dir(cid)):
            return cls(cid, r)
        if key and all(c in "0123456789abcdef" for c in key):
            matches = [c for c in os.listdir(r.containers) if c.startswith(key) and not c.startswith(".")]
            if len(matches) == 1:
                return cls(matches[0], r)
            if len(matches) > 1:
                raise InvalidArgument(f"multiple containers match the prefix {id_or_name!r}")
        raise ContainerNotFound(f"No such container: {id_or_name}")

    @classmethod
    def list(cls, all: bool = False, *, root: RootArg = None) -> list["Container"]:
        """Running containers (all=True: every one), newest first."""
        r = get_root(root)
        found = []
        for cid in os.listdir(r.containers):
            if cid.startswith("."):
                continue
            c = cls(cid, r)
            try:
                state = c._refresh()
            except ContainerNotFound:
                continue
            if all or state["State"]["Running"]:
                found.append((state["Created"], c))
        found.sort(key=lambda t: t[0], reverse=True)
        return [c for _, c in found]

    # ---------------------------------------------------------- attributes
    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def name(self) -> str:
        return self._load()["Name"].lstrip("/")

    @property
    def attrs(self) -> dict:
        return self.inspect()

    def inspect(self) -> dict:
        """The record, shaped like `docker inspect`."""
        from ._health import read_health

        state = self._refresh()
        health = read_health(self._dir)
        if health is not None:
            state["State"]["Health"] = health
        return state

    @property
    def status(self) -> str:
        """created, running, paused, exited (as Docker's State.Status)."""
        return self._refresh()["State"]["Status"]

    @property
    def exit_code(self) -> Optional[int]:
        st = self._refresh()["State"]
        return None if st["Running"] or st["Status"] == "created" else st["ExitCode"]

    @property
    def pid(self) -> int:
        return self._refresh()["State"]["Pid"]

    @property
    def image(self) -> Image:
        return Image.get(self._load()["Image"], root=self._root)

    @property
    def labels(self) -> dict:
        return dict(self._load()["Config"].get("Labels") or {})

    def status_text(self) -> str:
        """Docker's STATUS column: "Up 6 minutes", "Exited (137) 2 minutes ago"."""
        st = self._refresh()["State"]
        now = time.time()
        if st["Status"] == "running":
            from ._health import read_health

            text = "Up " + _timefmt.human_duration(now - _timefmt.parse(st["StartedAt"]))
            health = read_health(self._dir)
            if health is not None:
                status = health.get("Status")
                text += " (health: starting)" if status == "starting" else f" ({status})"
            return text
        if st["Status"] == "paused":
            return "Up " + _timefmt.human_duration(now - _timefmt.parse(st["StartedAt"])) + " (Paused)"
        if st["Status"] == "exited":
            ago = _timefmt.human_duration(now - _timefmt.parse(st["FinishedAt"]))
            return f"Exited ({st['ExitCode']}) {ago} ago"
        return "Created"

    # ------------------------------------------------------------ creation
    @classmethod
    def create(cls, image: Union[str, Image], command=None, *, root: RootArg = None,
               name: Optional[str] = None, environment=None, env=None, entrypoint=None,
               working_dir: Optional[str] = None, workdir: Optional[str] = None,
               user: Optional[str] = None, hostname: Optional[str] = None,
               mem_limit=None, memory=None, memswap_limit=None, mem_reservation=None,
               nano_cpus=None, cpus=None, cpu_shares=None, cpu_quota=None, cpu_period=None,
               cpuset_cpus=None, pids_limit=None, volumes=None, read_only: bool = False,
               tmpfs=None, network: Optional[str] = None, network_mode: Optional[str] = None,
               labels: Optional[Mapping[str, str]] = None, auto_remove: bool = False,
               cap_add: Sequence[str] = (), cap_drop: Sequence[str] = (), privileged: bool = False,
               tty: bool = False, stdin_open: bool = False, stop_signal: Optional[str] = None,
               shm_size=None, oom_score_adj: Optional[int] = None,
               restart_policy: Optional[Mapping[str, Any]] = None,
               log_config: Optional[Mapping[str, Any]] = None, ports=None,
               publish_all_ports: bool = False, security_opt: Optional[Sequence[str]] = None,
               sysctls: Optional[Mapping[str, Any]] = None,
               device_cgroup_rules: Optional[Sequence[str]] = None,
               healthcheck: Optional[Mapping[str, Any]] = None, init: bool = False) -> "Container":
        """Create a container from an image (docker-py's parameter names;
        env=, workdir=, memory="512m" and cpus=1.5 are accepted too)."""
        r = get_root(root)
        img = image if isinstance(image, Image) else Image.get(image, root=r)
        cfg = img.config
        if environment is not None and env is not None:
            raise InvalidArgument("give environment= or env=, not both")
        if working_dir is not None and workdir is not None:
            raise InvalidArgument("give working_dir= or workdir=, not both")
        resources = Resources.from_docker(
            mem_limit=mem_limit, memory=memory, memswap_limit=memswap_limit,
            mem_reservation=mem_reservation, nano_cpus=nano_cpus, cpus=cpus,
            cpu_shares=cpu_shares, cpu_quota=cpu_quota, cpu_period=cpu_period,
            cpuset_cpus=cpuset_cpus, pids_limit=pids_limit)
        policy = _restart_policy(restart_policy)
        if policy["Name"] != "no" and auto_remove:
            raise InvalidArgument("a restart policy cannot be combined with auto_remove")
        log_opts = _log_options(log_config)
        net = network_mode or network or (None if r.rootless else "bridge")
        if r.rootless:
            from .linux import rootless

            # slirp4netns by default ("bridge" means it); InvalidArgument for the rest.
            net = rootless.network_mode(net)
            rootless.check_resources(resources, delegated=r.cgroups.layout.v2)
        port_bindings = endpoint.parse_ports(ports)  # InvalidArgument now, not at start
        if net not in ("none", "host", "bridge") and not r.rootless:
            ipam.load(r.path, net)  # NotFound for an unknown network
        caps = _capabilities(cap_add, cap_drop, privileged)
        if init:
            _init_binary()  # a clear error now rather than at start
        seccomp_setting = seccomp.setting_for_security_opt(security_opt, privileged=privileged)
        sysctl_list = check_sysctls(sysctls, host_network=net == "host")
        device_rules = devices.parse_rules(device_cgroup_rules or ())
        if hostname is not None and (len(hostname) > 64 or not _HOSTNAME.fullmatch(hostname)):
            raise InvalidArgument(f"invalid hostname {hostname!r}")
        ep = _as_list(entrypoint)
        cmd = _as_list(command)
        if ep is not None:
            entry, args = ep, (cmd or [])
        else:
            entry, args = list(cfg.entrypoint or []), (cmd if cmd is not None else list(cfg.cmd or []))
        argv = entry + args
        if not argv:
            raise InvalidArgument("no command specified (the image has no Cmd or Entrypoint)")
        r_mounts = _parse_volumes(volumes, r) + _parse_tmpfs(tmpfs)
        from . import _health
        from .volume import anonymous_mounts

        health = _health.normalize(healthcheck) if healthcheck is not None else \
            _health.normalize(cfg.healthcheck)
        # The image's VOLUME paths not covered by a mount get fresh anonymous volumes.
        for src, dst in anonymous_mounts(list(cfg.volumes or {}), [m.destination for m in r_mounts],
                                         lowerdirs=r.image_layers(img.id), root=r):
            r_mounts.append(Mount(dst, "bind", src, ["rbind", "rw"]))
        shm = shm_size
        if shm is not None:
            from .linux.cgroups import parse_size

            shm = parse_size(shm)

        cid = _names.new_id()
        cdir = r.container_dir(cid)
        if name is not None:
            name = _names.check_name(name)
        try:
            prep = r.preparer
            lowers = [r.init_layer()] + r.image_layers(img.id)
            if prep is None or not prep.take(cdir, lowers, cid):
                r.new_container_dir(cdir)
            # The name is a hard link to the directory's id file.
            id_file = _names.write_id_file(os.path.join(cdir, "id"), cid)
            if name is not None:
                _names.claim(r.names, name, cid, link_to=id_file)
            else:
                name = _names.claim_generated(r.names, cid, link_to=id_file)
            state = {
                "Id": cid,
                "Created": _timefmt.now(),
                "Path": argv[0],
                "Args": argv[1:],
                "State": {"Status": "created", "Running": False, "Paused": False,
                          "Restarting": False, "OOMKilled": False, "Dead": False, "Pid": 0,
                          "ExitCode": 0, "Error": "", "StartedAt": _timefmt.ZERO,
                          "FinishedAt": _timefmt.ZERO},
                "Image": img.id,
                "Name": "/" + name,
                "RestartCount": 0,
                "Config": {
                    "Hostname": hostname or cid[:12],
                    "User": user if user is not None else (cfg.user or ""),
                    "Tty": tty,
                    "OpenStdin": stdin_open,
                    "Env": _merge_env(cfg.env or [f"PATH={DEFAULT_PATH}"],
                                      environment if environment is not None else env),
                    "Cmd": args if ep is not None or cmd is not None else list(cfg.cmd or []),
                    "Entrypoint": entry or None,
                    "WorkingDir": (working_dir if working_dir is not None else workdir) or cfg.working_dir or "",
                    "Labels": {**(cfg.labels or {}), **dict(labels or {})},
                    "ExposedPorts": dict(cfg.exposed_ports or {}),
                    "Image": image if isinstance(image, str) else (img.tags[0] if img.tags else img.id),
                    "StopSignal": stop_signal or cfg.stop_signal or "SIGTERM",
                    "Healthcheck": health,
                },
                "HostConfig": {
                    "Binds": [f"{m.source}:{m.destination}:{'ro' if 'ro' in m.options else 'rw'}"
                              for m in r_mounts if m.type == "bind"],
                    "Tmpfs": {m.destination: ",".join(m.options) for m in r_mounts if m.type == "tmpfs"},
                    "ReadonlyRootfs": bool(read_only),
                    "AutoRemove": bool(auto_remove),
                    "NetworkMode": net,
                    "PortBindings": _port_bindings(port_bindings),
                    "PublishAllPorts": bool(publish_all_ports),
                    "Privileged": bool(privileged),
                    "CapAdd": list(cap_add),
                    "CapDrop": list(cap_drop),
                    "Memory": resources.memory or 0,
                    "MemorySwap": resources.memory_swap or 0,
                    "MemoryReservation": resources.memory_reservation or 0,
                    "NanoCpus": 0 if resources.cpu_quota is None else
                    int(resources.cpu_quota * 1e9 / (resources.cpu_period or 100000)),
                    "CpuShares": resources.cpu_shares or 0,
                    "CpuQuota": resources.cpu_quota or 0,
                    "CpuPeriod": resources.cpu_period or 0,
                    "CpusetCpus": resources.cpuset_cpus or "",
                    "PidsLimit": resources.pids_limit,
                    "ShmSize": shm or 64 * 1024 * 1024,
                    "OomScoreAdj": oom_score_adj or 0,
                    "SecurityOpt": list(security_opt or []),
                    "Sysctls": {str(k): str(v) for k, v in (sysctls or {}).items()},
                    "DeviceCgroupRules": list(device_cgroup_rules or []),
                    "RestartPolicy": policy,
                    "Init": bool(init),
                    "LogConfig": {"Type": "contain", "Config": log_opts},
                },
                "Mounts": [{"Type": "bind", "Source": m.source, "Destination": m.destination,
                            "RW": "ro" not in m.options} for m in r_mounts if m.type == "bind"],
                "NetworkSettings": {"Networks": {}, "IPAddress": "", "Ports": {}},
                "_contain": {"mounts": [attrs.asdict(m) for m in r_mounts],
                             "ports": [f"{b.host_ip}:{b.host_port or ''}:{b.port}/{b.proto}" for b in port_bindings],
                             "resources": attrs.asdict(resources), "capabilities": caps,
                             "seccomp": seccomp_setting, "sysctl": sysctl_list,
                             "device_rules": [str(r) for r in device_rules],
                             "creator_pid": os.getpid(), "userns": r.rootless},
            }
            _write_json(os.path.join(cdir, "state.json"), state, serialized=True)  # nobody knows cdir yet
        except BaseException:
            r.drop_prepared(cid)
            shutil.rmtree(cdir, ignore_errors=True)
            if name is not None:
                _names.release(r.names, name, cid)
            raise
        return cls(cid, r)

    @classmethod
    def run(cls, image: Union[str, Image], command=None, **options) -> "Container":
        """Create and start a container; returns its handle at once (the
        command runs on; use wait(), logs(), stop()).  Used as a context
        manager, the container is removed when the block ends."""
        c = cls.create(image, command, **options)
        try:
            c.start()
        except BaseException:
            with contextlib.suppress(ContainError):
                c.remove(force=True)
            raise
        return c

    # --------------------------------------------------------------- start
    def _spec(self, state: dict) -> Spec:
        cfg, host = state["Config"], state["HostConfig"]
        extra = state["_contain"]
        lowers = self._lowerdirs(state)
        who = resolve_user_over(cfg["User"], self._path("upper"), lowers)
        env = cfg["Env"]
        if not any(e.startswith("HOME=") for e in env):
            env = env + [f"HOME={who.home}"]
        if not any(e.startswith("HOSTNAME=") for e in env):
            env = [f"HOSTNAME={cfg['Hostname']}"] + env
        if not any(e.startswith("PATH=") for e in env):
            env = [f"PATH={DEFAULT_PATH}"] + env
        caps = extra["capabilities"]
        process = Process(
            args=[state["Path"], *state["Args"]], env=env, cwd=cfg["WorkingDir"] or "/",
            user=User(who.uid, who.gid, list(who.additional_gids)), terminal=cfg["Tty"],
            capabilities=defaults.capabilities_for(who.uid, caps),
            no_new_privileges=not host["Privileged"],
            oom_score_adj=host.get("OomScoreAdj") or None,
        )
        namespaces = [Namespace(n) for n in ("mount", "pid", "uts", "ipc", "cgroup")]
        if host["NetworkMode"] != "host":
            namespaces.append(Namespace("network"))
        mounts = defaults.default_mounts(shm_size=host["ShmSize"])
        if host["NetworkMode"] == "host":
            # sysfs of a network namespace we do not own cannot be mounted anew.
            mounts = [m if m.destination != "/sys" else Mount("/sys", "bind", "/sys", ["rbind", "ro", "nosuid", "noexec", "nodev"])
                      for m in mounts]
        layout = self._root.cgroups.layout
        mounts += defaults.cgroup_mounts(layout.mode, layout.v1)
        mounts += [Mount(**m) for m in extra["mounts"]]
        if host.get("Init"):
            # As docker --init: tini is pid 1, forwards signals, reaps zombies;
            # a read-only bind, so the container cannot write the host's file.
            mounts.append(Mount(INIT_PATH, "bind", _init_binary(), ["bind", "ro", "nosuid", "nodev"]))
            process.args = [INIT_PATH, "--", *process.args]
        readonly_paths = [] if host["Privileged"] else list(defaults.READONLY_PATHS)
        if layout.mode != "v2":
            readonly_paths.append("/sys/fs/cgroup")
        spec = Spec(
            process=process,
            root=SpecRoot(self._root.mount_point(), readonly=host["ReadonlyRootfs"], lowerdirs=lowers,
                          upperdir=self._path("upper"), workdir=self._path("work")),
            hostname=cfg["Hostname"],
            mounts=mounts,
            linux=Linux(namespaces=namespaces, devices=list(defaults.DEVICES),
                        masked_paths=[] if host["Privileged"] else list(defaults.MASKED_PATHS),
                        readonly_paths=readonly_paths,
                        seccomp=seccomp.program_for_setting(extra.get("seccomp", "default"), caps),
                        sysctl=[tuple(p) for p in extra.get("sysctl", [])]),
        )
        if extra.get("userns"):
            from .linux.rootless import adapt_spec

            spec = adapt_spec(spec, self._root.id_maps, network_mode=host["NetworkMode"],
                              own_cgroup=layout.mode == "v2")
        return spec

    def _lowerdirs(self, state: dict) -> list[str]:
        """The image's layers under the container's init layer (the mount
        points the runtime needs, kept out of the writable layer)."""
        from ._checkpoint import extra_lowerdirs

        return (extra_lowerdirs(state) + [self._root.init_layer()]
                + self._root.image_layers(state["Image"]))

    def start(self) -> None:
        """Start the container (again, after it exited: same writable layer,
        logs appended)."""
        with self._locked():
            state = self._refresh_locked()
            if state["State"]["Running"]:
                return
            self._start_locked(state)

    def _start_locked(self, state: dict) -> None:
        cfg, host = state["Config"], state["HostConfig"]
        state["_contain"].pop("released", None)  # this run's network is to give back
        if host["NetworkMode"].startswith("slirp4netns"):
            from .net import userspace  # rootless: the helper starts once the process exists

            prepare: Any = userspace.prepare
        else:
            prepare = endpoint.prepare
        prepared = prepare(
            self._root, self.id, name=state["Name"].lstrip("/"), hostname=cfg["Hostname"],
            network_mode=host["NetworkMode"], ports=state["_contain"].get("ports"),
            publish_all=host.get("PublishAllPorts", False),
            exposed_ports=cfg.get("ExposedPorts") or ())
        try:
            self._start_prepared(state, prepared)
        except BaseException:
            prepared.close()
            self._release_network(state)
            raise
        prepared.close()

    def _release_network(self, state: dict, ended: bool = False) -> None:
        """Give back what the container's network held (idempotent).
        `ended`: the container has exited, and its rootless network helper
        is ending with it: that is waited for in the background.  Once done
        after an exit, the record says so (`released`, saved by the
        caller): the removal does not look through the networks again."""
        extra = state["_contain"]
        if extra.get("released") and not state["State"]["Running"]:
            return
        try:
            endpoint.release(self._root, self.id)
        except (ContainError, OSError):
            pass
        else:
            if ended:
                extra["released"] = True
        if state["HostConfig"]["NetworkMode"].startswith("slirp4netns"):
            from .net import userspace

            userspace.release(self._root, self.id, background=ended)

    def _make_cgroup(self, state: dict, rules=None):
        """The container's cgroup, made now; or, given its device `rules`
        and where it qualifies (v1, no resources: CgroupManager.deferred),
        the cgroup and the plan for spawn to make it while the child builds
        its root."""
        manager = self._root.cgroups
        resources = Resources(**state["_contain"]["resources"])
        if rules is not None:
            cgroup = manager.deferred(self.id, resources)
            if cgroup is not None:
                dev = cgroup.paths.get(devices.V1_KEY)
                # What an earlier run left goes natively (an empty directory is replaced).
                return cgroup, CgroupPlan(mkdirs=cgroup.dirs(),
                                          writes=devices.v1_writes(dev, rules) if dev else (),
                                          joins=cgroup.join_files())
        return self._create_cgroup(manager, state, resources), None

    def _create_cgroup(self, manager, state: dict, resources: Resources):
        if state["State"]["StartedAt"] != _timefmt.ZERO:
            with contextlib.suppress(NotFound):
                manager.open(self.id).remove()  # what an earlier run left
        for attempt in (1, 2):
            try:
                return manager.create(self.id, resources)
            except Conflict:
                if attempt == 2:
                    raise
                # A first start that died before its record was saved.
                manager.open(self.id).remove()
            except RuntimeFailure as exc:
                if exc.errno != _errno.ENOENT or attempt == 2:
                    raise
                # The shared parent was removed by another process's last
                # container between its creation and ours: make it again.
        raise AssertionError("unreachable")

    def _start_prepared(self, state: dict, prepared) -> None:
        spec = self._spec(state)
        join_fds = []
        if prepared.netns_fd is not None:
            spec.linux.namespaces = [n for n in spec.linux.namespaces if n.type != "network"]
            spec.linux.namespaces.append(Namespace("network", path=prepared.netns_path))
            join_fds.append(prepared.netns_fd)
        spec.mounts += [Mount(dst, "bind", src, ["bind", "rw"]) for dst, src in prepared.files.items()]
        state["NetworkSettings"] = prepared.settings
        # The root mounted ahead for this container, if it still fits.
        prep = self._root.preparer
        # Kept for the next container unless this one may change its root's
        # superblock (remount it) rather than only its files, or could pass
        # a descriptor of its root out (a unix socket through a bind mount,
        # an abstract one on the host's network) to reach the next one.
        host = state["HostConfig"]
        keep = (not host["Privileged"] and "CAP_SYS_ADMIN" not in state["_contain"]["capabilities"]
                and host["NetworkMode"] != "host"
                and not any(m["type"] == "bind" for m in state["_contain"]["mounts"]))
        overlay_fd = prep.claim(self.id, spec.root.lowerdirs, keep=keep) if prep is not None else -1
        if overlay_fd < 0:
            clear_volatile_marker(self._dir)
        # A previous run's monitor may still be writing its exit record
        # (its starter had it from the pipe) and removing the cgroups of
        # this name: it must be gone before they are made again.
        self._await_monitor_exit(state)
        # The last run's record goes; its file is the monitor's next one.
        with contextlib.suppress(FileNotFoundError):
            os.rename(self._path("exit"), self._path("exit.tmp"))
        userns = state["_contain"].get("userns")
        rules = None if userns else devices.rules_for(host.get("Privileged", False),
                                                      host.get("DeviceCgroupRules", []))
        cgroup, cgroup_plan = self._make_cgroup(state, rules)
        fds: list[int] = [overlay_fd] if overlay_fd >= 0 else []
        exited_r = -1
        try:
            cfg = state["Config"]
            # The device allowlist is in place before the first process
            # enters (in the plan, when spawn makes the cgroup).
            if rules is not None and cgroup_plan is None:
                devices.apply(cgroup, rules)
            devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            fds.append(devnull)
            flags: list[str] = []
            console = -1
            if cfg["Tty"]:
                # The terminal is made inside, from the container's devpts;
                # its master reaches the monitor over this socket.
                mon_end, console = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                mon_end, console = mon_end.detach(), console.detach()
                fds += [mon_end, console]
                stdio = (devnull, devnull, devnull)
                streams = [mon_end]
                flags.append("--tty")
                if cfg["OpenStdin"]:
                    flags.append("--stdin")
            else:
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                fds += [out_r, out_w, err_r, err_w]
                stdin = devnull
                streams = [out_r, err_r]
                if cfg["OpenStdin"]:
                    in_r, in_w = os.pipe2(os.O_CLOEXEC)
                    fds += [in_r, in_w]
                    stdin = in_r
                    streams_extra = [in_w]
                    flags.append("--stdin")
                else:
                    streams_extra = []
                stdio = (stdin, out_w, err_w)
            log_opts = host.get("LogConfig", {}).get("Config", {})
            if log_opts.get("max-size"):
                flags += ["--log-max-size", str(log_opts["max-size"]),
                          "--log-max-files", str(log_opts.get("max-file", 1))]
            # The monitor records the OOM kills and removes the cgroup when
            # the container ends, whoever is (or is not) watching.
            mem_dir = cgroup.paths.get("memory")
            if mem_dir:
                flags += ["--oom-file", os.path.join(mem_dir, "memory.oom_control")]
            elif cgroup.paths.get("unified"):
                flags += ["--oom-file", os.path.join(cgroup.paths["unified"], "memory.events")]
            for d in cgroup.dirs():
                flags += ["--cgroup", d]
            monitor_fds = streams + (streams_extra if not cfg["Tty"] else [])
            exited_r, exited_w = os.pipe2(os.O_CLOEXEC)
            fds.append(exited_w)
            flags += ["--exited-fd", str(4 + len(monitor_fds))]
            monitor_fds.append(exited_w)
            monitor_env: list[str] = []
            if host.get("RestartPolicy", {}).get("Name", "no") != "no":
                flags += ["--", sys.executable, "-m", "contain._restart", self._root.path, self.id]
                # The restart process finds the same runtime directory (an
                # ordinary user's: the shared user namespace's record, the
                # network helpers') and home as this one.
                monitor_env = [f"{k}={os.environ[k]}" for k in _RESTART_ENV if k in os.environ]
            userns_options: dict = {}
            if userns:
                from .linux.rootless import spawn_options

                fd = self._root.shared_userns()  # None where fuse-overlayfs mounts the root
                userns_options = {"userns_fd": fd} if fd is not None else spawn_options(self._root.id_maps)
            child = spawn(spec, stdio=stdio,
                          cgroup_procs=cgroup.join_files(include_v2=False) if cgroup_plan is None else (),
                          cgroup_dir=cgroup.v2_path, cgroup_plan=cgroup_plan,
                          monitor=Monitor([self._dir, str(len(streams)), *flags], monitor_fds,
                                          env=monitor_env),
                          console_socket=console, join_ns_fds=join_fds, overlay_fd=overlay_fd,
                          **userns_options)
        except BaseException as exc:
            if exited_r >= 0:
                os.close(exited_r)
            with contextlib.suppress(ContainError):
                cgroup.remove()
            if isinstance(exc, RuntimeFailure):
                st = state["State"]
                st.update(Status="exited" if st["StartedAt"] != _timefmt.ZERO else "created",
                          Running=False, ExitCode=125, Error=str(exc))
                self._save(state)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        self._close_monitor_fds()
        self._monitor_pidfd = child.monitor_pidfd
        self._exited_fd = exited_r
        st = state["State"]
        state["_contain"].pop("stopped_by_user", None)
        st.update(Status="running", Running=True, Paused=False, Pid=child.pid,
                  ExitCode=0, Error=str(child.exec_error or ""), OOMKilled=False,
                  StartedAt=_timefmt.now(), FinishedAt=_timefmt.ZERO)
        state["_contain"]["pid_start"] = child.start_time
        # A rootless network's helper (net/userspace.py) comes up meanwhile.
        network_up = prepared.started(child.pid, state["_contain"]["pid_start"]) \
            if hasattr(prepared, "started") else None
        state["_contain"]["monitor_pid"] = child.monitor_pid
        state["_contain"]["monitor_start"] = child.monitor_start_time
        self._save(state)
        if network_up is not None:
            network_up()  # configured, ports published (or the container killed and an error)
        if state["Config"].get("Healthcheck"):
            from ._health import start_health_monitor

            start_health_monitor(self, state)

    # ----------------------------------------------------------- lifecycle
    def _refresh(self) -> dict:
        state = self._load()
        if not state["State"]["Running"]:
            return state
        with self._locked():
            return self._refresh_locked()

    def _monitor_running(self) -> bool:
        return self._monitor_alive(self._load())

    def _monitor_alive(self, state: dict) -> bool:
        extra = state["_contain"]
        fd = _open_pidfd(extra.get("monitor_pid", 0), extra.get("monitor_start"))
        if fd is None:
            return False
        os.close(fd)
        return True

    def _refresh_locked(self, record: bytes = b"") -> dict:
        """Fold what the monitor recorded into the record (once).
        `record`: its exit line as it came down the starter's pipe, when
        the file may not be written yet."""
        state = self._load()
        st = state["State"]
        if not st["Running"]:
            return state
        oom_kills: Optional[int] = None
        try:
            if record.endswith(b"\n"):
                fields = record.split()
            else:
                with open(self._path("exit")) as f:
                    fields = f.read().split()
            code, finished = int(fields[0]), _timefmt.rfc3339(int(fields[1]))
            if len(fields) > 2:
                oom_kills = int(fields[2])
        except FileNotFoundError:
            if self._monitor_alive(state):
                return state
            # The monitor died without a word: the exit status is lost, but
            # the container must not show as running forever.
            extra = state["_contain"]
            fd = _open_pidfd(st["Pid"], extra.get("pid_start"))
            if fd is not None:
                with contextlib.suppress(ProcessLookupError):
                    _signal.pidfd_send_signal(fd, _signal.SIGKILL)
                select.select([fd], [], [], 5)
                os.close(fd)
            code, finished = 255, _timefmt.now()
            st["Error"] = "the container's monitor died; its exit status is unknown"
        self._finish(state, code, finished, oom_kills)
        return state

    def _finish(self, state: dict, code: int, finished: str, oom_kills: Optional[int] = None) -> None:
        st = state["State"]
        oom = bool(oom_kills)
        if oom_kills is None:
            # The monitor died before recording: clean up after it.
            with contextlib.suppress(NotFound):
                cg = self._root.cgroups.open(self.id)
                with contextlib.suppress(ContainError, OSError):
                    oom = bool(cg.stats().oom_kills)
                cg.remove()
        self._release_network(state, ended=True)
        st.update(Status="exited", Running=False, Paused=False, Pid=0, ExitCode=code,
                  FinishedAt=finished, OOMKilled=oom)
        self._save(state)
        if state["HostConfig"].get("AutoRemove"):
            self._remove_files(state)

    def wait(self, timeout: Optional[float] = None, condition: str = "not-running") -> int:
        """Block until the container exits; returns its exit code.
        condition: "not-running" (default), "next-exit" (the next exit even
        if it is not running yet) or "removed"."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid wait condition: {condition}")
        if condition in ("next-exit", "removed"):
            return self._wait_polling(deadline, timeout, condition)
        if self._exited_fd >= 0:
            # Started by this handle: until the monitor closes this pipe the
            # exit is not recorded, so there is nothing to read before.
            ready, _, _ = select.select([self._exited_fd], [], [], timeout)
            if not ready:
                raise TimeoutError(f"container {self.short_id} still running after {timeout}s")
            # The monitor's exit record comes down the pipe before it is in
            # the file (b"" if the monitor died first).
            record = os.read(self._exited_fd, 256)
            os.close(self._exited_fd)
            self._exited_fd = -1
            # Fold it in under the lock at once (rather than read the record
            # first to learn it is running).
            with contextlib.suppress(ContainerNotFound), self._locked():
                st = self._refresh_locked(record)["State"]
                if not st["Running"] and st["Status"] != "created":
                    return st["ExitCode"]
        while True:
            try:
                state = self._refresh()
            except ContainerNotFound:
                if self._last_exit is not None:
                    return self._last_exit
                raise
            st = state["State"]
            if not st["Running"]:
                if st["Status"] == "created":
                    raise Conflict(f"container {self.short_id} is not running")
                return st["ExitCode"]
            extra = state["_contain"]
            fd = self._exited_fd if self._exited_fd >= 0 else self._monitor_pidfd
            own = False
            if fd < 0:
                opened = _open_pidfd(extra.get("monitor_pid", 0), extra.get("monitor_start"))
                fd, own = (opened if opened is not None else -1), True
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if fd >= 0:
                try:
                    ready, _, _ = select.select([fd], [], [], remaining)
                finally:
                    if own:
                        os.close(fd)
                if not ready:
                    raise TimeoutError(f"container {self.short_id} still running after {timeout}s")
                if fd == self._exited_fd:
                    os.close(fd)
                    self._exited_fd = -1
                elif fd == self._monitor_pidfd:
                    os.close(fd)
                    self._monitor_pidfd = -1
            elif remaining == 0:
                raise TimeoutError(f"container {self.short_id} still running after {timeout}s")

    _last_exit: Optional[int] = None

    def _wake_fillers(self) -> None:
        """Let the threads that make network namespaces and roots ahead
        replace what a start took, now that the container is gone (remove
        calls this).  Woken during the start they contend with its Python
        for the GIL at every system call; woken in wait, they took a CPU
        from the container's exit on a two-CPU host (0.3-0.6 ms a cycle).
        Containers nobody removes wake them at the next take."""
        pool.refill()
        prep = self._root._preparer
        if prep is not None:
            prep.wake()

    def _await_monitor_exit(self, state: dict, timeout: float = 5.0) -> None:
        """Wait for the last run's monitor to finish its clean-up (it ends
        moments after recording the exit).  A restart policy's process,
        which the monitor became, is not waited for: the monitor removed
        the cgroups before becoming it."""
        extra = state["_contain"]
        fd, own = self._monitor_pidfd, False
        if fd < 0:
            if extra.get("monitor_pid", 0) in (0, os.getpid()):
                return
            if state["HostConfig"].get("RestartPolicy", {}).get("Name", "no") != "no":
                return
            opened = _open_pidfd(extra["monitor_pid"], extra.get("monitor_start"))
            if opened is None:
                return
            fd, own = opened, True
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
            if not own:
                self._monitor_pidfd = -1

    def _close_monitor_fds(self) -> None:
        for name in ("_monitor_pidfd", "_exited_fd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def _wait_polling(self, deadline, timeout, condition: str) -> int:
        started = None
        with contextlib.suppress(ContainerNotFound):
            started = self._load()["State"]["StartedAt"]
        while True:
            try:
                st = self._refresh()["State"]
            except ContainerNotFound:
                if condition == "removed":
                    return self._last_exit if self._last_exit is not None else 0
                raise
            if (condition == "next-exit" and not st["Running"] and st["Status"] == "exited"
                    and (st["StartedAt"] != started or started == _timefmt.ZERO
                         or _timefmt.parse(st["FinishedAt"]) >= _timefmt.parse(started))
                    and st["StartedAt"] != _timefmt.ZERO):
                return st["ExitCode"]
            if condition == "removed" and not st["Running"]:
                self._last_exit = st["ExitCode"]
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"container {self.short_id}: {condition} not reached after {timeout}s")
            time.sleep(0.02)

    def _mark_stopped_by_user(self) -> None:
        """A container stopped by hand is not brought back by its restart policy."""
        with self._locked():
            state = self._load()
            state["_contain"]["stopped_by_user"] = True
            self._save(state)

    def kill(self, signal: Union[int, str, None] = "SIGKILL") -> None:
        """Send a signal to the container's main process."""
        sig = _signal_number(signal)
        state = self._refresh()
        if not state["State"]["Running"]:
            raise Conflict(f"container {self.short_id} is not running")
        if sig in (_signal.SIGKILL, _signal_number(state["Config"].get("StopSignal") or "SIGTERM")):
            self._mark_stopped_by_user()
        if state["State"]["Paused"]:
            # A frozen process takes no signal until thawed (SIGKILL included on v1).
            with contextlib.suppress(ContainError):
                self.unpause()
        fd = _open_pidfd(state["State"]["Pid"], state["_contain"].get("pid_start"))
        if fd is None:
            return
        try:
            _signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)

    def stop(self, timeout: float = 10) -> None:
        """The stop signal (SIGTERM by default), then SIGKILL after timeout."""
        # Marked first: a restart pending after an exit is cancelled too.
        self._mark_stopped_by_user()
        state = self._refresh()
        if not state["State"]["Running"]:
            return
        with contextlib.suppress(Conflict):
            self.kill(state["Config"].get("StopSignal") or "SIGTERM")
        try:
            self.wait(timeout=timeout)
            return
        except TimeoutError:
            pass
        with contextlib.suppress(Conflict):
            self.kill("SIGKILL")
        self.wait()

    def restart(self, timeout: float = 10) -> None:
        self.stop(timeout)
        self.start()

    def checkpoint(self, name: str, timeout: float = 10) -> None:
        """Record the writable layer as a named, read-only layer (a running
        container is stopped and started again around it)."""
        from ._checkpoint import checkpoint

        self._root.drop_prepared(self.id)
        checkpoint(self, name, timeout=timeout)

    def reset(self, name: Optional[str] = None, restart: Optional[bool] = None) -> None:
        """Put the writable layer back to a checkpoint (or the image's state),
        restarting the process if it was running."""
        from ._checkpoint import reset

        self._root.drop_prepared(self.id)
        reset(self, name, restart=restart)

    def pause(self) -> None:
        """Freeze every process of the container (cgroup freezer)."""
        with self._locked():
            state = self._refresh_locked()
            if not state["State"]["Running"]:
                raise Conflict(f"container {self.short_id} is not running")
            if state["State"]["Paused"]:
                raise Conflict(f"container {self.short_id} is already paused")
            self._root.cgroups.open(self.id).freeze()
            state["State"].update(Paused=True, Status="paused")
            self._save(state)

    def unpause(self) -> None:
        with self._locked():
            state = self._load()
            if not state["State"]["Paused"]:
                raise Conflict(f"container {self.short_id} is not paused")
            with contextlib.suppress(NotFound):
                self._root.cgroups.open(self.id).thaw()
            state["State"].update(Paused=False, Status="running" if state["State"]["Running"] else "exited")
            self._save(state)

    def rename(self, name: str) -> None:
        name = _names.check_name(name)
        with self._locked():
            state = self._load()
            old = state["Name"].lstrip("/")
            if name == old:
                return
            id_file = self._path("id")
            _names.claim(self._root.names, name, self.id,
                         link_to=id_file if os.path.exists(id_file) else None)
            state["Name"] = "/" + name
            self._save(state)
            _names.release(self._root.names, old, self.id)

    def attach(self):
        """A stream on the running container's stdio: iterate (stream, data)
        frames; .send(bytes) writes its stdin (stdin_open=True or tty=True),
        .resize(rows, cols) sets a tty's size; .exit_code once it ended."""
        from ._attach import Attachment, connect

        state = self._refresh()
        if not state["State"]["Running"]:
            raise Conflict(f"container {self.short_id} is not running")
        extra = state["_contain"]
        # The monitor makes its socket when asked (SIGUSR1).
        wake = functools.partial(_signal_process, extra.get("monitor_pid", 0), extra.get("monitor_start"),
                                 _signal.SIGUSR1)
        return Attachment(connect(self._dir, wake))

    def attach_terminal(self, detach_keys: str = "ctrl-p,ctrl-q") -> Optional[int]:
        """Connect the caller's terminal (raw mode, window size follows) until
        the container exits (its exit code) or the detach keys (None)."""
        from ._attach import attach_terminal

        state = self._refresh()
        with self.attach() as att:
            return attach_terminal(att, stdin=state["Config"]["OpenStdin"],
                                   tty=state["Config"]["Tty"], detach_keys=detach_keys)

    def remove(self, force: bool = False, v: bool = False) -> None:
        """Remove the container (force=True kills it first if running)."""
        try:
            self._remove(force, v)
        finally:
            self._wake_fillers()

    def _remove(self, force: bool, v: bool) -> None:
        try:
            with self._locked():
                # One read of the record: an exit the monitor recorded is folded in.
                state = self._refresh_locked()
                running = state["State"]["Running"]
                if not running:
                    self._remove_files(state)
        except ContainerNotFound:
            return
        if running:
            if not force:
                raise Conflict(f"You cannot remove a running container {self.id}. "
                               "Stop the container before attempting removal or force remove")
            with contextlib.suppress(Conflict):
                self.kill("SIGKILL")
            self.wait()
            with self._locked():
                try:
                    state = self._load()
                except ContainerNotFound:
                    return
                self._remove_files(state)
        if v:
            from .volume import remove_anonymous

            remove_anonymous(state, root=self._root)

    def _remove_files(self, state: dict) -> None:
        """Everything of a container that has ended goes, once its monitor
        is done with the mounts and the cgroups."""
        self._await_monitor_exit(state)
        # A root kept from its run stays: retire may hand it to the next one.
        self._root.drop_prepared(self.id, kept=False)
        self._release_network(state, ended=state["State"]["Status"] != "running")
        with contextlib.suppress(NotFound):
            self._root.cgroups.open(self.id).remove()
        if state["State"]["Status"] == "exited":
            self._last_exit = state["State"]["ExitCode"]
        _names.release(self._root.names, state["Name"].lstrip("/"), self.id)
        # The files of a dead container hold nothing anyone waits for.
        self._root.retire(self._dir, self.id)
        self._close_monitor_fds()

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove(force=True)

    def __del__(self) -> None:
        self._close_monitor_fds()

    # ---------------------------------------------------------- filesystem
    def commit(self, repository: Optional[str] = None, tag: Optional[str] = None, *,
               message: Optional[str] = None, author: Optional[str] = None, changes=None,
               conf: Optional[Mapping[str, Any]] = None, pause: bool = True) -> Image:
        """The writable layer as a new image (docker commit): deletions become
        whiteouts; `changes` are Dockerfile lines ("CMD [\"sh\"]", "ENV A=b")."""
        from ._commit import commit

        record = commit(self._root, self.id, repository=repository, tag=tag, message=message,
                        author=author, changes=changes, config_overrides=conf, pause=pause)
        return Image(record, self._root)

    @contextlib.contextmanager
    def _root_fd(self, writable: bool = False) -> Iterator[int]:
        """A directory fd of the container's root: the live one while it runs,
        else its layers mounted (read-only unless writing) for the moment."""
        state = self._refresh()
        st = state["State"]
        if st["Running"]:
            pidfd = _open_pidfd(st["Pid"], state["_contain"].get("pid_start"))
            if pidfd is not None:
                try:
                    fd = os.open(f"/proc/{st['Pid']}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                finally:
                    os.close(pidfd)
                try:
                    yield fd
                finally:
                    os.close(fd)
                return
        import ctypes

        self._root.drop_prepared(self.id)  # two mounts of one writable layer must never be
        libc = ctypes.CDLL(None, use_errno=True)
        lowers = self._lowerdirs(state)
        target = self._path("merged")
        os.makedirs(target, mode=0o755, exist_ok=True)
        if writable:
            clear_volatile_marker(self._dir)
            opts = f"lowerdir={':'.join(lowers)},upperdir={self._path('upper')},workdir={self._path('work')}"
        else:
            opts = f"lowerdir={':'.join([self._path('upper')] + lowers)}"
        with self._locked():
            if libc.mount(b"overlay", target.encode(), b"overlay", 0 if writable else 1, opts.encode()) != 0:
                e = ctypes.get_errno()
                raise RuntimeFailure("mount container root", e, target)
            try:
                fd = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    yield fd
                finally:
                    os.close(fd)
            finally:
                libc.umount2(target.encode(), 2)  # MNT_DETACH

    def get_archive(self, path: str) -> tuple[bytes, dict]:
        """A tar of `path` in the container and its stat (docker cp out).
        Symlinks are resolved inside the container's root, never the host's."""
        import io

        from .linux.safepath import archive_from

        buf = io.BytesIO()
        with self._root_fd() as fd:
            info = archive_from(fd, path, buf)
        return buf.getvalue(), info

    def put_archive(self, path: str, data) -> bool:
        """Unpack a tar (bytes or a file) into directory `path` of the container."""
        import io

        from .linux.safepath import extract_into

        stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
        with self._root_fd(writable=True) as fd:
            extract_into(fd, path, stream)
        return True

    def export(self, fileobj=None):
        """The container's filesystem as a tar (docker export): written to
        `fileobj`, or returned as bytes."""
        import io

        from .oci.archive import export_directory

        out = fileobj if fileobj is not None else io.BytesIO()
        with self._root_fd() as fd:
            export_directory(f"/proc/self/fd/{fd}", out)
        return None if fileobj is not None else out.getvalue()

    def diff(self) -> list[dict]:
        """Changes against the image: [{"Path", "Kind"}], Kind 0 changed, 1 added, 2 deleted."""
        state = self._load()
        lowers = self._root.image_layers(state["Image"])
        upper = self._path("upper")
        changes: dict[str, int] = {}

        def in_lowers(rel: str) -> bool:
            return any(os.path.lexists(os.path.join(d, rel)) for d in lowers)

        for dirpath, dirnames, filenames in os.walk(upper):
            rel_dir = os.path.relpath(dirpath, upper)
            for name in dirnames + filenames:
                rel = os.path.normpath(os.path.join(rel_dir, name))
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                if stat_is_whiteout(st):
                    changes["/" + rel] = 2
                    continue
                changes["/" + rel] = 0 if in_lowers(rel) else 1
        # A changed entry's parents are changed too (as Docker lists them).
        for path in list(changes):
            parent = os.path.dirname(path)
            while parent not in ("/", ""):
                changes.setdefault(parent, 0)
                parent = os.path.dirname(parent)
        return [{"Path": p, "Kind": k} for p, k in sorted(changes.items())]

    def top(self) -> dict:
        """The container's processes, like `docker top` (ps -ef columns)."""
        cg = self._root.cgroups.open(self.id)
        rows = []
        ticks = os.sysconf("SC_CLK_TCK")
        boot = time.time() - float(open("/proc/uptime").read().split()[0])
        for pid in sorted(cg.pids()):
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    raw = f.read()
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").strip().decode(errors="replace")
                uid = os.stat(f"/proc/{pid}").st_uid
            except (FileNotFoundError, ProcessLookupError):
                continue
            fields = raw[raw.rindex(b")") + 2:].split()
            comm = raw[raw.index(b"(") + 1:raw.rindex(b")")].decode(errors="replace")
            cpu = (int(fields[11]) + int(fields[12])) // ticks
            started = time.strftime("%H:%M", time.localtime(boot + int(fields[19]) / ticks))
            rows.append([str(uid), str(pid), fields[1].decode(), "0", started, "?",
                         time.strftime("%H:%M:%S", time.gmtime(cpu)), cmd or f"[{comm}]"])
        return {"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "Processes": rows}

    def stats(self, stream: bool = False):
        """Resource use from the cgroups (and network bytes from the
        container's namespace), shaped like Docker's stats; stream=True
        yields one sample a second while the container runs."""
        if stream:
            return self._stats_stream()
        return self._stats_once()

    def _stats_stream(self):
        while self._refresh()["State"]["Running"]:
            yield self._stats_once()
            time.sleep(1.0)

    def _stats_once(self) -> dict:
        state = self._refresh()
        sample: dict[str, Any] = {"id": self.id, "name": state["Name"], "read": _timefmt.now()}
        try:
            cg = self._root.cgroups.open(self.id)
            st = cg.stats()
        except NotFound:
            return sample
        with open("/proc/stat") as f:
            jiffies = sum(int(x) for x in f.readline().split()[1:8])
        sample["cpu_stats"] = {"cpu_usage": {"total_usage": st.cpu_usage_ns or 0},
                               "system_cpu_usage": jiffies * 10_000_000,
                               "online_cpus": os.cpu_count() or 1}
        sample["memory_stats"] = {"usage": st.memory_usage or 0, "max_usage": st.memory_max_usage or 0,
                                  "limit": st.memory_limit or 0}
        sample["pids_stats"] = {"current": st.pids_current or 0,
                                "limit": state["HostConfig"].get("PidsLimit") or 0}
        nets: dict[str, dict] = {}
        pid = state["State"]["Pid"]
        if pid and state["HostConfig"]["NetworkMode"] != "host":
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/net/dev") as f:
                    for line in f.readlines()[2:]:
                        name, _, rest = line.partition(":")
                        v = rest.split()
                        if name.strip() != "lo":
                            nets[name.strip()] = {"rx_bytes": int(v[0]), "rx_packets": int(v[1]),
                                                  "tx_bytes": int(v[8]), "tx_packets": int(v[9])}
        sample["networks"] = nets
        sample["blkio_stats"] = _blkio(cg)
        return sample

    # ---------------------------------------------------------------- logs
    def logs(self, stdout: bool = True, stderr: bool = True, timestamps: bool = False,
             tail: Union[int, str, None] = None, since=None, until=None,
             follow: bool = False, stream: bool = False):
        """The container's output, as bytes (or an iterator of lines with
        stream=True or follow=True; following ends when the container exits)."""
        gen = self._log_lines(stdout, stderr, timestamps, tail, since, until, follow)
        if stream or follow:
            return gen
        return b"".join(gen)

    def _log_lines(self, stdout, stderr, timestamps, tail, since, until, follow) -> Iterator[bytes]:
        path = self._path("container.log")
        wanted = {s for s, on in ((STDOUT, stdout), (STDERR, stderr)) if on}
        since_ns = _to_ns(since)
        until_ns = _to_ns(until)

        def keep(line: LogLine) -> bool:
            return (line.stream in wanted and (since_ns is None or line.time_ns >= since_ns)
                    and (until_ns is None or line.time_ns < until_ns))

        # Rotated files first (oldest first), then the live one.
        for rotated in _rotated_logs(self._dir):
            lines = _iter_records(rotated)
            if tail not in (None, "all"):
                lines = iter(list(lines))  # bounded by the rotation size
            for line in lines:
                if tail in (None, "all") and keep(line):
                    yield _format(line, timestamps)
        offset = 0
        if tail not in (None, "all"):
            n = int(tail)
            from collections import deque

            last: deque = deque(maxlen=max(n, 0))
            for rotated in _rotated_logs(self._dir):
                last.extend(ln for ln in _iter_records(rotated) if keep(ln))
            for line, offset in _iter_records_with_offset(path):
                if keep(line):
                    last.append(line)
            for line in (last if n > 0 else ()):
                yield _format(line, timestamps)
        else:
            for line, offset in _iter_records_with_offset(path):
                if keep(line):
                    yield _format(line, timestamps)
        if not follow:
            return
        inode = _inode(path)
        while True:
            running = self._refresh()["State"]["Running"]
            if _inode(path) != inode:  # rotated under us: finish the old file
                inode = _inode(path)
                offset = 0
            for line, offset in _iter_records_with_offset(path, offset):
                if keep(line):
                    yield _format(line, timestamps)
            if not running:
                return
            time.sleep(0.05)

    # ---------------------------------------------------------------- exec
    def exec(self, cmd, *, environment=None, env=None, workdir: Optional[str] = None,
             user: Optional[str] = None, stdin: bool = False, stdout: bool = True,
             stderr: bool = True, privileged: bool = False, tty: bool = False) -> ExecProcess:
        """Start a command in the running container, like subprocess.Popen:
        .stdout/.stderr are pipes, .stdin one when stdin=True, .wait() the code."""
        state = self._refresh()
        if not state["State"]["Running"]:
            raise Conflict(f"container {self.short_id} is not running")
        argv = _as_list(cmd)
        if not argv:
            raise InvalidArgument("exec needs a command")
        cfg = state["Config"]
        lowers = self._root.image_layers(state["Image"])
        who = resolve_user(user if user is not None else cfg["User"], [self._path("upper")] + lowers)
        envl = _merge_env(cfg["Env"], environment if environment is not None else env)
        if not any(e.startswith("HOME=") for e in envl):
            envl.append(f"HOME={who.home}")
        caps = list(defaults.CAPABILITY_NUMBERS) if privileged else state["_contain"]["capabilities"]
        if "CAP_SYS_ADMIN" in caps:
            # It may remount the root's superblock: that root is not handed on.
            self._root.drop_prepared(self.id)
        process = Process(args=argv, env=envl, cwd=workdir or cfg["WorkingDir"] or "/",
                          user=User(who.uid, who.gid, list(who.additional_gids)),
                          capabilities=defaults.capabilities_for(who.uid, caps),
                          no_new_privileges=not (privileged or state["HostConfig"]["Privileged"]))
        namespaces = ["mount", "pid", "uts", "ipc", "cgroup"]
        if state["_contain"].get("userns"):
            namespaces.insert(0, "user")  # first: it owns the others
        if state["HostConfig"]["NetworkMode"] != "host":
            namespaces.append("network")
        pidfd = _open_pidfd(state["State"]["Pid"], state["_contain"].get("pid_start"))
        if pidfd is None:
            raise Conflict(f"container {self.short_id} is not running")
        ours: list[int] = []
        theirs: list[int] = []
        want_stdin = stdin
        try:
            devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            theirs.append(devnull)
            stdio = [devnull, devnull, devnull]
            files: list[Any] = [None, None, None]
            console = None
            if tty:
                # One terminal, made inside the container, for all three.
                console, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                theirs.append(child_end.detach())
                process.terminal = True
                stdin = stdout = stderr = False
            for i, wanted in enumerate((stdin, stdout, stderr)):
                if wanted:
                    r, w = os.pipe2(os.O_CLOEXEC)
                    mine, child_end = (w, r) if i == 0 else (r, w)
                    ours.append(mine)
                    theirs.append(child_end)
                    stdio[i] = child_end
                    files[i] = os.fdopen(mine, "wb" if i == 0 else "rb", buffering=0)
            try:
                cgroup = self._root.cgroups.open(self.id)
            except NotFound:
                cg, cg_dir = [], None
            else:
                if "user" in namespaces:
                    # Joined through a file opened here, judged by our own
                    # credentials: no delegated v2 host was at hand to try
                    # a clone into the cgroup from the user namespace.
                    cg, cg_dir = cgroup.join_files(), None
                else:  # born in the v2 cgroup (CLONE_INTO_CGROUP)
                    cg, cg_dir = cgroup.join_files(include_v2=False), cgroup.v2_path
            child = join(pidfd, process, namespaces=namespaces, stdio=stdio, cgroup_procs=cg,
                         cgroup_dir=cg_dir,
                         seccomp=seccomp.program_for_setting(
                             state["_contain"].get("seccomp", "default"), caps),
                         console_socket=theirs[-1] if console is not None else -1)
            if console is not None:
                with console:
                    _, fds_in, _, _ = socket.recv_fds(console, 1, 1)
                if not fds_in:
                    raise RuntimeFailure("receive pty master", _errno.EPIPE)
                master = fds_in[0]
                files = [os.fdopen(os.dup(master), "wb", buffering=0) if want_stdin else None,
                         os.fdopen(master, "rb", buffering=0), None]
        except BaseException:
            for fd in ours:
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise
        finally:
            os.close(pidfd)
            for fd in theirs:
                os.close(fd)
        return ExecProcess(child.pid, child.pidfd, files[0], files[1], files[2])

    def exec_run(self, cmd, *, stdout: bool = True, stderr: bool = True, demux: bool = False,
                 environment=None, env=None, workdir: Optional[str] = None,
                 user: Optional[str] = None, privileged: bool = False,
                 input: Optional[bytes] = None, tty: bool = False, detach: bool = False,
                 stream: bool = False) -> ExecResult:
        """docker-py's exec_run: run to completion, return (exit_code, output).
        detach=True starts it and returns at once (exit_code None); stream=True
        gives the output as an iterator of chunks (exit_code None)."""
        if detach:
            self.exec(cmd, environment=environment, env=env, workdir=workdir, user=user,
                      stdout=False, stderr=False, privileged=privileged, tty=False).detach()
            return ExecResult(None, None)
        proc = self.exec(cmd, environment=environment, env=env, workdir=workdir, user=user,
                         stdin=input is not None, stdout=stdout, stderr=stderr,
                         privileged=privileged, tty=tty)
        if stream:
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(input or b"")
                    proc.stdin.close()
            return ExecResult(None, _stream_output(proc))
        out, err = proc.communicate(input)
        if demux:
            return ExecResult(proc.returncode, (out, err))
        return ExecResult(proc.returncode, (out or b"") + (err or b""))


def _to_ns(value) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value * 1_000_000_000)
    import datetime as _dt

    if isinstance(value, _dt.datetime):
        return int(value.timestamp() * 1_000_000_000)
    return int(_timefmt.parse(str(value)) * 1_000_000_000)


def stat_is_whiteout(st: os.stat_result) -> bool:
    import stat as _stat

    return _stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _blkio(cg) -> dict:
    """Bytes read and written from io.stat (v2) or blkio (v1)."""
    read = write = 0
    unified = cg.paths.get("unified")
    try:
        if "blkio" in cg.paths:
            with open(os.path.join(cg.paths["blkio"], "blkio.throttle.io_service_bytes")) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 3 and parts[1] == "Read":
                        read += int(parts[2])
                    elif len(parts) == 3 and parts[1] == "Write":
                        write += int(parts[2])
        elif unified:
            with open(os.path.join(unified, "io.stat")) as f:
                for line in f:
                    for kv in line.split()[1:]:
                        k, _, v = kv.partition("=")
                        if k == "rbytes":
                            read += int(v)
                        elif k == "wbytes":
                            write += int(v)
    except OSError:
        pass
    return {"io_service_bytes_recursive": [{"op": "read", "value": read}, {"op": "write", "value": write}]}


def _inode(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _iter_records_with_offset(path: str, offset: int = 0, chunk: int = 1 << 20):
    """(record, offset after it) for the whole records of a log file, read in
    bounded chunks: a 100 MB log never sits in memory at once."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        f.seek(offset)
        buf = b""
        pos = 0
        while True:
            data = f.read(chunk)
            if not data:
                return
            buf = buf[pos:] + data
            pos = 0
            while pos + _RECORD.size <= len(buf):
                ts, length, stream, _flags, _ = _RECORD.unpack_from(buf, pos)
                end = pos + _RECORD.size + length
                if end > len(buf):
                    break
                offset += end - pos
                yield LogLine(stream, ts, buf[pos + _RECORD.size:end]), offset
                pos = end


def _iter_records(path: str):
    if path.endswith(".zst"):
        import zstandard

        with open(path, "rb") as f:
            data = zstandard.ZstdDecompressor().stream_reader(f).read()
        pos = 0
        while pos + _RECORD.size <= len(data):
            ts, length, stream, _flags, _ = _RECORD.unpack_from(data, pos)
            end = pos + _RECORD.size + length
            yield LogLine(stream, ts, data[pos + _RECORD.size:end])
            pos = end
        return
    for line, _ in _iter_records_with_offset(path):
        yield line


def _rotated_logs(cdir: str) -> list[str]:
    """Rotated log files, oldest first; plain ones are compressed with zstd
    on the way (the monitor only renames, to stay small)."""
    found: dict[int, str] = {}
    for name in os.listdir(cdir):
        if not name.startswith("container.log."):
            continue
        rest = name[len("container.log."):]
        num, _, ext = rest.partition(".")
        if not num.isdigit():
            continue
        path = os.path.join(cdir, name)
        if ext == "" and not os.path.exists(path + ".zst"):
            path = _compress_rotated(path)
        elif ext == "":
            continue
        found[int(num)] = path
    return [found[k] for k in sorted(found, reverse=True)]


def _compress_rotated(path: str) -> str:
    import zstandard

    tmp = f"{path}.zst.{os.getpid()}.tmp"
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            zstandard.ZstdCompressor(level=3).copy_stream(src, dst)
        os.replace(tmp, path + ".zst")
        os.unlink(path)
        return path + ".zst"
    except FileNotFoundError:  # rotated again meanwhile
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        return path + ".zst" if os.path.exists(path + ".zst") else path


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")

INIT_PATH = "/sbin/docker-init"


def _init_binary() -> str:
    """The host's tini, static if there is one (any image's libc will do then)."""
    for path in ("/usr/bin/tini-static", "/usr/bin/tini"):
        if os.path.exists(path):
            return path
    raise InvalidArgument("init=True needs tini on the host (apt-get install tini)")


def _port_bindings(bindings) -> dict:
    """Docker's HostConfig.PortBindings: {"80/tcp": [{"HostIp": "", "HostPort": "9000"}]}."""
    out: dict[str, list] = {}
    for b in bindings:
        out.setdefault(f"{b.port}/{b.proto}", []).append(
            {"HostIp": b.host_ip or "", "HostPort": str(b.host_port or "")})
    return out


def _restart_policy(policy) -> dict:
    if not policy:
        return {"Name": "no", "MaximumRetryCount": 0}
    if isinstance(policy, str):
        name, _, count = policy.partition(":")
        policy = {"Name": name, "MaximumRetryCount": int(count) if count else 0}
    name = policy.get("Name") or "no"
    if name not in ("no", "always", "unless-stopped", "on-failure"):
        raise InvalidArgument(f"invalid restart policy: {name}")
    count = int(policy.get("MaximumRetryCount") or 0)
    if count and name != "on-failure":
        raise InvalidArgument(f"maximum retry count cannot be used with restart policy {name!r}")
    return {"Name": name, "MaximumRetryCount": count}


def _log_options(config) -> dict:
    opts = dict((config or {}).get("Config", config or {}) if isinstance(config, Mapping) else {})
    out: dict[str, Any] = {}
    if opts.get("max-size"):
        from .linux.cgroups import parse_size

        out["max-size"] = parse_size(opts["max-size"])
        out["max-file"] = int(opts.get("max-file", 1))
        if out["max-file"] < 1:
            raise InvalidArgument("max-file must be at least 1")
    return out


def _format(line: LogLine, timestamps: bool) -> bytes:
    if timestamps:
        return _timefmt.rfc3339(line.time_ns).encode() + b" " + line.data
    return line.data


_RESTART_ENV = ("HOME", "USER", "LOGNAME", "PATH", "LANG", "XDG_DATA_HOME", "XDG_RUNTIME_DIR",
                "CONTAIN_ROOT", "CONTAIN_ROOTFS_DRIVER", "CONTAIN_CGROUP_PARENT")


def _capabilities(cap_add: Sequence[str], cap_drop: Sequence[str], privileged: bool) -> list[str]:
    def norm(c: str) -> str:
        c = c.upper()
        return c if c.startswith("CAP_") else "CAP_" + c

    if privileged:
        return list(defaults.CAPABILITY_NUMBERS)
    caps = list(defaults.DEFAULT_CAPABILITIES)
    for c in cap_drop:
        if c.upper() == "ALL":
            caps = []
            continue
        if norm(c) not in defaults.CAPABILITY_NUMBERS:
            raise InvalidArgument(f"unknown capability to drop: {c}")
        caps = [x for x in caps if x != norm(c)]
    for c in cap_add:
        if c.upper() == "ALL":
            caps = list(defaults.CAPABILITY_NUMBERS)
            continue
        if norm(c) not in defaults.CAPABILITY_NUMBERS:
            raise InvalidArgument(f"unknown capability to add: {c}")
        if norm(c) not in caps:
            caps.append(norm(c))
    return caps
