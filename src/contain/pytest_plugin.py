"""contain's pytest plugin (a pytest11 entry point: on once contain is installed).

Fixtures
    contain_root       (session) the state root the session's containers live in
    contain_image      (session) factory: contain_image("busybox:latest"),
                       contain_image(path="rootfs/"), contain_image(context="dir/"),
                       contain_image() (busybox from the host's busybox-static);
                       made or pulled once per session, shared by xdist workers
    contain_run        factory: Container.run(...) with the session's root;
                       every container it made is removed at teardown
    contain_container  the same with Container.create (not started)
    contain_port       factory: a free host port no other xdist worker gets

Options
    --contain-keep         keep the containers of failed tests; their ids are printed
    --contain-root=PATH    use this root (e.g. one that already holds pulled images)
    --contain-port-range   host ports handed out (default 20000-29999)

The root.  By default each session gets a private root under pytest's
basetemp (<basetemp>/contain-root); the workers of one xdist run share it
(it sits in the run's basetemp, above the workers' own), so an image is pulled
or built once per run.  The store is multi-process safe (flock'ed metadata,
per-layer locks, atomic renames), and the plugin takes a lock per image while
making it, so workers never make one twice or see one half made.

Cleanup.  Containers made by the fixtures are removed at the test's
teardown, whether the test passed, failed or was interrupted (Ctrl-C runs
the teardowns; an atexit hook catches what is left).  Containers a test made
itself and did not remove are reported as left behind (per test when their
creator is known, see below) and removed at the end of the session.  A
container's creator is the pid in state["_contain"]["creator_pid"] when the
record has one, so that xdist workers sharing a root never blame each other.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import random
import socket
import uuid
from typing import Any, Callable, Optional

import pytest

LABEL_RUN = "contain.pytest.run"
LABEL_WORKER = "contain.pytest.worker"
LABEL_TEST = "contain.pytest.test"
DEFAULT_PORTS = "20000-29999"


# ------------------------------------------------------------------ options
def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("contain", "contain containers")
    group.addoption("--contain-keep", action="store_true", default=False,
                    help="keep the containers of failed tests for debugging (ids are printed)")
    group.addoption("--contain-root", default=None, metavar="PATH",
                    help="state root for the session's containers and images "
                         "(default: a private one under pytest's basetemp)")
    group.addoption("--contain-port-range", default=DEFAULT_PORTS, metavar="LO-HI",
                    help=f"host ports contain_port hands out (default {DEFAULT_PORTS})")


def _worker_id(config: Any) -> str:
    return getattr(config, "workerinput", {}).get("workerid", "master")


def _is_xdist_controller(config: Any) -> bool:
    return (not hasattr(config, "workerinput")
            and config.pluginmanager.hasplugin("xdist")
            and getattr(config.option, "dist", "no") != "no"
            and bool(getattr(config.option, "numprocesses", None) or getattr(config.option, "tx", None)))


class _State:
    """What the plugin knows in one pytest process."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.worker = _worker_id(config)
        if hasattr(config, "workerinput"):
            self.run_id = config.workerinput["testrunuid"]
        else:
            self.run_id = getattr(config.option, "testrunuid", None) or uuid.uuid4().hex
        self.root: Optional[str] = None
        self.managed: dict = {}  # container id -> Container, not yet removed
        self.images: dict = {}
        self.kept: list = []  # (nodeid, id, name), this process
        self.left: list = []  # (nodeid, id, name), this process
        self.ports: Optional["PortAllocator"] = None
        self.reporter: Optional["_Reporter"] = None


_state_key = pytest.StashKey["_State"]() if hasattr(pytest, "StashKey") else None


def _state(config: Any) -> _State:
    return config.stash[_state_key]


def pytest_configure(config: Any) -> None:
    if _is_xdist_controller(config) and getattr(config.option, "testrunuid", None) is None:
        # One id for the whole run, handed to the workers by xdist.
        config.option.testrunuid = uuid.uuid4().hex
    config.stash[_state_key] = st = _State(config)
    st.reporter = _Reporter(config)
    config.pluginmanager.register(st.reporter, "contain-reporter")
    config.addinivalue_line("markers", "contain: the test uses contain containers")


# ---------------------------------------------------------------- the root
def _default_root(config: Any, tmp_path_factory: Any) -> str:
    opt = config.getoption("contain_root")
    if opt:
        return os.path.abspath(opt)
    base = tmp_path_factory.getbasetemp()
    if hasattr(config, "workerinput"):
        base = base.parent  # the run's basetemp, above the workers' own
    return str(base / "contain-root")


@pytest.fixture(scope="session")
def contain_root(request: Any, tmp_path_factory: Any) -> str:
    """The session's state root (a path; pass it as root= to contain's calls)."""
    st = _state(request.config)
    path = _default_root(request.config, tmp_path_factory)
    os.makedirs(path, exist_ok=True)
    from contain._root import get_root

    get_root(path)  # makes the layout
    st.root = path
    lo, hi = (int(x) for x in request.config.getoption("contain_port_range").split("-"))
    st.ports = PortAllocator(path, lo, hi)
    return path


# ---------------------------------------------------------------- images
@contextlib.contextmanager
def _file_lock(path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _pytest_dir(root: str) -> str:
    d = os.path.join(root, "pytest")
    os.makedirs(d, exist_ok=True)
    return d


def _make_image(root: str, run_id: str, ref: Optional[str], path: Optional[str],
                context: Optional[str], dockerfile: Optional[str], tag: Optional[str],
                config: Optional[dict], options: dict) -> Any:
    from contain import Image
    from contain.errors import NotFound

    key = json.dumps([ref, path and os.path.abspath(path), context and os.path.abspath(context),
                      dockerfile, tag, config, sorted(options.items())], sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    marker = os.path.join(_pytest_dir(root), f"image-{digest}.json")
    with _file_lock(os.path.join(_pytest_dir(root), f"image-{digest}.lock")):
        # Made by another worker of this run (or, for a pulled ref, any run)?
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, NotFound):
            with open(marker) as f:
                rec = json.load(f)
            if rec["run"] == run_id or ref is not None:
                return Image.get(rec["id"], root=root)
        if ref is not None and path is None and context is None:
            try:
                img = Image.get(ref, root=root)
            except NotFound:
                pull = getattr(Image, "pull", None)
                if pull is None:
                    raise pytest.UsageError(f"image {ref!r} is not in {root} and this contain cannot pull")
                img = pull(ref, root=root, **options)
        elif path is not None:
            img = Image.from_directory(path, tag=tag or f"contain-pytest/dir-{digest}:latest",
                                       config=config, root=root)
        elif context is not None:
            img = _build(root, context, dockerfile, tag or f"contain-pytest/build-{digest}:latest", options)
        else:
            import tempfile

            from contain._busybox import make_rootfs

            with tempfile.TemporaryDirectory(dir=_pytest_dir(root)) as tmp:
                rootfs = make_rootfs(os.path.join(tmp, "rootfs"))
                img = Image.from_directory(rootfs, tag=tag or "contain-pytest/busybox:latest",
                                           config=config or {"Cmd": ["sh"]}, root=root)
        tmp_marker = f"{marker}.{os.getpid()}.tmp"
        with open(tmp_marker, "w") as f:
            json.dump({"run": run_id, "id": img.id}, f)
        os.replace(tmp_marker, marker)
        return img


def _build(root: str, context: str, dockerfile: Optional[str], tag: str, options: dict) -> Any:
    import contain

    build = getattr(contain.Image, "build", None)
    if build is not None:
        kw = dict(options, tag=tag, root=root)
        if dockerfile:
            kw["dockerfile"] = dockerfile
        result = build(context, **kw)
        return result[0] if isinstance(result, tuple) else result
    builder = getattr(contain, "Builder", None)
    if builder is not None:
        b = builder(root=root) if callable(builder) else builder
        kw = dict(options, tag=tag)
        if dockerfile:
            kw["dockerfile"] = dockerfile
        result = b.build(context, **kw)
        return result[0] if isinstance(result, tuple) else result
    raise pytest.UsageError("this contain has no image builder")


@pytest.fixture(scope="session")
def contain_image(request: Any, contain_root: str) -> Callable[..., Any]:
    """Factory: an Image made or pulled once per session (per xdist run).

    contain_image()                    busybox, from the host's busybox-static
    contain_image("alpine:3.20")       from the root, else pulled
    contain_image(path="rootfs/", config={"Cmd": [...]})
    contain_image(context="app/", dockerfile="Dockerfile")   built
    """
    st = _state(request.config)

    def make(ref: Optional[str] = None, *, path: Optional[str] = None,
             context: Optional[str] = None, dockerfile: Optional[str] = None,
             tag: Optional[str] = None, config: Optional[dict] = None, **options: Any) -> Any:
        key = (ref, path, context, dockerfile, tag, json.dumps(config, sort_keys=True),
               json.dumps(options, sort_keys=True, default=str))
        img = st.images.get(key)
        if img is None:
            img = st.images[key] = _make_image(contain_root, st.run_id, ref, path, context,
                                               dockerfile, tag, config, options)
        return img

    return make


# ---------------------------------------------------------------- ports
class PortAllocator:
    """Host ports handed out once across the processes sharing a root (the
    xdist workers): a registry in <root>/pytest/ports.json under a lock file;
    a port is taken only if nothing listens on it and no live process holds it."""

    def __init__(self, root: str, lo: int = 20000, hi: int = 29999) -> None:
        if not (0 < lo <= hi < 65536):
            raise ValueError(f"invalid port range {lo}-{hi}")
        self.dir = _pytest_dir(root)
        self.lo, self.hi = lo, hi
        self.mine: set = set()

    @contextlib.contextmanager
    def _registry(self):
        path = os.path.join(self.dir, "ports.json")
        with _file_lock(os.path.join(self.dir, "ports.lock")):
            try:
                with open(path) as f:
                    reg = json.load(f)
            except (FileNotFoundError, json.JSONDecodeError):
                reg = {}
            yield reg
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(reg, f)
            os.replace(tmp, path)

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    @staticmethod
    def _free(port: int) -> bool:
        for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                try:
                    with socket.socket(family, kind) as s:
                        if family == socket.AF_INET6:
                            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                        s.bind((addr, port))
                except OSError as exc:
                    if family == socket.AF_INET6 and exc.errno in (97, 99):  # no IPv6
                        continue
                    return False
        return True

    def allocate(self, owner: str = "") -> int:
        with self._registry() as reg:
            for port, holder in list(reg.items()):
                if not self._alive(holder.get("pid", 0)):
                    del reg[port]
            candidates = list(range(self.lo, self.hi + 1))
            random.shuffle(candidates)
            for port in candidates:
                if str(port) in reg or not self._free(port):
                    continue
                reg[str(port)] = {"pid": os.getpid(), "owner": owner}
                self.mine.add(port)
                return port
        raise RuntimeError(f"no free host port left in {self.lo}-{self.hi}")

    def release(self, port: int) -> None:
        with self._registry() as reg:
            if reg.get(str(port), {}).get("pid") == os.getpid():
                del reg[str(port)]
        self.mine.discard(port)

    def release_all(self) -> None:
        with self._registry() as reg:
            for port in self.mine:
                if reg.get(str(port), {}).get("pid") == os.getpid():
                    del reg[str(port)]
        self.mine.clear()


@pytest.fixture
def contain_port(request: Any, contain_root: str) -> Callable[[], int]:
    """Factory: a host port no other test of the run (any xdist worker) holds
    until this test ends."""
    st = _state(request.config)
    taken: list = []

    def allocate() -> int:
        assert st.ports is not None
        port = st.ports.allocate(request.node.nodeid)
        taken.append(port)
        return port

    yield allocate
    for p in taken:
        with contextlib.suppress(Exception):
            st.ports.release(p)  # type: ignore[union-attr]


def _fill_ports(ports: Any, allocate: Callable[[], int]) -> Any:
    """docker-py's ports= with None (any host port) replaced by a port of
    the run's allocator, so that xdist workers never collide."""
    if not isinstance(ports, dict):
        return ports
    out = {}
    for key, value in ports.items():
        if value is None:
            out[key] = allocate()
        elif isinstance(value, tuple) and len(value) == 2 and value[1] is None:
            out[key] = (value[0], allocate())
        elif isinstance(value, list):
            out[key] = [allocate() if v is None else
                        ((v[0], allocate()) if isinstance(v, tuple) and len(v) == 2 and v[1] is None else v)
                        for v in value]
        else:
            out[key] = value
    return out


# -------------------------------------------------------------- containers
_atexit_registered = False
_live: dict = {}  # every container the fixtures made in this process and did not remove


def _remove_live_at_exit() -> None:
    for c in list(_live.values()):
        with contextlib.suppress(Exception):
            c.remove(force=True)
    _live.clear()


def _container_factory(request: Any, contain_root: str, contain_image: Any, start: bool):
    global _atexit_registered
    from contain import Container, Image

    st = _state(request.config)
    node = request.node
    made: list = []
    if not _atexit_registered:
        atexit.register(_remove_live_at_exit)
        _atexit_registered = True

    def make(image: Any = None, command: Any = None, **options: Any) -> Any:
        if image is None:
            image = contain_image()
        elif isinstance(image, str):
            image = contain_image(image)
        elif not isinstance(image, Image):
            raise TypeError(f"image must be an Image, a reference or None, not {type(image).__name__}")
        options.setdefault("root", contain_root)
        labels = dict(options.pop("labels", None) or {})
        labels.update({LABEL_RUN: st.run_id, LABEL_WORKER: st.worker, LABEL_TEST: node.nodeid})
        options["labels"] = labels
        if options.get("ports"):
            options["ports"] = _fill_ports(options["ports"], lambda: _allocate_for(st, made, node))
        c = (Container.run if start else Container.create)(image, command, **options)
        made.append(c)
        st.managed[c.id] = c
        _live[c.id] = c
        return c

    yield make
    failed = _test_failed(node)
    keep = failed and request.config.getoption("contain_keep")
    errors = []
    for c in made:
        if isinstance(c, int):  # a port
            with contextlib.suppress(Exception):
                st.ports.release(c)  # type: ignore[union-attr]
            continue
        st.managed.pop(c.id, None)
        _live.pop(c.id, None)
        if keep:
            with contextlib.suppress(Exception):
                st.kept.append((node.nodeid, c.id, c.name))
                continue
        try:
            c.remove(force=True)
        except Exception as exc:  # keep going: remove the others
            errors.append(f"{c.short_id}: {exc}")
    if errors:
        raise RuntimeError("contain: could not remove containers: " + "; ".join(errors))


def _allocate_for(st: _State, made: list, node: Any) -> int:
    assert st.ports is not None
    port = st.ports.allocate(node.nodeid)
    made.append(port)  # released at teardown with the containers
    return port


def _test_failed(node: Any) -> bool:
    for when in ("setup", "call"):
        rep = getattr(node, f"_contain_rep_{when}", None)
        if rep is not None and rep.failed:
            return True
    return False


@pytest.fixture
def contain_run(request: Any, contain_root: str, contain_image: Any):
    """Factory: contain_run(image=None, command=None, **Container.run options)
    -> a started Container (image None: busybox; a str: contain_image(str)).
    Removed at teardown (kept if the test failed and --contain-keep)."""
    yield from _container_factory(request, contain_root, contain_image, start=True)


@pytest.fixture
def contain_container(request: Any, contain_root: str, contain_image: Any):
    """Factory: like contain_run, but Container.create (not started)."""
    yield from _container_factory(request, contain_root, contain_image, start=False)


# ----------------------------------------------------------- the reports
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"_contain_rep_{rep.when}", rep)


def _ids(root: str) -> set:
    try:
        return {n for n in os.listdir(os.path.join(root, "containers")) if not n.startswith(".")}
    except FileNotFoundError:
        return set()


def _load(root: str, cid: str) -> Optional[dict]:
    from contain._jsonfile import read_json

    try:
        return read_json(os.path.join(root, "containers", cid, "state.json"))
    except OSError:
        return None


def _ours(st: _State, state: dict) -> bool:
    """Whether this process (this worker) made the container."""
    labels = (state.get("Config") or {}).get("Labels") or {}
    if LABEL_WORKER in labels:
        return labels[LABEL_WORKER] == st.worker and labels.get(LABEL_RUN) == st.run_id
    pid = (state.get("_contain") or {}).get("creator_pid")
    if pid is not None:
        return pid == os.getpid()
    return not hasattr(st.config, "workerinput")  # alone: everything new is ours


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: Any) -> None:
    st = _state(item.config)
    if st.root is not None:
        item._contain_before = _ids(st.root)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: Any, nextitem: Any):
    yield  # the fixtures' teardowns have run
    st = _state(item.config)
    if st.root is None:
        return
    before = getattr(item, "_contain_before", set())
    kept_ids = {cid for _, cid, _ in st.kept}
    kept_here = [(n, cid, name) for n, cid, name in st.kept if n == item.nodeid]
    left_here = []
    for cid in sorted(_ids(st.root) - before - kept_ids - set(st.managed)):
        state = _load(st.root, cid)
        if state is None or not _ours(st, state):
            continue
        left_here.append((item.nodeid, cid, state.get("Name", "").lstrip("/")))
    st.left += left_here
    if kept_here:
        item.user_properties.append(("contain_kept", [list(k) for k in kept_here]))
    if left_here:
        item.user_properties.append(("contain_left", [list(x) for x in left_here]))


class _Reporter:
    """Collects what the teardown reports say (from every xdist worker, in
    the controller) and prints it at the end."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.kept: list = []
        self.left: list = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when != "teardown":
            return
        for key, value in getattr(report, "user_properties", ()):
            if key == "contain_kept":
                self.kept.extend(tuple(v) for v in value)
            elif key == "contain_left":
                self.left.extend(tuple(v) for v in value)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        kept, left = _dedupe(self.kept), _dedupe(self.left)
        if not kept and not left:
            return
        st = _state(self.config)
        tr = terminalreporter
        tr.section("contain")
        root = st.root or _controller_root(self.config)
        if kept:
            tr.write_line(f"kept the containers of failed tests (--contain-keep; root {root}):")
            for nodeid, cid, name in kept:
                tr.write_line(f"  {cid[:12]}  {name}  ({nodeid})")
            tr.write_line(f"  remove them with: CONTAIN_ROOT={root} python -c \"import contain; "
                          "[c.remove(force=True) for c in contain.Container.list(all=True)]\"")
        if left:
            tr.write_line("containers left behind by tests (removed at the end of the session):",
                          yellow=True)
            for nodeid, cid, name in left:
                tr.write_line(f"  {cid[:12]}  {name}  ({nodeid})")


def _dedupe(items: list) -> list:
    seen, out = set(), []
    for x in items:
        if x[1] not in seen:
            seen.add(x[1])
            out.append(x)
    return out


def _controller_root(config: Any) -> Optional[str]:
    opt = config.getoption("contain_root")
    if opt:
        return os.path.abspath(opt)
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return None
    path = os.path.join(str(factory.getbasetemp()), "contain-root")
    return path if os.path.isdir(path) else None


def pytest_sessionfinish(session: Any, exitstatus: Any) -> None:
    config = session.config
    st = _state(config)
    _remove_live_at_exit()
    if st.ports is not None:
        with contextlib.suppress(Exception):
            st.ports.release_all()
    kept = {cid for _, cid, _ in st.kept} | {cid for _, cid, _ in (st.reporter.kept if st.reporter else ())}
    if st.root is not None:
        # A worker (or a lone session): its own leftovers.
        _sweep(st, st.root, kept, only_ours=True)
    elif _is_xdist_controller(config):
        # After every worker ended: whatever no worker could attribute.
        root = _controller_root(config)
        if root is not None:
            _sweep(st, root, kept, only_ours=False)


def _sweep(st: _State, root: str, kept: set, only_ours: bool) -> None:
    from contain import Container
    from contain.errors import ContainError

    private = not st.config.getoption("contain_root")
    for cid in _ids(root) - kept:
        state = _load(root, cid)
        if state is None:
            continue
        labels = (state.get("Config") or {}).get("Labels") or {}
        if only_ours and not _ours(st, state):
            continue
        if not private and labels.get(LABEL_RUN) != st.run_id and not _ours(st, state):
            continue  # a shared root: only this run's containers
        with contextlib.suppress(ContainError, OSError):
            Container(cid, root=_get_root(root)).remove(force=True)
    last = not hasattr(st.config, "workerinput")  # a lone session or the xdist controller
    if private and last and not _ids(root):
        # The private root goes away with pytest's basetemp: so must the
        # host objects made for it (its bridges, addresses and nft rules).
        _remove_networks(root)
        with contextlib.suppress(Exception):
            _get_root(root).cgroups.remove_parent()


def _remove_networks(root: str) -> None:
    try:
        from contain.network import Network
    except ImportError:
        return
    with contextlib.suppress(Exception):
        for n in Network.list(root=root):
            if n.name in ("host", "none"):
                continue
            with contextlib.suppress(Exception):
                n.remove(force=True)


def _get_root(path: str) -> Any:
    from contain._root import get_root

    return get_root(path)
