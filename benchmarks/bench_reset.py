"""Reset and restart of a container whose writable layer holds 100 MB of changes.

Each round, the container (busybox, `sleep 600`) writes 100 MB into its
writable layer (not timed); then what is timed brings it back to a clean
state with its process running again:

  contain reset      _checkpoint.reset(c, "clean"): kill, swap the writable
                     layer for an empty one (a rename; the old one is deleted
                     in the background), start.  Goal: <= 20 ms median.
  contain recreate   c.remove(force=True) + Container.run(...) with the same
                     options (the writable layer is deleted on the way).
  podman recreate    podman rm -f + podman run -d (podman has no overlay
                     reset; checkpoint/restore needs CRIU and restores
                     memory, not a clean file system), when podman works.

    .venv/bin/python benchmarks/bench_reset.py [-n 20] [--mb 100] [--network none]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import contain
from contain import Container, Image
from contain import _checkpoint
from _cleanup import remove_networks_and_cgroup_parent
from contain._busybox import make_rootfs


def dirty(c: Container, mb: int) -> None:
    r = c.exec_run(["dd", "if=/dev/zero", "of=/dirty", "bs=1M", f"count={mb}"])
    assert r.exit_code == 0, r.output


def bench_reset(img: Image, root: str, n: int, mb: int, network: str) -> dict:
    c = Container.run(img, ["sleep", "600"], root=root, network=network)
    try:
        _checkpoint.checkpoint(c, "clean", timeout=0.5)
        times, parts = [], {"kill+wait": [], "swap": [], "start": []}
        for i in range(n + 1):
            dirty(c, mb)
            _checkpoint.wait_for_deletions()  # the previous round's layer: not this round's cost
            t0 = time.perf_counter()
            _checkpoint.reset(c, "clean")
            t1 = time.perf_counter()
            if i:  # the first round warms caches
                times.append((t1 - t0) * 1000)
            assert c.exec_run(["test", "!", "-e", "/dirty"]).exit_code == 0
        # Where the time goes, measured apart on the same container.
        for _ in range(min(n, 10)):
            dirty(c, mb)
            _checkpoint.wait_for_deletions()
            t0 = time.perf_counter()
            c.kill()
            c.wait()
            t1 = time.perf_counter()
            _checkpoint.reset(c, "clean", restart=False)
            t2 = time.perf_counter()
            c.start()
            t3 = time.perf_counter()
            parts["kill+wait"].append((t1 - t0) * 1000)
            parts["swap"].append((t2 - t1) * 1000)
            parts["start"].append((t3 - t2) * 1000)
        return {"times": times, "parts": {k: statistics.median(v) for k, v in parts.items()}}
    finally:
        c.remove(force=True)


def bench_recreate(img: Image, root: str, n: int, mb: int, network: str) -> list:
    times = []
    c = Container.run(img, ["sleep", "600"], root=root, network=network)
    try:
        for i in range(n + 1):
            dirty(c, mb)
            t0 = time.perf_counter()
            c.remove(force=True)
            c = Container.run(img, ["sleep", "600"], root=root, network=network)
            if i:
                times.append((time.perf_counter() - t0) * 1000)
    finally:
        c.remove(force=True)
    return times


def podman_works() -> bool:
    if not shutil.which("podman"):
        return False
    r = subprocess.run(["podman", "info"], capture_output=True, timeout=60)
    return r.returncode == 0


def bench_podman(rootfs: str, n: int, mb: int, network: str) -> list:
    tag = "localhost/contain-bench-reset:latest"
    with tempfile.TemporaryDirectory() as tmp:
        tarball = os.path.join(tmp, "rootfs.tar")
        with tarfile.open(tarball, "w") as tar:
            tar.add(rootfs, arcname=".")
        subprocess.run(["podman", "import", "--change", "CMD [\"sh\"]", tarball, tag],
                       check=True, capture_output=True)
    name = "contain-bench-reset"
    net = ["--network", "none"] if network == "none" else []
    run = ["podman", "run", "-d", "--name", name, *net, tag, "sleep", "600"]
    subprocess.run(["podman", "rm", "-f", name], capture_output=True)
    subprocess.run(run, check=True, capture_output=True)
    times = []
    try:
        for i in range(n + 1):
            subprocess.run(["podman", "exec", name, "dd", "if=/dev/zero", "of=/dirty", "bs=1M",
                            f"count={mb}"], check=True, capture_output=True)
            t0 = time.perf_counter()
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], check=True, capture_output=True)
            subprocess.run(run, check=True, capture_output=True)
            if i:
                times.append((time.perf_counter() - t0) * 1000)
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--network", default="none", choices=["none", "bridge", "host"])
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="bench-reset-")
    root = os.path.join(work, "root")
    try:
        rootfs = make_rootfs(os.path.join(work, "rootfs"))
        img = Image.from_directory(rootfs, tag="bench-reset:latest", config={"Cmd": ["sh"]}, root=root)
        rows = []
        r = bench_reset(img, root, args.n, args.mb, args.network)
        rows.append(("contain reset (checkpoint layer)", r["times"]))
        rows.append(("contain remove + run", bench_recreate(img, root, args.n, args.mb, args.network)))
        if not args.no_podman and podman_works():
            try:
                rows.append(("podman rm -f + run -d", bench_podman(rootfs, args.n, args.mb, args.network)))
            except subprocess.CalledProcessError as exc:
                print(f"podman failed: {exc} {exc.stderr!r}", file=sys.stderr)
        print(f"reset + restart with {args.mb} MB written, network={args.network}, "
              f"n={args.n}, contain {contain.__version__}")
        base = statistics.median(rows[0][1])
        print(f"{'what':40} {'median ms':>10} {'p90 ms':>8} {'ratio':>7}")
        for name, times in rows:
            med = statistics.median(times)
            p90 = sorted(times)[int(0.9 * (len(times) - 1))]
            print(f"{name:40} {med:10.1f} {p90:8.1f} {med / base:6.1f}x")
        print("contain reset, parts (median ms): " +
              ", ".join(f"{k} {v:.1f}" for k, v in r["parts"].items()))
        goal = "met" if base <= 20 else "NOT met"
        print(f"goal (<= 20 ms median): {goal}")
    finally:
        remove_networks_and_cgroup_parent(root)
        _checkpoint.wait_for_deletions(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
