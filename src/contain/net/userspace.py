"""The network of a rootless container: slirp4netns, user-mode TCP/IP.

An ordinary user cannot make veths, bridges or nftables rules, so each
container gets its own slirp4netns, a user-mode network stack on a tap
device inside the container's network namespace (as podman's and rootless
Docker's default):

    container 10.0.2.100/24 --tap0-- slirp4netns --host sockets-- the world
    gateway 10.0.2.2 (the host's loopback, only with allow_host_loopback=true)
    DNS 10.0.2.3 (forwarded to the host's resolvers)

Published ports are host sockets opened by slirp4netns (its API socket,
`add_hostfwd`), checked free before the container starts.

Who owns the helper: it is started once the container's process exists
(pointed at its pid), in a session of its own and with no death signal, so
it outlives the caller (a detached container keeps its network; init then
becomes its parent).  Its --exit-fd is a pidfd of the container's first
process: that fd hangs up when the process is reaped (by the container's
monitor), and slirp4netns then exits and removes its API socket -- whether
or not any Python process is still around.  release() is the safety net:
it waits for the helper to go, kills it if it does not, reaps it if it is
our child, and removes what it left.

pasta (package passt) is detected but not used: the bookworm build
(0.0~git20230309) has no exit fd and does not quit when a target given by
PID exits (--no-netns-quit concerns only namespaces bound to a file), so a
detached container's pasta would outlive it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
from typing import Any, Callable, Iterable, Optional, Sequence

import attrs

from .._root import RootArg, get_root
from ..linux.proc import start_time
from ..errors import Conflict, InvalidArgument, RuntimeFailure
from . import hosts
from .endpoint import PortBinding, Prepared, PortsArg, bind_probe, parse_ports

MODE = "slirp4netns"
SUBNET = "10.0.2.0/24"
GUEST_IP = "10.0.2.100"
GATEWAY = "10.0.2.2"
DNS = "10.0.2.3"
PREFIXLEN = 24
TAP = "tap0"
READY_TIMEOUT = 10.0
_SEARCH = ("/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin")
_SUN_PATH_MAX = 107


@attrs.frozen
class Options:
    """`slirp4netns[:allow_host_loopback=true,mtu=N]`, podman's spelling."""

    allow_host_loopback: bool = False
    mtu: int = 65520


def parse_mode(mode: str) -> Options:
    base, _, opts = mode.partition(":")
    if base != MODE:
        raise InvalidArgument(f"not a {MODE} network mode: {mode!r}")
    values: dict[str, Any] = {}
    for item in filter(None, opts.split(",")):
        key, sep, value = item.partition("=")
        if key == "allow_host_loopback" and value.lower() in ("true", "false", "1", "0"):
            values["allow_host_loopback"] = value.lower() in ("true", "1")
        elif key == "mtu" and value.isdigit() and 1280 <= int(value) <= 65521:
            values["mtu"] = int(value)
        else:
            raise InvalidArgument(f"unsupported {MODE} option {item!r} "
                                  "(allow_host_loopback=true|false, mtu=1280..65521)")
    return Options(**values)


def find(name: str, search: Sequence[str] = _SEARCH) -> Optional[str]:
    for d in search:
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def require(tun: str = "/dev/net/tun") -> str:
    """The slirp4netns binary, or InvalidArgument saying what is missing."""
    path = find("slirp4netns")
    if path is None:
        pasta = " (pasta is installed, but this version cannot be tied to a container's lifetime)" \
            if find("pasta") else ""
        raise InvalidArgument(
            "the network of a rootless container needs slirp4netns, which is not installed"
            f"{pasta}: an administrator can `apt-get install slirp4netns`; or use network='none' "
            "or network='host'")
    if not os.access(tun, os.R_OK | os.W_OK):
        raise InvalidArgument(f"slirp4netns needs {tun} to be readable and writable by this user "
                              "(mode 0666, as Debian makes it); or use network='none' or network='host'")
    return path


# ------------------------------------------------------------------ ports
def resolve_ports(bindings: Sequence[PortBinding]) -> list[PortBinding]:
    """Fixed host ports checked free now (Conflict naming the port); free
    ones picked for the rest."""
    out: list[PortBinding] = []
    seen: set[tuple[str, str, int]] = set()
    for b in bindings:
        if b.host_port is not None:
            key = (b.proto, b.host_ip or "0.0.0.0", b.host_port)
            if key in seen or (b.proto, "0.0.0.0", b.host_port) in seen or \
                    (not b.host_ip and any(k[0] == b.proto and k[2] == b.host_port for k in seen)):
                raise Conflict(f"port {key[1]}:{b.host_port}/{b.proto} is published twice")
            bind_probe(b.proto, b.host_ip, b.host_port)
            seen.add(key)
    for b in bindings:
        if b.host_port is None:
            b = attrs.evolve(b, host_port=bind_probe(b.proto, b.host_ip, 0))
        out.append(b)
    return out


def _settings(bindings: Sequence[PortBinding], exposed: Iterable[Any]) -> dict:
    ports: dict[str, Any] = {}
    for key in exposed:
        port, _, proto = str(key).partition("/")
        ports.setdefault(f"{port}/{proto or 'tcp'}", None)
    for b in bindings:
        if ports.get(b.key) is None:
            ports[b.key] = []
        ports[b.key].append({"HostIp": b.host_ip or "0.0.0.0", "HostPort": str(b.host_port)})
    endpoint = {"IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "",
                "NetworkID": MODE, "EndpointID": "", "Gateway": GATEWAY, "IPAddress": GUEST_IP,
                "IPPrefixLen": PREFIXLEN, "IPv6Gateway": "", "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0, "DNSNames": None}
    return {"Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": False, "Ports": ports,
            "EndpointID": "", "Gateway": GATEWAY, "IPAddress": GUEST_IP, "IPPrefixLen": PREFIXLEN,
            "MacAddress": "", "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "Networks": {MODE: endpoint}}


def _resolv_text(host_text: str) -> str:
    """The host's search/options, with slirp4netns's DNS forwarder as the
    one nameserver (the host's may be loopback ones, unreachable inside)."""
    lines = [line for line in host_text.splitlines()
             if line.split()[:1] and line.split()[0] in ("search", "domain", "options")]
    return "\n".join([f"nameserver {DNS}", *lines]) + "\n"


# ------------------------------------------------------------- lifecycle
@attrs.define
class UserspacePrepared(Prepared):
    """endpoint.Prepared for a slirp4netns container: nothing to join before
    the start (the container makes its own namespace, owned by its user
    namespace); started() brings up the helper once the process exists."""

    options: Options = Options()
    bindings: list = attrs.Factory(list)
    root_path: str = ""
    binary: Optional[str] = None

    def started(self, pid: int, pid_start: Optional[int] = None) -> Callable[[], Optional[int]]:
        """Launch the helper; returns the wait for its network to be up
        (call it: the caller's own bookkeeping overlaps the helper's start)."""
        return launch_helper(self.root_path, self.container_id, pid, self.options, self.bindings,
                             pid_start=pid_start, binary=self.binary)


def prepare(root: RootArg, container_id: str, *, hostname: str, network_mode: str, name: str = "",
            ports: PortsArg = None, publish_all: bool = False,
            exposed_ports: Iterable[Any] = ()) -> UserspacePrepared:
    """Check and resolve everything before the container exists: the helper
    is installed, the published host ports are free (Conflict), the
    hosts/hostname/resolv.conf files are written."""
    r = get_root(root)
    options = parse_mode(network_mode)
    binary = require()
    cdir = r.container_dir(container_id)
    release(r, container_id)  # whatever an earlier run of this container left
    # Helpers of this process's ended containers may still hold their host
    # ports for a moment (release(background=True)): gone before the probe.
    _wait_for_releases()
    exposed = list(exposed_ports)
    bindings = resolve_ports(parse_ports(ports, publish_all, exposed))
    files = hosts.write_all(cdir, hostname=hostname,
                            hosts=hosts.hosts_text([(GUEST_IP, [hostname])]),
                            resolv=_resolv_text(hosts.host_resolv_conf()))
    return UserspacePrepared(netns_fd=None, settings=_settings(bindings, exposed), files=files,
                             container_id=container_id, options=options, bindings=bindings,
                             root_path=r.path, binary=binary)


def api_socket_path(root_path: str, container_id: str) -> str:
    """The helper's API socket, in the user's runtime directory; named by
    the full id where it fits (so the helper's command line names its
    container), else by a prefix."""
    from ..linux.rootless import runtime_dir

    base = runtime_dir()
    path = os.path.join(base, f"{container_id}.net")
    if len(path) > _SUN_PATH_MAX:
        path = os.path.join(base, f"{container_id[:16]}.net")
    if len(path) > _SUN_PATH_MAX:
        raise InvalidArgument(f"the runtime directory {base} is too long a path for a socket")
    return path


def _record_path(api: str) -> str:
    return api + ".json"


def _write_record(api: str, record: dict) -> None:
    """The helper's pid (with its start time) beside its socket, in the
    runtime directory (a tmpfs in a user session): for release()."""
    fd = os.open(_record_path(api), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(record).encode())
    finally:
        os.close(fd)




def _alive(pidfd: int) -> bool:
    return not select.select([pidfd], [], [], 0)[0]


# A container that is exiting has lost its namespaces a moment before its
# pidfd says so; the helper can fail in that moment.  Its failure counts as
# the container's end if the pidfd follows within this many seconds.
_EXIT_GRACE = 0.2


def _ending(pidfd: int) -> bool:
    return bool(select.select([pidfd], [], [], _EXIT_GRACE)[0])


def _last_line(fd: int) -> str:
    try:
        text = os.pread(fd, 1 << 16, 0).decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # slirp4netns logs its API requests too; its complaints are what matter.
    bad = [line for line in lines if "error" in line.lower() or "fail" in line.lower()
           or "cannot" in line.lower()]
    return (bad or lines or [""])[-1]


def start_helper(root_path: str, container_id: str, pid: int, options: Options,
                 bindings: Sequence[PortBinding], *, pid_start: Optional[int] = None,
                 binary: Optional[str] = None) -> Optional[int]:
    """Start slirp4netns on the container whose first process is `pid`,
    wait until its network is configured and publish the ports.  Returns
    the helper's pid (None: the container was gone already).  On failure the
    container is killed (it cannot run without its network) and the error
    raised: RuntimeFailure (step "slirp4netns"), Conflict for a port."""
    return launch_helper(root_path, container_id, pid, options, bindings,
                         pid_start=pid_start, binary=binary)()


def launch_helper(root_path: str, container_id: str, pid: int, options: Options,
                  bindings: Sequence[PortBinding], *, pid_start: Optional[int] = None,
                  binary: Optional[str] = None) -> Callable[[], Optional[int]]:
    """start_helper in two steps: this starts the process and returns the
    wait (ready byte, then the ports), to be called once."""
    binary = binary or require()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return lambda: None  # exited already: nothing to connect
    ready_r = log_fd = -1

    def fail() -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        release(root_path, container_id)

    try:
        if pid_start is not None and start_time(pid) != pid_start:
            os.close(pidfd)
            return lambda: None
        api = api_socket_path(root_path, container_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(api)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        argv = [binary, "--configure", f"--mtu={options.mtu}", f"--exit-fd={pidfd}",
                f"--ready-fd={ready_w}", f"--api-socket={api}",
                # as podman: its own mount namespace and a seccomp filter, since
                # it parses what the container sends
                "--enable-sandbox", "--enable-seccomp"]
        if not options.allow_host_loopback:
            argv.append("--disable-host-loopback")
        argv += [str(pid), TAP]
        # Its output goes to memory, not a file: a start on ext4 waits for
        # every file it creates; we read it only if the helper fails.
        log_fd = os.memfd_create("slirp4netns-log", os.MFD_CLOEXEC)
        try:
            _reap_children()
            # Its own session: a Ctrl-C at the caller's terminal is not for it,
            # and it outlives the caller (then init is its parent).
            helper = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                      pass_fds=(pidfd, ready_w), start_new_session=True)
        except OSError as exc:
            raise RuntimeFailure("slirp4netns", exc.errno or 0, binary) from None
        finally:
            os.close(ready_w)
        _children.append(helper)
        with _records_lock:
            _write_record(api, {"pid": helper.pid, "start": start_time(helper.pid), "api": api})
    except BaseException:
        if ready_r >= 0:
            os.close(ready_r)
        if log_fd >= 0:
            os.close(log_fd)
        fail()
        os.close(pidfd)
        raise

    def wait() -> Optional[int]:
        try:
            try:
                got = select.select([ready_r], [], [], READY_TIMEOUT)[0]
                byte = os.read(ready_r, 1) if got else b""
            finally:
                os.close(ready_r)
            if byte != b"1":
                if _ending(pidfd):
                    return None  # the container ended before its network was up: no matter
                raise RuntimeFailure("slirp4netns", 0, _last_line(log_fd) or
                                     ("not ready in time" if not got else "exited before the network was up"))
            for b in bindings:
                try:
                    _add_hostfwd(api, b)
                except (OSError, ValueError) as exc:
                    # The helper went away under us: with the container (no
                    # matter), or on its own (an error naming the port).
                    if _ending(pidfd):
                        return None
                    where = f"{b.host_ip or '0.0.0.0'}:{b.host_port}/{b.proto}"
                    raise RuntimeFailure("slirp4netns", getattr(exc, "errno", 0) or 0,
                                         f"publish {where}: {_last_line(log_fd) or exc}") from None
            return helper.pid
        except BaseException:
            fail()
            raise
        finally:
            os.close(pidfd)
            os.close(log_fd)

    return wait


# Helpers we started and that may still need reaping: one that ends while
# this process lives is its zombie until polled (here, at the next start or
# release); one still running when this process exits is init's to reap.
_children: list = []


def _reap_children() -> None:
    _children[:] = [p for p in _children if p.poll() is None]


def _api(path: str, request: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(READY_TIMEOUT)
        s.connect(path)
        s.sendall(json.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return json.loads(data or b"{}")


def _add_hostfwd(api: str, b: PortBinding) -> None:
    reply = _api(api, {"execute": "add_hostfwd", "arguments": {
        "proto": b.proto, "host_addr": b.host_ip or "0.0.0.0", "host_port": b.host_port,
        "guest_addr": GUEST_IP, "guest_port": b.port}})
    if "error" in reply:
        where = f"{b.host_ip or '0.0.0.0'}:{b.host_port}/{b.proto}"
        # The port was free when checked: someone took it in between.
        raise Conflict(f"Bind for {where} failed: port is already allocated "
                       f"({reply['error'].get('desc', 'slirp4netns refused it')})")


def release(root: RootArg, container_id: str, *, timeout: float = 2.0,
            background: bool = False) -> None:
    """Make sure the container's helper is gone and its socket removed.
    Idempotent; the helper normally exits on its own as the container's
    first process is reaped, so this mostly waits a moment.

    `background`: the container has ended and its helper is on its way out
    (slirp4netns spends 10-50 ms in the kernel closing its tap device):
    wait for it on a thread instead of here.  A start of the same
    container waits for it anyway (its prepare() releases in the
    foreground), and the process waits for such threads at exit."""
    root_path = root if isinstance(root, str) else get_root(root).path
    try:
        record_path = _record_path(api_socket_path(root_path, container_id))
        with open(record_path) as f:
            record = json.load(f)
    except (OSError, ValueError, InvalidArgument):
        return
    if background:
        t = threading.Thread(target=_release_quietly, args=(record, record_path, timeout),
                             name="contain-slirp-release", daemon=True)
        with _records_lock:
            _releasing[:] = [x for x in _releasing if x.is_alive()] + [t]
        t.start()
        return
    _release_quietly(record, record_path, timeout)


def _release_quietly(record: dict, record_path: str, timeout: float) -> None:
    with contextlib.suppress(OSError):  # never in the way of the bookkeeping that calls it
        _release(record, record_path, timeout)


# Guards a helper's record and socket: a late background release must not
# take away those of a helper started since for the same container.
_records_lock = threading.Lock()
_releasing: list = []


def _wait_for_releases(timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    for t in list(_releasing):
        t.join(max(0.0, deadline - time.monotonic()))


atexit.register(_wait_for_releases)


def _release(record: dict, record_path: str, timeout: float) -> None:
    pid, start = record.get("pid"), record.get("start")
    if pid and start is not None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            fd = -1
        if fd >= 0:
            try:
                if start_time(pid) == start:
                    if not select.select([fd], [], [], timeout)[0]:
                        with contextlib.suppress(ProcessLookupError):
                            signal.pidfd_send_signal(fd, signal.SIGKILL)
                        select.select([fd], [], [], timeout)
            finally:
                os.close(fd)
    with _records_lock:
        _reap_children()
        try:
            with open(record_path) as f:
                current = json.load(f)
        except (OSError, ValueError):
            current = None
        if current is None or (current.get("pid"), current.get("start")) != (pid, start):
            # Released already (the socket went first), or a new helper's by
            # now: its socket and record stay.
            return
        api = record.get("api")
        if api:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(api)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record_path)


def helper_pids(user_uid: Optional[int] = None) -> list[int]:
    """Live slirp4netns processes (of one user): for tests and diagnosis."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{name}")
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index(b"(") + 1:stat.rindex(b")")]
        state = stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3]
        if comm == b"slirp4netns" and state != b"Z" and (user_uid is None or st.st_uid == user_uid):
            out.append(int(name))
    return out
