"""Start-to-exit of /bin/true as an ordinary (non-root) user, side by side.

contain: Container.run + wait + remove from a warm Python process running as
the user, with network "none" and with the rootless default network
(slirp4netns) and a published port.  /bin/true usually ends before its
slirp4netns is up, and start() then returns without the network (the
figure says in how many runs it was up), so a third contain line runs
`sleep 60` with the port, which start() returns from only once the port is
published, then kills it (wait + remove).  crun: `crun run` of a rootless OCI
bundle (`crun spec --rootless`: the user's uid mapped to 0, no cgroups) of
the same busybox rootfs (and, for scale, the same bundle with contain's
mapping of the subordinate ranges, written by newuidmap).  podman: rootless `podman run --rm --network none`
of the same image, saved by contain and loaded.  Medians, printed with
ratios to crun rootless; contain and crun take turns run by run, podman runs
on its own afterwards (as in bench_start.py).

Run it as root: it stands up a dedicated ordinary user the way
tests/test_rootless.py does (its own /etc/subuid and /etc/subgid range,
/dev/net/tun 0666, the interpreter's directories traversable, a tmpfs
/run/user/UID as logind would make), measures as that user through
`runuser`, then removes the user and everything it made and puts the modes
back.

    .venv/bin/python benchmarks/bench_rootless.py [-n 100]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from typing import Optional

import _turns

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
# shadow's tools leave the previous version of each file they write here.
BACKUPS = ("/etc/passwd-", "/etc/shadow-", "/etc/group-", "/etc/gshadow-", "/etc/subuid-", "/etc/subgid-")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_TAG = "bench/busybox"
PODMAN_ULIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]  # see DESIGN.md

CONTAIN_NONE = "contain (run, wait, remove), network none"
CONTAIN_SLIRP = "contain, slirp4netns + published port"
CONTAIN_SLIRP_UP = "contain, slirp4netns + port, sleep + kill"
CRUN = "crun run (rootless bundle)"
CRUN_SUBIDS = "crun run, contain's mapping (newuidmap)"
PODMAN = "podman run --rm --network none (rootless)"


# ------------------------------------------------------- root: the scene
# The same steps as tests/test_rootless.py's `user` fixture and helpers,
# replicated: importing the test module would pull in pytest and conftest.
def _ensure_package(binary: str, package: str) -> bool:
    if shutil.which(binary):
        return True
    subprocess.run(["apt-get", "install", "-y", "-q", package], capture_output=True)
    return shutil.which(binary) is not None


def _traversable(path: str) -> list[tuple[str, int]]:
    """chmod o+x every directory on the way to `path` that lacks it (the
    interpreter behind the venv lives under /root here); what to restore."""
    changed = []
    parts = []
    p = os.path.dirname(os.path.realpath(path))
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


def _drop_lines(path: str, name: str) -> None:
    """Remove the lines of `name` (first field) from a colon-separated file,
    keeping its mode and owner."""
    try:
        with open(path) as f:
            lines = f.readlines()
        st = os.stat(path)
    except FileNotFoundError:
        return
    kept = [line for line in lines if line.split(":")[0] != name]
    if kept == lines:
        return
    tmp = path + ".contain-tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    os.replace(tmp, path)


def _pids_of(uids: range) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                if os.stat(f"/proc/{name}").st_uid in uids:
                    pids.append(int(name))
            except FileNotFoundError:
                pass
    return pids


def _kill_all_of(uids: range) -> None:
    """SIGKILL, by pid, every process of the benchmark's user and of its
    subordinate ids (podman's pause process, a stray slirp4netns...)."""
    for _ in range(50):
        pids = _pids_of(uids)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _leftovers(name: str, uid: int, subids: range) -> list[str]:
    """What the user left behind on the host, for the closing check."""
    found = [f"process {pid}" for pid in _pids_of(range(uid, uid + 1)) + _pids_of(subids)]
    if os.path.lexists(f"/home/{name}"):
        found.append(f"/home/{name}")
    for top in ("/tmp", "/var/tmp", "/dev/shm", "/run"):
        for dirpath, dirnames, filenames in os.walk(top):
            if dirpath.count("/") - top.count("/") >= 2:  # two levels down is where tools put theirs
                dirnames[:] = []
            for entry in dirnames + filenames:
                p = os.path.join(dirpath, entry)
                try:
                    owner = os.lstat(p).st_uid
                except FileNotFoundError:
                    continue
                if owner == uid or owner in subids:
                    found.append(p)
                    if entry in dirnames:
                        dirnames.remove(entry)
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f if name in line or f"/run/user/{uid}" in line]
    for path in (SUBUID, SUBGID, "/etc/passwd", "/etc/group") + BACKUPS:
        try:
            with open(path) as f:
                if any(line.split(":")[0] == name for line in f):
                    found.append(f"a line of {name} in {path}")
        except FileNotFoundError:
            pass
    return found


def orchestrate(args) -> int:
    if os.geteuid() != 0:
        print("run this as root: it creates the ordinary user it measures as", file=sys.stderr)
        return 2
    for binary, package in (("newuidmap", "uidmap"), ("runuser", "util-linux")):
        if not _ensure_package(binary, package):
            print(f"{binary} is missing and `apt-get install {package}` failed", file=sys.stderr)
            return 2
    slirp = _ensure_package("slirp4netns", "slirp4netns") and os.path.exists("/dev/net/tun")
    name = f"contain-bench-{secrets.token_hex(3)}"
    restore: list[tuple[str, int]] = []
    tun_mode = None
    runtime = None
    mounted = False
    uid = -1
    subids = range(0)
    result: dict = {}
    try:
        for path in (sys.executable, os.path.join(REPO, "src", "contain", "__init__.py"), __file__):
            restore += _traversable(path)
        if slirp:
            tun_mode = stat.S_IMODE(os.stat("/dev/net/tun").st_mode)
            if tun_mode & 0o666 != 0o666:
                os.chmod("/dev/net/tun", 0o666)  # as a standard Debian has it
            else:
                tun_mode = None
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
        pw = pwd.getpwnam(name)
        uid, gid, home = pw.pw_uid, pw.pw_gid, pw.pw_dir
        # useradd may have assigned ranges (SUB_UID_MIN...); ours, known, instead.
        for path in (SUBUID, SUBGID):
            _drop_lines(path, name)
        from contain.linux.rootless import free_subid_start

        start = free_subid_start()
        for path in (SUBUID, SUBGID):
            with open(path, "a") as f:
                f.write(f"{name}:{start}:65536\n")
        subids = range(start, start + 65536)
        # A login session's runtime directory, as logind makes it (a tmpfs):
        # crun's and podman's state go there by default, contain's helper sockets too.
        runtime = f"/run/user/{uid}"
        os.makedirs(runtime, mode=0o700)
        os.chown(runtime, uid, gid)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o",
                                  f"nosuid,nodev,size=256m,mode=0700,uid={uid},gid={gid}",
                                  "tmpfs", runtime], capture_output=True).returncode == 0
        if not mounted:
            print(f"note: could not mount a tmpfs on {runtime}; it is a plain directory")
        env = {"HOME": home, "USER": name, "LOGNAME": name, "PATH": "/usr/local/bin:/usr/bin:/bin",
               "XDG_DATA_HOME": os.path.join(home, ".local", "share"), "XDG_RUNTIME_DIR": runtime,
               "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        out = os.path.join(home, "result.json")
        cmd = ["runuser", "-u", name, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
               sys.executable, os.path.abspath(__file__), "--as-user", "--out", out, "-n", str(args.n)]
        if not slirp:
            cmd.append("--no-slirp")
        r = subprocess.run(cmd, cwd=home, timeout=args.timeout)
        if r.returncode != 0:
            print(f"the measuring part (as {name}) failed: exit status {r.returncode}", file=sys.stderr)
            return 1
        with open(out) as f:
            result = json.load(f)
    finally:
        if uid >= 0:
            _kill_all_of(range(uid, uid + 1))
            if subids:
                _kill_all_of(subids)
        if mounted:
            subprocess.run(["umount", runtime], capture_output=True)
        if runtime and os.path.isdir(runtime):
            shutil.rmtree(runtime, ignore_errors=True)
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True)
        shutil.rmtree(f"/home/{name}", ignore_errors=True)  # files of subordinate ids userdel left
        for path in (SUBUID, SUBGID) + BACKUPS:
            _drop_lines(path, name)
        for d, mode in reversed(restore):
            # Put it back only if nobody changed it meanwhile (the rootless
            # tests do the same dance with /root).
            if stat.S_IMODE(os.stat(d).st_mode) == mode | 0o001:
                os.chmod(d, mode)
        if tun_mode is not None and stat.S_IMODE(os.stat("/dev/net/tun").st_mode) == 0o666:
            os.chmod("/dev/net/tun", tun_mode)
        lock = f"/dev/shm/libpod_rootless_lock_{uid}"  # podman's, outside its --root
        if uid >= 0 and os.path.exists(lock) and os.stat(lock).st_uid == uid:
            os.unlink(lock)
        if uid >= 0:
            left = _leftovers(name, uid, subids)
            print(f"cleanup: user {name} removed; " + ("nothing left behind" if not left else
                                                       "LEFT BEHIND: " + ", ".join(left[:20])))
    report(result)
    return 0


def report(result: dict) -> None:
    if not result:
        return
    medians = result["medians"]
    ref = medians.get(CRUN)
    print(f"\nstart-to-exit of /bin/true as an ordinary user (uid {result['uid']}, "
          f"{result['subids']} subordinate ids), medians of n runs "
          f"({time.strftime('%Y-%m-%d %H:%M')}, {os.uname().release}, {os.cpu_count()} CPUs)")
    for note in result["notes"]:
        print(f"  note: {note}")
    up = result["network_up"]
    for name, ms in medians.items():
        ratio = f"{ms / ref:5.2f}x crun" if ref else ""
        net = f"  network up in {up[name]}/{result['runs'][name]}" if name in up else ""
        print(f"  {name:45s} n={result['runs'][name]:<4d} {ms:8.2f} ms  {ratio}{net}")
    for name, kinds in result["failures"].items():
        print(f"  {name}: {sum(kinds.values())} of its runs FAILED (not in the median):")
        for text, count in sorted(kinds.items(), key=lambda kv: -kv[1]):
            print(f"    {count:4d} x {text}")
    none = medians.get(CONTAIN_NONE)
    print("goals of issue 11:")
    for name, how in ((CONTAIN_SLIRP, "/bin/true"), (CONTAIN_SLIRP_UP, "sleep + kill")):
        if name in medians:
            ms = medians[name]
            print(f"  slirp4netns + published port at most 25 ms: {ms:.2f} ms with {how} "
                  f"(network up in {up[name]} of {result['runs'][name]} runs), "
                  f"{'met' if ms <= 25 else 'not met'}")
    if none is not None and ref:
        print(f"  network none at most 0.5x crun rootless: {none / ref:.2f}x, "
              f"{'met' if none / ref <= 0.5 else 'not met'}")


# ----------------------------------------------- as the user: the figures
def interleaved(runners: dict, n: int, failures: dict) -> tuple[dict, dict]:
    """Median ms and number of good runs of each runner, taking turns run by
    run; a failed run is counted by its error (in `failures`) and left out."""
    times = _turns.take_turns(runners, n, failures)
    return _turns.medians(times), {name: len(ts) for name, ts in times.items() if ts}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch(port: int, timeout: float = 10) -> bytes:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                return r.read()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def _count_network_up(userspace) -> dict:
    """Count the starts whose slirp4netns came up and published the ports
    under the label in counts["now"]: when the container's process ends
    first, start() returns without them.  Observes the library's helper
    launch, changes nothing."""
    counts: dict = {"now": "?"}
    launch = userspace.launch_helper

    def counted(*args, **kwargs):
        wait = launch(*args, **kwargs)

        def counted_wait():
            helper = wait()
            if helper is not None:
                counts[counts["now"]] = counts.get(counts["now"], 0) + 1
            return helper

        return counted_wait

    userspace.launch_helper = counted
    return counts


def crun_bundle(rootfs: str, path: str, maps=None) -> str:
    """`crun spec --rootless` (the user's uid mapped to 0, no cgroup
    limits), running /bin/true on the rootfs, with contain's namespaces;
    with `maps` (contain's IdMaps), that mapping instead."""
    os.makedirs(path)
    subprocess.run(["crun", "spec", "--rootless", "-b", path], check=True, capture_output=True)
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    config["process"].update(args=["/bin/true"], terminal=False)
    config["root"] = {"path": rootfs, "readonly": False}  # contain's root is a writable overlay
    config["hostname"] = "bench"
    linux = config["linux"]
    if maps is not None:
        linux["uidMappings"] = [m.to_oci() for m in maps.uid_mappings]
        linux["gidMappings"] = [m.to_oci() for m in maps.gid_mappings]
    linux.pop("resources", None)
    linux.pop("cgroupsPath", None)
    types = {ns["type"] for ns in linux["namespaces"]}
    for ns in ("pid", "network", "ipc", "uts", "user", "mount", "cgroup"):  # contain's set
        if ns not in types:
            linux["namespaces"].append({"type": ns})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


def measure(args) -> int:
    # Everything imported before the runs: the interpreter's directories
    # are reachable only while the root side keeps them traversable.
    import contain
    from contain import _root
    from contain._busybox import make_rootfs
    from contain.net import userspace
    from contain.oci.archive import save

    n = args.n
    home = os.environ["HOME"]
    runtime = os.environ["XDG_RUNTIME_DIR"]
    work = os.path.join(home, "bench")
    os.makedirs(work)
    notes: list[str] = []
    failures: dict = {}
    rootfs = os.path.join(work, "rootfs")
    try:
        make_rootfs(rootfs)
    except PermissionError:
        pass  # home/user cannot be given to uid 1000 by an ordinary user (its last step)
    image = contain.Image.from_directory(rootfs, tag=IMAGE_TAG)
    store_root = _root.get_root(None)
    maps = store_root.id_maps
    notes.append(f"contain state in {store_root.path}, runtime files in {runtime}")

    def contain_none():
        c = contain.Container.run(image, ["/bin/true"], network="none")
        c.wait()
        c.remove()

    runners: dict = {}
    network_up: Optional[dict] = None  # runs whose network was up, by command
    contain_none()
    runners[CONTAIN_NONE] = (contain_none, 1)

    if not args.no_slirp:
        network_up = counts = _count_network_up(userspace)
        # Once, outside the figures: the published port really answers.
        port = _free_port()
        c = contain.Container.run(image, ["sh", "-c", "echo ok > /index.html; exec httpd -f -p 80 -h /"],
                                  ports={80: port})
        try:
            body = _fetch(port)
            mode = c.attrs["HostConfig"]["NetworkMode"]
        finally:
            c.remove(force=True)
        if body.strip() != b"ok" or not mode.startswith("slirp4netns"):
            raise RuntimeError(f"published port check: {body!r} on network {mode!r}")
        notes.append(f"checked once: busybox httpd on network {mode} answers on 127.0.0.1:<port>")

        def contain_slirp():
            counts["now"] = "/bin/true"
            c = contain.Container.run(image, ["/bin/true"], ports={80: _free_port()})
            c.wait()
            c.remove()

        def contain_slirp_up():
            # start() returns once the network is up and the port published;
            # /bin/true may end before that, sleep cannot.
            counts["now"] = "sleep"
            c = contain.Container.run(image, ["sleep", "60"], ports={80: _free_port()})
            c.kill()
            c.wait()
            c.remove()

        for attempt in range(3):  # a /bin/true that ends as its helper starts can fail (see failures)
            try:
                contain_slirp()
                break
            except Exception:  # noqa: BLE001
                if attempt == 2:
                    raise
        contain_slirp_up()
        runners[CONTAIN_SLIRP] = (contain_slirp, 1)
        runners[CONTAIN_SLIRP_UP] = (contain_slirp_up, 1)
    else:
        notes.append("slirp4netns or /dev/net/tun missing: the slirp4netns figure is skipped")

    crun = shutil.which("crun")
    if crun:
        state = os.path.join(runtime, "crun")
        counter = iter(range(10**9))
        bundles = {CRUN: crun_bundle(rootfs, os.path.join(work, "bundle"))}
        if len(maps.uid_mappings) > 1:
            # For scale, not the reference: contain's own mapping (the
            # subordinate ranges too), which crun has newuidmap/newgidmap write.
            bundles[CRUN_SUBIDS] = crun_bundle(rootfs, os.path.join(work, "bundle-subids"), maps)
        for label, bundle in bundles.items():
            def crun_run(bundle=bundle):
                r = subprocess.run([crun, "--cgroup-manager=disabled", "--root", state, "run",
                                    "--bundle", bundle, f"bench{next(counter)}"],
                                   stdin=subprocess.DEVNULL, capture_output=True)
                if r.returncode != 0:
                    raise RuntimeError(f"crun failed: {r.stderr.decode()[-300:]}")

            try:
                crun_run()
                runners[label] = (crun_run, 1)
            except RuntimeError as exc:
                notes.append(f"{label} skipped: {exc}")
    else:
        notes.append("crun is not installed: no reference")

    podman = shutil.which("podman")
    podman_runner = None
    if podman:
        base = [podman, "--root", os.path.join(work, "podman"), "--runroot", os.path.join(runtime, "podman"),
                "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        archive = os.path.join(work, "bb.tar")
        save(store_root.store, [IMAGE_TAG], archive)
        r = subprocess.run(base + ["load", "-i", archive], capture_output=True, text=True)
        if r.returncode == 0:
            def podman_run():
                subprocess.run(base + ["run", "--rm", "--network", "none", *PODMAN_ULIMITS,
                                       IMAGE_TAG, "/bin/true"], check=True, capture_output=True)
            try:
                podman_run()
                podman_runner = podman_run
            except subprocess.CalledProcessError as exc:
                notes.append(f"podman rootless skipped, `podman run` failed: {exc.stderr.decode()[-300:]}")
        else:
            notes.append(f"podman rootless skipped, `podman load` failed: {r.stderr[-300:]}")
    else:
        notes.append("podman is not installed: skipped")

    if network_up is not None:
        network_up.update({"/bin/true": 0, "sleep": 0})  # count the measured runs only
    medians, runs = interleaved(runners, n, failures)
    up = {} if network_up is None else {
        name: network_up[label] for name, label in ((CONTAIN_SLIRP, "/bin/true"), (CONTAIN_SLIRP_UP, "sleep"))
        if name in runs}
    if podman_runner is not None:
        # On its own, after the others: vfs copies the rootfs per container,
        # and the inodes that frees slow the others' files on this ext4.
        m, k = interleaved({PODMAN: (podman_runner, 1)}, max(10, n // 10), failures)
        medians.update(m)
        runs.update(k)
        subprocess.run(base + ["rmi", "-a", "-f"], capture_output=True)
    left = contain.Container.list(all=True)
    if left:
        notes.append(f"contain containers left in the store: {[c.id[:12] for c in left]}")
    with open(args.out, "w") as f:
        json.dump({"n": n, "uid": os.getuid(), "subids": sum(x.size for x in maps.uid_mappings[1:]),
                   "medians": medians, "runs": runs, "failures": failures, "notes": notes,
                   "network_up": up}, f)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100, help="runs of contain and crun (podman: n//10, at least 10)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds the measuring part may take")
    ap.add_argument("--as-user", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--no-slirp", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    return measure(args) if args.as_user else orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
