"""Networking with real bridges, veths, namespaces and nftables.

Safety rules these tests keep: traffic goes only to loopback, to the host's
own address (asserted local first) and to namespaces and bridges the tests
made (asserted with `ip route get`: our bridge or veth, no gateway).  Outbound
NAT is checked against a fake upstream namespace.  Every loop and wait is
bounded, and the module asserts it left no link, namespace, rule or address.

Layer (a) drives contain.net directly with made-up container ids, running
processes in the prepared namespace with nsenter; layer (b) goes through
Container.run(network=...) and is skipped until Container is wired to it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import multiprocessing
import os
import secrets
import socket
import subprocess
import sys
import threading
import time

import pytest

from contain.errors import Conflict, InvalidArgument, NotFound

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: bridges, veths, nftables")

TIMEOUT = 10.0


# ----------------------------------------------------------------- helpers
def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _bridges_of_others(nroot) -> set[str]:
    """Bridges that are not another network of `nroot` than its default one."""
    from contain.net import ipam

    mine = {ipam.load(nroot, n).bridge for n in ipam.names(nroot)}
    return ({n for n in _links() if n.startswith("cbr-")} - mine) | {ipam.load(nroot, "bridge").bridge}


def _ours(names) -> set[str]:
    # Pool links ("cvp<pid>...") of this process only: other processes on the
    # host may be running contain meanwhile.
    mine = f"cvp{os.getpid():07x}"
    return {n for n in names if n.startswith(("cbr-", "cve", "ctnup", mine))}


def _nft_table() -> bool:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return "table ip contain" in out


def _forwarding() -> str:
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        return f.read().strip()


def _netns_list() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def assert_via_our_bridge(addr: str, ifname: str) -> None:
    """The only way these tests reach an address: straight out of our own link."""
    out = subprocess.run(["ip", "route", "get", addr], capture_output=True, text=True, check=True).stdout
    assert f"dev {ifname} " in out and " via " not in out, out


def assert_local(addr: str) -> None:
    out = subprocess.run(["ip", "route", "get", addr], capture_output=True, text=True, check=True).stdout
    assert out.startswith("local ") and " via " not in out, out


def http_get(addr: str, port: int, path: str = "/index.html") -> bytes:
    """A bare HTTP/1.0 GET over a socket (no proxy settings are ever consulted)."""
    deadline = time.monotonic() + TIMEOUT
    last: Exception = OSError("never tried")
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((addr, port), timeout=3) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                chunks = []
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
            reply = b"".join(chunks)
            if reply:
                return reply.split(b"\r\n\r\n", 1)[-1]
        except OSError as exc:  # the server may still be starting
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"no HTTP answer from {addr}:{port}: {last}")


def in_ns(prepared, argv, **kw) -> subprocess.Popen:
    """Run argv in the prepared namespace (nsenter opens it through our fd)."""
    return subprocess.Popen(["nsenter", f"--net={prepared.netns_path}", *argv], **kw)


def run_in_ns(prepared, argv, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={prepared.netns_path}", *argv],
                          capture_output=True, text=True, timeout=timeout)


def wget_in(prepared, url: str, attempts: int = 40) -> subprocess.CompletedProcess:
    """busybox wget inside the namespace, retried briefly while a server starts.
    (No -T: this busybox build crashes with it; the subprocess timeout bounds it.)"""
    got = None
    for _ in range(attempts):
        with contextlib.suppress(subprocess.TimeoutExpired):
            got = run_in_ns(prepared, ["busybox", "wget", "-q", "-O", "-", url], timeout=3)
            if got.returncode == 0:
                break
        time.sleep(0.1)
    assert got is not None
    return got


@contextlib.contextmanager
def httpd(prepared, docroot: str, port: int = 80):
    from contain._busybox import find_busybox

    proc = in_ns(prepared, [find_busybox(), "httpd", "-f", "-p", str(port), "-h", docroot])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(TIMEOUT)


def free_port(proto: str = "tcp") -> int:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def pretend_running(root: str, cid: str) -> None:
    """A container record saying "running as this test process", so that
    repair() (which prepare() runs on a port conflict) leaves it alone."""
    import json

    with open("/proc/self/stat", "rb") as f:
        data = f.read()
    start = int(data[data.rindex(b")") + 2:].split()[19])
    cdir = os.path.join(root, "containers", cid)
    os.makedirs(cdir, exist_ok=True)
    with open(os.path.join(cdir, "state.json"), "w") as f:
        json.dump({"State": {"Running": True, "Pid": os.getpid()}, "_contain": {"pid_start": start}}, f)


def new_cid() -> str:
    return secrets.token_hex(32)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def host_before():
    """What the host had before; the module must leave exactly that."""
    if not os.path.exists("/usr/sbin/nft") and not os.path.exists("/sbin/nft"):
        pytest.skip("nftables is not installed")
    before = (_ours(_links()), _nft_table(), _forwarding(), _netns_list())
    yield before
    from contain.net import pool

    pool.shutdown()  # what atexit does: the ready namespaces and their veths go
    # veths of dead namespaces go asynchronously; links that were there before
    # (the session root's default bridge) may rightly have gone meanwhile.
    wait_until(lambda: _ours(_links()) <= before[0])
    links_now, table_now, fwd_now, netns_now = _ours(_links()), _nft_table(), _forwarding(), _netns_list()
    assert links_now <= before[0], f"links left behind: {links_now - before[0]}"
    assert table_now <= before[1], "the nft table contain was left behind"
    # When the table went away during the module (the session's other rules
    # went with it), forwarding is back to what the host had before contain.
    assert fwd_now == before[2] or (before[1] and not table_now), \
        "net.ipv4.ip_forward was not put back"
    assert netns_now == before[3], f"network namespaces left behind: {netns_now - before[3]}"


@pytest.fixture(scope="module")
def nroot(host_before, tmp_path_factory):
    """A state root of this module; its networks are removed at the end."""
    path = str(tmp_path_factory.mktemp("net-root"))
    yield path
    from contain.net import endpoint, ipam

    endpoint.repair(path)
    for name in ipam.names(path):
        endpoint.remove_network(path, name, force=True)


@pytest.fixture
def prepared(nroot):
    """prepare() for made-up containers; each is released after the test."""
    from contain.net import endpoint

    made = []

    def _prepare(network_mode="bridge", **kw):
        cid = kw.pop("cid", None) or new_cid()
        kw.setdefault("name", f"c{cid[:6]}")
        kw.setdefault("hostname", cid[:12])
        pretend_running(nroot, cid)
        p = endpoint.prepare(nroot, cid, network_mode=network_mode, **kw)
        made.append((cid, p))
        return p

    yield _prepare
    for cid, p in made:
        p.close()
        endpoint.release(nroot, cid, wait=True)


@pytest.fixture
def docroot(tmp_path):
    (tmp_path / "index.html").write_text("hello from the container\n")
    return str(tmp_path)


# ------------------------------------------------------------- pure logic
def test_parse_ports_forms():
    from contain.net.endpoint import PortBinding, parse_ports

    assert parse_ports({80: 9000}) == [PortBinding(80, "tcp", "", 9000)]
    assert parse_ports({"80/tcp": 9000, "53/udp": ("127.0.0.1", 9053)}) == [
        PortBinding(80, "tcp", "", 9000), PortBinding(53, "udp", "127.0.0.1", 9053)]
    assert parse_ports({80: None}) == [PortBinding(80, "tcp", "", None)]
    assert parse_ports({80: [9000, ("127.0.0.1",)]}) == [
        PortBinding(80, "tcp", "", 9000), PortBinding(80, "tcp", "127.0.0.1", None)]
    assert parse_ports(["9000:80", "127.0.0.1:9000:80/udp", "80", "127.0.0.1::81"]) == [
        PortBinding(80, "tcp", "", 9000), PortBinding(80, "udp", "127.0.0.1", 9000),
        PortBinding(80, "tcp", "", None), PortBinding(81, "tcp", "127.0.0.1", None)]
    assert parse_ports({80: 9000}, publish_all=True, exposed_ports={"80/tcp": {}, "53/udp": {}}) == [
        PortBinding(80, "tcp", "", 9000), PortBinding(53, "udp", "", None)]
    for bad in (["x:80"], {"80/sctp": 1}, {0: 1}, ["9000-9001:80-81"], {80: ("::1", 9000)}):
        with pytest.raises(InvalidArgument):
            parse_ports(bad)


def test_resolv_conf_and_hosts_text():
    from contain.net import hosts

    text = "search example\nnameserver 127.0.0.53\nnameserver 10.1.2.3\noptions ndots:2\n"
    assert hosts.resolv_text(text) == "search example\nnameserver 10.1.2.3\noptions ndots:2\n"
    assert "nameserver 8.8.8.8" in hosts.resolv_text("nameserver 127.0.0.1\nnameserver ::1\n")
    t = hosts.hosts_text([("10.0.0.2", ["h", "web"])], [("10.0.0.3", ["db", "db"])])
    assert "127.0.0.1\tlocalhost\n" in t and "10.0.0.2\th web\n" in t and "10.0.0.3\tdb\n" in t


def test_default_subnet_avoids_taken_ranges():
    from contain.net import ipam

    taken = [ipaddress.IPv4Network("10.88.0.0/16"), ipaddress.IPv4Network("172.17.5.0/24")]
    assert str(ipam.choose_subnet(taken)) == "172.18.0.0/16"


def _allocate_many(args):
    root, count = args
    from contain.net import ipam

    return [ipam.allocate(root, "pool", new_cid(), {"Name": "x"})["IPAddress"] for _ in range(count)]


def test_ipam_concurrent_processes_never_share_an_address(tmp_path):
    from contain.net import ipam

    root = str(tmp_path)
    ipam.create(root, "pool", subnet="10.250.0.0/24")  # a record only: no bridge is made
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(8) as pool:
        results = pool.map(_allocate_many, [(root, 25)] * 8, chunksize=1)
    addresses = [a for chunk in results for a in chunk]
    assert len(addresses) == 200 and len(set(addresses)) == 200
    assert "10.250.0.1" not in addresses  # the gateway
    eps = ipam.endpoints(root, "pool")
    assert sorted(e["IPAddress"] for e in eps.values()) == sorted(addresses)
    # Freed addresses come back, but not at once (round robin).
    cid = next(iter(eps))
    freed = eps[cid]["IPAddress"]
    ipam.free(root, "pool", cid)
    assert ipam.allocate(root, "pool", new_cid(), {})["IPAddress"] != freed
    with pytest.raises(Conflict):
        for _ in range(100):
            ipam.allocate(root, "pool", new_cid(), {})


# ------------------------------------------------------------ real network
def test_none_and_host_modes_make_files_only(nroot, prepared):
    before = _ours(_links())
    p = prepared("none", hostname="lonely")
    assert p.settings["Networks"].keys() == {"none"}
    if p.netns_fd is not None:  # a namespace the pool made ahead: only lo
        from contain.net import links

        assert links.netns_links(p.netns_fd) == ["lo"]
    assert open(p.files["/etc/hostname"]).read() == "lonely\n"
    assert "127.0.0.1\tlocalhost" in open(p.files["/etc/hosts"]).read()
    h = prepared("host")
    assert h.netns_fd is None and open(h.files["/etc/hosts"]).read() == open("/etc/hosts").read()
    assert _ours(_links()) == before


def test_bridge_endpoint_http_direct_and_published(nroot, prepared, docroot):
    from contain.net import ipam, links

    port_any, port_lo = free_port(), free_port()
    p = prepared(ports=[f"{port_any}:80", f"127.0.0.1:{port_lo}:80"])
    s = p.settings
    ip, bridge = s["IPAddress"], s["Bridge"]
    net = ipam.load(nroot, "bridge")
    assert ipaddress.IPv4Address(ip) in net.network and s["Gateway"] == net.gateway
    assert s["MacAddress"] == ipam.mac_for(ip)
    assert s["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port_any)},
                                     {"HostIp": "127.0.0.1", "HostPort": str(port_lo)}]}
    # Inside: lo up, eth0 with the address and the MTU of the host, default route.
    addr = run_in_ns(p, ["ip", "-o", "addr"]).stdout
    assert "lo " in addr and f"inet {ip}/{net.prefixlen}" in addr
    assert f"mtu {links.host_mtu()} " in run_in_ns(p, ["ip", "-o", "link", "show", "eth0"]).stdout
    assert f"default via {net.gateway} dev eth0" in run_in_ns(p, ["ip", "route"]).stdout
    with httpd(p, docroot):
        assert_via_our_bridge(ip, bridge)
        assert http_get(ip, 80) == b"hello from the container\n"
        assert_local("127.0.0.1")
        assert http_get("127.0.0.1", port_any) == b"hello from the container\n"
        assert http_get("127.0.0.1", port_lo) == b"hello from the container\n"
        host_ip = links.host_addresses()[0]
        assert_local(host_ip)
        assert http_get(host_ip, port_any) == b"hello from the container\n"
        # The 127.0.0.1-only binding does not answer on the host's address.
        with pytest.raises(OSError):
            with socket.create_connection((host_ip, port_lo), timeout=2) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert sock.recv(10) == b""
                raise ConnectionRefusedError


def _netns_inode(path: str) -> int:
    return os.stat(path).st_ino


def test_bridge_start_takes_a_ready_pooled_namespace(nroot, prepared):
    """prepare() on a bridge uses a namespace made ahead (its veth renamed to
    the container's), never one used before, and the pool refills."""
    from contain.net import ipam, pool

    assert pool.fill(2), pool.stats()
    ready = set(pool.ready_links())
    assert len(ready) >= 2 and ready <= _links()
    hits = pool.stats()["hits"]
    p = prepared()
    assert pool.stats()["hits"] == hits + 1
    veth = ipam.attachments(nroot, p.container_id)["bridge"]["HostVeth"]
    assert veth in ready and veth in _links() and veth not in pool.ready_links()
    alias = open(f"/sys/class/net/{veth}/ifalias").read().strip()
    assert alias == f"contain ctr={p.container_id}"  # no longer marked as a pool link
    master = os.path.basename(os.readlink(f"/sys/class/net/{veth}/master"))
    assert master == p.settings["Bridge"]
    addr = run_in_ns(p, ["ip", "-o", "addr"]).stdout
    assert "lo " in addr and f"inet {p.settings['IPAddress']}/" in addr
    link = run_in_ns(p, ["ip", "-o", "link", "show", "eth0"]).stdout
    assert "state UP" in link or ",UP" in link
    assert p.settings["MacAddress"] in link
    assert f"default via {p.settings['Gateway']} dev eth0" in run_in_ns(p, ["ip", "route"]).stdout
    # The pool makes up for what was taken; a second start gets another namespace.
    assert pool.fill(2)
    q = prepared()
    assert _netns_inode(q.netns_path) != _netns_inode(p.netns_path)
    assert_via_our_bridge(q.settings["IPAddress"], q.settings["Bridge"])
    got = subprocess.run(["busybox", "ping", "-c", "1", "-W", "2", q.settings["IPAddress"]],
                         capture_output=True, text=True)
    assert got.returncode == 0, got.stdout
    # Released and closed: the namespace and both ends of the veth go.
    p.close()
    from contain.net import endpoint

    endpoint.release(nroot, p.container_id)
    assert wait_until(lambda: veth not in _links())


_POOL_CHILD = """
import os, signal, sys
from contain.net import pool
assert pool.fill(3), pool.stats()
print(" ".join(pool.ready_links()), flush=True)
if sys.argv[1] == "crash":
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how", ["exit", "crash"])
def test_pooled_namespaces_die_with_their_process(nroot, how):
    """Ready namespaces are held by descriptors only: a normal exit (atexit)
    and a SIGKILL alike leave no link behind."""
    proc = subprocess.run([sys.executable, "-c", _POOL_CHILD, how], capture_output=True, text=True,
                          timeout=60)
    names = proc.stdout.split()
    assert len(names) == 3 and all(n.startswith("cvp") for n in names), (proc.stdout, proc.stderr)
    assert proc.returncode == (-9 if how == "crash" else 0), proc.stderr
    assert wait_until(lambda: not set(names) & _links()), set(names) & _links()


def test_a_forked_child_does_not_keep_the_pool_alive(nroot):
    from contain.net import pool

    assert pool.fill(1)
    names = set(pool.ready_links())
    pid = os.fork()
    if pid == 0:  # the child: its copies of the descriptors were closed at fork
        code = 0 if pool.stats()["ready"] == 0 else 1
        time.sleep(5)
        os._exit(code)
    try:
        pool.shutdown()
        # Gone while the child still lives.
        assert wait_until(lambda: not names & _links(), timeout=4), names & _links()
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)
    finally:
        os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)


def test_repair_removes_pool_leftovers_of_a_dead_process(nroot):
    """A pool link whose owner died (here: its namespace kept alive by a
    stray holder) is deleted by repair(); a live owner's is spared."""
    from contain.net import endpoint, pool

    gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    dead_pid = int(gone)
    assert not os.path.exists(f"/proc/{dead_pid}")
    stale, live = f"cvp{dead_pid:07x}fffff", f"cvp{os.getpid():07x}ffffe"
    holder = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    try:
        assert wait_until(lambda: os.readlink(f"/proc/{holder.pid}/ns/net")
                          != os.readlink("/proc/self/ns/net"))
        for name, alias in ((stale, f"contain-pool pid={dead_pid} start=1"),
                            (live, pool._pool.alias)):
            subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"e{name[-5:]}",
                            "netns", str(holder.pid)], check=True)
            subprocess.run(["ip", "link", "set", "dev", name, "alias", alias], check=True)
        assert {stale, live} <= _links()
        endpoint.repair(nroot)
        assert stale not in _links() and live in _links()
        peers = subprocess.run(["nsenter", "-t", str(holder.pid), "-n", "ip", "-o", "link"],
                               capture_output=True, text=True).stdout
        assert "efffff" not in peers and "effffe" in peers  # the peer went with its host end
    finally:
        subprocess.run(["ip", "link", "del", live], capture_output=True)
        holder.kill()
        holder.wait(TIMEOUT)
    assert wait_until(lambda: not {stale, live} & _links())


def test_a_quick_restart_keeps_its_new_veth(nroot, prepared):
    """A restarted container whose old veth is still there (here its
    namespace is kept by a stray holder) gets a new one; the background
    delete takes the old one and spares the new."""
    from contain.net import endpoint, ipam, links

    first = prepared()
    cid = first.container_id
    old = ipam.attachments(nroot, cid)["bridge"]["HostVeth"]
    holder = in_ns(first, ["sleep", "30"])
    try:
        time.sleep(0.05)
        first.close()
        endpoint.release(nroot, cid)  # the old veth is still there: deleted "soon"
        second = prepared(cid=cid)
        new = ipam.attachments(nroot, cid)["bridge"]["HostVeth"]
        assert new != old and {old, new} <= _links()
        assert wait_until(lambda: old not in _links(), timeout=links._REAP_DELAY + 5)
        assert new in _links()
        ip = second.settings["IPAddress"]
        assert_via_our_bridge(ip, second.settings["Bridge"])
        got = subprocess.run(["busybox", "ping", "-c", "1", "-W", "2", ip], capture_output=True, text=True)
        assert got.returncode == 0, got.stdout
        inside = subprocess.run(["nsenter", "-t", str(holder.pid), "-n", "ip", "-o", "link"],
                                capture_output=True, text=True).stdout
        assert "eth0" not in inside  # the old pair went with its host end
    finally:
        holder.kill()
        holder.wait(TIMEOUT)


def test_pool_turned_off_still_starts(nroot, prepared, monkeypatch):
    from contain.net import pool

    pool.shutdown()
    monkeypatch.setenv("CONTAIN_NETNS_POOL", "0")
    misses = pool.stats()["misses"]
    p = prepared()
    assert pool.stats()["misses"] == misses + 1 and pool.stats()["ready"] == 0
    assert f"inet {p.settings['IPAddress']}/" in run_in_ns(p, ["ip", "-o", "addr"]).stdout


def test_udp_published_port(nroot, prepared):
    port = free_port("udp")
    p = prepared(ports={"5353/udp": ("127.0.0.1", port)})
    server = in_ns(p, [sys.executable, "-c", (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind(('0.0.0.0', 5353)); print('ready', flush=True)\n"
        "s.settimeout(10)\n"
        "for _ in range(50):\n"
        "    data, peer = s.recvfrom(100); s.sendto(data.upper(), peer)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(0.5)
            for _ in range(20):
                c.sendto(b"ping", ("127.0.0.1", port))
                with contextlib.suppress(socket.timeout):
                    assert c.recvfrom(100)[0] == b"PING"
                    break
            else:
                raise AssertionError("no UDP answer through the published port")
    finally:
        server.kill()
        server.wait(TIMEOUT)


def test_user_network_peers_by_name(nroot, prepared, docroot):
    from contain.network import Network

    net = Network.create("frontnet", root=nroot)
    try:
        a = prepared("frontnet", name="alpha", aliases=["db"])
        b = prepared("frontnet", name="beta")
        a_ip = a.settings["Networks"]["frontnet"]["IPAddress"]
        b_hosts = open(b.files["/etc/hosts"]).read()
        line = next(ln for ln in b_hosts.splitlines() if ln.split()[1:2] == ["alpha"])
        assert line.split()[0] == a_ip and "db" in line.split() and a.container_id[:12] in line.split()
        assert "beta" in open(a.files["/etc/hosts"]).read()  # updated when beta joined
        assert a.settings["IPAddress"] == ""  # Docker fills it for the default bridge only
        with httpd(a, docroot):
            ip_from_hosts = line.split()[0]
            got = wget_in(b, f"http://{ip_from_hosts}/index.html")
            assert got.stdout == "hello from the container\n", got.stderr
        inspect = net.inspect()
        assert {c["Name"] for c in inspect["Containers"].values()} == {"alpha", "beta"}
        assert inspect["IPAM"]["Config"][0]["Subnet"] == str(ipaddress.ip_network(
            f"{a_ip}/{a.settings['Networks']['frontnet']['IPPrefixLen']}", strict=False))
        with pytest.raises(Conflict):
            net.remove()  # containers attached
        from contain.net import endpoint

        a.close()
        endpoint.release(nroot, a.container_id)
        assert "alpha" not in open(b.files["/etc/hosts"]).read()
    finally:
        net.remove(force=True)
    with pytest.raises(NotFound):
        Network.get("frontnet", root=nroot)


def test_bridge_mac_stays_as_containers_come_and_go(nroot, prepared):
    # The gateway's MAC is the bridge's: it must not follow its ports'.
    from contain.net import endpoint
    from contain.network import Network

    net = Network.create("macnet", root=nroot)
    try:
        bridge = net.inspect()["Options"]["com.docker.network.bridge.name"]

        def mac() -> str:
            with open(f"/sys/class/net/{bridge}/address") as f:
                return f.read().strip()

        first = mac()
        assert int(first.split(":")[0], 16) & 0x02  # locally administered
        seen = set()
        for _ in range(3):
            p = prepared("macnet")
            seen.add(mac())
            p.close()
            endpoint.release(nroot, p.container_id, wait=True)
            seen.add(mac())
        assert seen == {first}
    finally:
        net.remove(force=True)


def test_networks_are_isolated_from_each_other(nroot, prepared, docroot):
    from contain.network import Network

    n1, n2 = Network.create("iso1", root=nroot), Network.create("iso2", root=nroot)
    try:
        a, b = prepared("iso1"), prepared("iso2")
        assert n1.inspect()["IPAM"]["Config"] != n2.inspect()["IPAM"]["Config"]
        with httpd(a, docroot):
            a_ip = a.settings["Networks"]["iso1"]["IPAddress"]
            assert http_get(a_ip, 80) == b"hello from the container\n"  # the server is up
            assert run_in_ns(a, ["busybox", "nc", "-w", "2", a_ip, "80"]).returncode == 0
            got = run_in_ns(b, ["busybox", "nc", "-w", "2", a_ip, "80"])
            assert got.returncode != 0
    finally:
        n1.remove(force=True)
        n2.remove(force=True)


@contextlib.contextmanager
def fake_upstream():
    """A namespace standing in for the internet, joined to the host by a veth,
    with an HTTP server that records who connected."""
    from contain.net import ipam, links

    subnet = ipam.choose_subnet(links.host_networks() + [ipaddress.IPv4Network("10.88.0.0/13")])
    host_ip, far_ip = str(subnet.network_address + 1), str(subnet.network_address + 2)
    tag = secrets.token_hex(3)
    ns, veth = f"ctnup-{tag}", f"ctnup{tag}"
    log = f"/tmp/{ns}.log"
    server = None
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "up0", "netns", ns], check=True)
        subprocess.run(["ip", "addr", "add", f"{host_ip}/24", "dev", veth], check=True)
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
        for cmd in (["ip", "addr", "add", f"{far_ip}/24", "dev", "up0"], ["ip", "link", "set", "up0", "up"],
                    ["ip", "link", "set", "lo", "up"]):
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)
        with open(log, "w") as out:
            server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "http.server",
                                       "--bind", far_ip, "8080"], stderr=out, stdout=out, cwd="/tmp")
        assert_via_our_bridge(far_ip, veth)
        yield far_ip, host_ip, log
    finally:
        if server is not None:
            server.kill()
            server.wait(TIMEOUT)
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)


def test_outbound_nat_to_fake_upstream(nroot, prepared):
    p = prepared()
    with fake_upstream() as (far_ip, host_side_ip, log):
        # The upstream has no route back to the container's subnet: only
        # masquerade (source = the host's address on that link) lets it answer.
        got = wget_in(p, f"http://{far_ip}:8080/")
        assert got.returncode == 0, got.stderr
        with open(log) as f:
            seen = f.read()
        assert host_side_ip in seen and p.settings["IPAddress"] not in seen


def test_port_in_use_is_a_conflict_before_anything_is_made(nroot, prepared):
    from contain.net import endpoint, ipam, nft, pool

    cid = new_cid()
    pool.shutdown()  # no pair of ours in the making meanwhile
    links_before = _links()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(Conflict, match=str(port)):
            endpoint.prepare(nroot, cid, name="x", hostname="x", network_mode="bridge",
                             ports={80: ("127.0.0.1", port)})
    # Nothing of this process's (other workers make bridges meanwhile).
    made = _links() - links_before
    assert {n for n in _ours(made) if not n.startswith("cbr-")} == set(), made
    assert {n for n in made if n.startswith("cbr-")} <= _bridges_of_others(nroot), made
    assert not ipam.attachments(nroot, cid)
    assert not [r for r in nft.published() if r.container_id == cid]
    # A port another container publishes (no socket bound) clashes as well.
    other_port = free_port()
    prepared(ports={80: other_port})
    with pytest.raises(Conflict, match=str(other_port)):
        endpoint.prepare(nroot, cid, name="y", hostname="y", network_mode="bridge",
                         ports={"8080/tcp": other_port})
    assert not ipam.attachments(nroot, cid)


def test_release_is_idempotent_and_repair_cleans_after_a_crash(nroot):
    from contain.net import endpoint, ipam, nft

    busy_cid, dead_cid = new_cid(), new_cid()
    busy = endpoint.prepare(nroot, busy_cid, name="busy", hostname="busy", network_mode="bridge",
                            ports={80: None})
    dead = endpoint.prepare(nroot, dead_cid, name="dead", hostname="dead", network_mode="bridge",
                            ports={80: None})
    veth = ipam.attachments(nroot, dead_cid)["bridge"]["HostVeth"]
    assert veth in _links()
    # The "crash": the starter dies holding the namespace, nobody releases.
    dead.close()
    # The kernel takes the veth along with the namespace (asynchronously).
    assert wait_until(lambda: veth not in _links())
    # A container whose lock is held (another process is starting it) is spared.
    cdir = os.path.join(nroot, "containers", busy_cid)
    lock_fd = os.open(cdir, os.O_RDONLY | os.O_DIRECTORY)  # as Container._locked holds it
    import fcntl

    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        assert endpoint.repair(nroot) == [dead_cid]
    finally:
        os.close(lock_fd)
    assert not ipam.attachments(nroot, dead_cid)
    assert {r.container_id for r in nft.published()} & {busy_cid, dead_cid} == {busy_cid}
    busy.close()
    endpoint.release(nroot, busy_cid)
    endpoint.release(nroot, busy_cid)
    assert not ipam.attachments(nroot, busy_cid)
    assert not [r for r in nft.published() if r.container_id == busy_cid]


def test_a_port_held_by_a_crashed_container_is_reclaimed(nroot, prepared):
    from contain.net import endpoint, ipam

    port = free_port()
    ghost = new_cid()  # no record: its starter died before the container ran
    endpoint.prepare(nroot, ghost, name="ghost", hostname="ghost", network_mode="bridge",
                     ports={80: port}).close()
    p = prepared(ports={80: port})  # the conflict triggers repair, then succeeds
    assert p.settings["Ports"]["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": str(port)}]
    assert not ipam.attachments(nroot, ghost)


def test_connect_and_disconnect_a_running_process(nroot, prepared):
    from contain.net import endpoint
    from contain.network import Network

    net = Network.create("sidenet", root=nroot)
    try:
        p = prepared()
        sleeper = in_ns(p, ["sleep", "30"])
        try:
            time.sleep(0.05)
            entry = endpoint.connect(nroot, p.container_id, sleeper.pid, "sidenet", name=f"c{p.container_id[:6]}",
                                     hostname="side", aliases=["extra"])
            p.close()  # the sleeper alone holds the namespace now
            show = subprocess.run(["nsenter", "-t", str(sleeper.pid), "-n", "ip", "-o", "addr", "show", "eth1"],
                                  capture_output=True, text=True).stdout
            assert f"inet {entry['IPAddress']}/" in show
            assert_via_our_bridge(entry["IPAddress"], net.inspect()["Options"]["com.docker.network.bridge.name"])
            settings = endpoint.settings(nroot, p.container_id)
            assert set(settings["Networks"]) == {"bridge", "sidenet"}
            assert settings["Networks"]["sidenet"]["Aliases"] == ["extra"]
            routes = subprocess.run(["nsenter", "-t", str(sleeper.pid), "-n", "ip", "route"],
                                    capture_output=True, text=True).stdout
            assert routes.count("default") == 1 and "dev eth0" in routes.split("default")[1]
            endpoint.disconnect(nroot, p.container_id, "sidenet")
            gone = subprocess.run(["nsenter", "-t", str(sleeper.pid), "-n", "ip", "link", "show", "eth1"],
                                  capture_output=True, text=True)
            assert gone.returncode != 0
            with pytest.raises(NotFound):
                endpoint.disconnect(nroot, p.container_id, "sidenet")
        finally:
            sleeper.kill()
            sleeper.wait(TIMEOUT)
    finally:
        net.remove(force=True)


def test_network_objects(nroot):
    from contain.network import Network

    net = Network.create("objnet", subnet="10.251.3.0/24", gateway="10.251.3.254", root=nroot)
    try:
        assert Network.get("objnet", root=nroot) == net
        assert Network.get(net.id[:10], root=nroot) == net
        assert net in Network.list(root=nroot)
        info = net.inspect()
        assert info["IPAM"]["Config"] == [{"Subnet": "10.251.3.0/24", "Gateway": "10.251.3.254"}]
        bridge = info["Options"]["com.docker.network.bridge.name"]
        assert bridge in _links()
        with pytest.raises(Conflict):
            Network.create("objnet", root=nroot)
        with pytest.raises(Conflict):
            Network.create("overlapping", subnet="10.251.0.0/16", root=nroot)
        with pytest.raises(InvalidArgument):
            Network.create("badgw", subnet="10.252.0.0/24", gateway="10.9.9.9", root=nroot)
        with pytest.raises(InvalidArgument):
            Network.create("bad name!", root=nroot)
        assert "objnet" in Network.prune(root=nroot)["NetworksDeleted"]
        assert bridge not in _links()
    finally:
        with contextlib.suppress(NotFound):
            net.remove(force=True)


def test_fifty_concurrent_endpoints_get_distinct_addresses(nroot):
    from contain.net import endpoint, ipam

    cids = [new_cid() for _ in range(50)]
    results: dict[str, object] = {}

    def start(cid: str) -> None:
        try:
            results[cid] = endpoint.prepare(nroot, cid, name=f"n{cid[:8]}", hostname=cid[:12],
                                            network_mode="bridge")
        except Exception as exc:  # reported below
            results[cid] = exc

    threads = [threading.Thread(target=start, args=(c,)) for c in cids]
    veths: set[str] = set()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        errors = [r for r in results.values() if isinstance(r, Exception)]
        assert not errors, errors[:3]
        veths = {ipam.attachments(nroot, cid)["bridge"]["HostVeth"] for cid in cids}
        assert len(veths) == 50 and veths <= _links()
        ips = [r.settings["IPAddress"] for r in results.values()]
        assert len(ips) == 50 and len(set(ips)) == 50
        bridge = next(iter(results.values())).settings["Bridge"]
        assert_via_our_bridge(ips[-1], bridge)
        # Every namespace answers on its own address: ping from the host, bounded.
        got = subprocess.run(["busybox", "ping", "-c", "1", "-W", "2", ips[-1]], capture_output=True, text=True)
        assert got.returncode == 0, got.stdout
    finally:
        for cid, r in results.items():
            if not isinstance(r, Exception):
                r.close()
            endpoint.release(nroot, cid, wait=True)
    assert not veths & _links()


# --------------------------------------------------- through Container.run
def _wired(croot, busybox) -> bool:
    from contain import Container

    try:
        c = Container.create(busybox, ["true"], network="bridge", root=croot)
    except InvalidArgument:
        return False
    c.remove(force=True)
    return True


@pytest.fixture
def wired(croot, busybox, host_before):
    if not _wired(croot, busybox):
        pytest.skip("Container is not wired to contain.net yet")
    yield
    from contain.net import endpoint, ipam

    endpoint.repair(croot)
    for name in ipam.names(croot):
        endpoint.remove_network(croot, name, force=True)


def test_container_published_port_and_address(wired, run, croot):
    from contain.net import ipam

    port = free_port()
    c = run(["httpd", "-f", "-p", "80", "-h", "/etc"], network="bridge", ports={80: port})
    s = c.inspect()["NetworkSettings"]
    veth = ipam.attachments(croot, c.id)["bridge"]["HostVeth"]
    assert open(f"/sys/class/net/{veth}/ifalias").read().strip() == f"contain ctr={c.id}"
    assert_via_our_bridge(s["IPAddress"], s["Bridge"])
    assert b"localhost" in http_get(s["IPAddress"], 80, "/hosts")
    assert b"localhost" in http_get("127.0.0.1", port, "/hosts")
    c.remove(force=True)
    assert wait_until(lambda: veth not in _links())


def test_containers_on_a_user_network_by_name(wired, run, croot):
    from contain.network import Network

    net = Network.create("appnet", root=croot)
    try:
        run(["httpd", "-f", "-p", "80", "-h", "/etc"], network="appnet", name="websrv")
        client = run(["sleep", "30"], network="appnet")
        got = client.exec_run(["wget", "-q", "-O", "-", "http://websrv/hostname"])
        assert got.exit_code == 0, got.output
    finally:
        for c in net.containers:
            c.remove(force=True)
        net.remove(force=True)


def test_container_network_none_has_only_lo(wired, run):
    c = run(["ip", "-o", "link"], network="none")
    c.wait(TIMEOUT)
    out = c.logs().decode()
    assert "lo:" in out and "eth0" not in out


def test_container_start_takes_a_pooled_namespace(wired, run, croot):
    from contain.net import ipam, pool

    assert pool.fill(1)
    ready = set(pool.ready_links())
    hits = pool.stats()["hits"]
    c = run(["sh", "-c", "ip -o addr show eth0; exec sleep 30"], network="bridge")
    assert pool.stats()["hits"] == hits + 1
    veth = ipam.attachments(croot, c.id)["bridge"]["HostVeth"]
    assert veth in ready
    ip = c.inspect()["NetworkSettings"]["IPAddress"]
    assert wait_until(lambda: f"inet {ip}/" in c.logs().decode()), c.logs()
    c.remove(force=True)
    assert wait_until(lambda: veth not in _links())
    assert not ipam.attachments(croot, c.id)


def test_none_starts_take_namespaces_made_ahead_each_once(run):
    """Network "none" from the second start on joins a namespace the pool made
    (lo up, nothing else), never one another container has or had."""
    from contain.net import pool

    seen = set()
    host_ns = os.stat("/proc/self/ns/net").st_ino
    hits = pool.bare_stats()["hits"]
    boxes = [run(["sh", "-c", "readlink /proc/self/ns/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags;"
                  " ls /sys/class/net; sleep 30"], network="none") for _ in range(6)]
    for c in boxes:
        deadline = time.monotonic() + 10
        while c.logs().count(b"\n") < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        lines = c.logs().decode().split()
        assert lines[0].startswith("net:["), lines
        ns = int(lines[0][5:-1])
        assert ns != host_ns and ns not in seen
        seen.add(ns)
        assert lines[2] == "0x9" and lines[3:] == ["lo"], lines  # IFF_UP|IFF_LOOPBACK, only lo
    assert pool.bare_stats()["hits"] > hits  # the pool served some of them
    for c in boxes:
        c.kill()
