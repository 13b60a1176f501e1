"""Host memory per running detached container: the monitor's PSS and RSS,
beside podman's conmon when podman is installed.

    .venv/bin/python benchmarks/bench_memory.py [-n 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import contain
from _cleanup import remove_networks_and_cgroup_parent
from contain._busybox import make_rootfs


def pss_rss_kib(pid: int) -> tuple[int, int]:
    vals = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Pss:", "Rss:"):
                vals[parts[0]] = int(parts[1])
    return vals["Pss:"], vals["Rss:"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    n = ap.parse_args().n
    work = tempfile.mkdtemp(prefix="contain-bench-mem-")
    rows = []
    try:
        root = os.path.join(work, "state")
        image = contain.Image.from_directory(make_rootfs(os.path.join(work, "rootfs")),
                                             tag="bench/busybox", root=root)
        cs = [contain.Container.run(image, ["sleep", "600"], root=root) for _ in range(n)]
        try:
            samples = [pss_rss_kib(c.inspect()["_contain"]["monitor_pid"]) for c in cs]
            rows.append(("contain-monitor", statistics.median(s[0] for s in samples),
                         statistics.median(s[1] for s in samples)))
        finally:
            for c in cs:
                c.remove(force=True)
        podman = shutil.which("podman")
        if podman:
            base = [podman, "--root", os.path.join(work, "proot"), "--runroot", os.path.join(work, "pr"),
                    "--storage-driver", "vfs"]
            from contain.oci.archive import save

            archive = os.path.join(work, "bb.tar")
            save(contain._root.get_root(root).store, ["bench/busybox"], archive)
            subprocess.run(base + ["load", "-i", archive], check=True, capture_output=True)
            ids = [subprocess.run(base + ["run", "-d", "--network", "none", "bench/busybox", "sleep", "600"],
                                  check=True, capture_output=True, text=True).stdout.strip()
                   for _ in range(min(n, 5))]
            try:
                pids = subprocess.run(["pgrep", "-x", "conmon"], capture_output=True, text=True).stdout.split()
                samples = [pss_rss_kib(int(p)) for p in pids]
                if samples:
                    rows.append(("podman conmon", statistics.median(s[0] for s in samples),
                                 statistics.median(s[1] for s in samples)))
            finally:
                subprocess.run(base + ["rm", "-f", "-t", "0", *ids], capture_output=True)
                subprocess.run(base + ["rmi", "-a", "-f"], capture_output=True)
    finally:
        subprocess.run(["umount", "-R", os.path.join(work, "proot")], capture_output=True)
        remove_networks_and_cgroup_parent(os.path.join(work, "state"))
        shutil.rmtree(work, ignore_errors=True)
    print("\nhost memory per running container (median over the running ones)")
    ref = rows[0][1]
    for name, pss, rss in rows:
        print(f"  {name:20s} PSS {pss / 1024:6.2f} MiB  RSS {rss / 1024:6.2f} MiB  ({pss / ref:4.1f}x contain)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
