"""Cold pull + unpack of a Debian image from a local registry, side by side.

The image is a debootstrap'd bookworm (minbase), cached as a rootfs tarball under
/var/cache/contain-bench/ (about 35 s the first time, from the mirror apt uses), imported
with archive.import_rootfs and pushed to a docker-registry this script starts on
127.0.0.1. Then, each into fresh directories, N times and interleaved:

* contain: ``_imageops.pull`` into a new state root (download, verify, unpack);
* skopeo + umoci: ``skopeo copy`` to an OCI layout, then ``umoci unpack`` of it;
* podman: ``podman pull`` into a new storage root (overlay driver).

Medians are printed with contain's time as a ratio of each peer's.

    .venv/bin/python benchmarks/bench_pull.py [-n 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

from contain import _imageops
from contain._root import get_root
from contain.oci.archive import import_rootfs

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import debian  # noqa: E402
from registry_server import RegistryServer  # noqa: E402

CACHE_DIR = "/var/cache/contain-bench"
TARBALL = os.path.join(CACHE_DIR, "debian-bookworm-minbase.tar.gz")
REPOSITORY = "bench/debian"


def rootfs_tarball() -> str:
    """The cached Debian rootfs tarball, made with debootstrap when missing."""
    return debian.rootfs_tarball("debian-bookworm-minbase", cache_dir=CACHE_DIR)


def settle() -> None:
    """Every run starts cold and from a quiet disk: the previous run's
    writeback done, the page cache dropped, and the deletions' discards
    given a moment (they slow whatever writes next on a VM's disk)."""
    subprocess.run(["sync"], check=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass  # not root: a warm cache for everyone alike
    time.sleep(3)


def timed(fn: Callable[[str], None], scratch: str) -> float:
    """Seconds `fn` takes in a fresh directory, which is removed afterwards."""
    work = tempfile.mkdtemp(dir=scratch)
    try:
        settle()
        start = time.perf_counter()
        fn(work)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3, help="runs per tool (default 3)")
    args = parser.parse_args()

    tarball = rootfs_tarball()
    scratch = tempfile.mkdtemp(prefix="contain-bench-pull-", dir="/var/tmp")
    try:
        with RegistryServer() as registry:
            ref = f"{registry.host}/{REPOSITORY}:bookworm"
            source_root = os.path.join(scratch, "source-root")
            import_rootfs(get_root(source_root).store, tarball, tag="bench-debian:latest")
            _imageops.push(source_root, "bench-debian:latest", ref, progress=lambda e: None)
            blob_mb = os.path.getsize(tarball) / 1e6

            def contain_pull(work: str) -> None:
                _imageops.pull(os.path.join(work, "root"), ref, progress=lambda e: None)

            def skopeo_umoci(work: str) -> None:
                layout = os.path.join(work, "oci")
                subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                f"docker://{ref}", f"oci:{layout}:bookworm"], check=True)
                subprocess.run(["umoci", "unpack", "--image", f"{layout}:bookworm",
                                os.path.join(work, "bundle")], check=True,
                               stdout=subprocess.DEVNULL)

            def podman_pull(work: str) -> None:
                # podman refuses a runroot path longer than 50 characters.
                runroot = tempfile.mkdtemp(prefix="cb-", dir="/run")
                try:
                    subprocess.run(["podman", "--root", os.path.join(work, "root"),
                                    "--runroot", runroot, "--storage-driver", "overlay",
                                    "pull", "--quiet", "--tls-verify=false", ref],
                                   check=True, stdout=subprocess.DEVNULL)
                finally:
                    shutil.rmtree(runroot, ignore_errors=True)

            tools: dict[str, Callable[[str], None]] = {"contain": contain_pull}
            if shutil.which("skopeo") and shutil.which("umoci"):
                tools["skopeo copy + umoci unpack"] = skopeo_umoci
            if shutil.which("podman"):
                tools["podman pull"] = podman_pull
            times: dict[str, list[float]] = {name: [] for name in tools}
            for _ in range(args.n):  # interleaved, so drift hits every tool alike
                for name, fn in tools.items():
                    times[name].append(timed(fn, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    ours = medians["contain"]
    print(f"cold pull + unpack of debian bookworm minbase ({blob_mb:.0f} MB gzip layer) "
          f"from a local registry, median of {args.n}")
    width = 6 * args.n
    print(f"{'tool':<28} {'median s':>9}  {'runs s':<{width}} {'contain / tool':>14}")
    for name, median in medians.items():
        runs = " ".join(f"{t:5.2f}" for t in times[name])
        print(f"{name:<28} {median:>9.2f}  {runs:<{width}} {ours / median:>14.2f}")


if __name__ == "__main__":
    main()
