"""A fully cached rebuild of a 10-step Dockerfile, beside `podman build` (and
`docker build` when an engine answers), one warm-up build then N timed rebuilds.

Every tool builds FROM the same busybox image (made from busybox-static and
imported into each); the first build fills the cache, the timed ones must come
wholly from it. Printed as medians with ratios to podman.

    .venv/bin/python benchmarks/bench_build.py [-n 5]
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

from contain import Image
from _cleanup import remove_networks_and_cgroup_parent
from contain._busybox import make_rootfs
from contain.builder import Builder

DOCKERFILE = """FROM bench-busybox:latest
ARG GREETING=hello
ENV APP_HOME=/app
WORKDIR /app
COPY files/ /app/files/
RUN echo "$GREETING" > /app/greeting && mkdir -p /app/data
LABEL org.example.bench=build
EXPOSE 8080
USER user
CMD ["cat", "/app/greeting"]
"""


def timed(fn, n: int) -> list:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def quiet_run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, **kw)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5)
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="bench-build-")
    try:
        rootfs = make_rootfs(os.path.join(work, "rootfs"))
        ctx = os.path.join(work, "ctx")
        os.makedirs(os.path.join(ctx, "files"))
        for i in range(20):
            with open(os.path.join(ctx, "files", f"f{i}.txt"), "w") as f:
                f.write(f"file {i}\n" * 100)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(DOCKERFILE)
        root = os.path.join(work, "contain-root")
        Image.from_directory(rootfs, tag="bench-busybox:latest", config={"Cmd": ["sh"]}, root=root)

        results = {}

        def contain_build():
            Builder.from_dockerfile(ctx, tag="bench:contain", root=root, log=lambda line: None)

        contain_build()  # fills the cache
        lines: list = []
        Builder.from_dockerfile(ctx, root=root, log=lines.append)
        assert sum(line == " ---> Using cache" for line in lines) >= 8, lines
        results["contain"] = timed(contain_build, opts.n)

        tarball = os.path.join(work, "rootfs.tar")
        with tarfile.open(tarball, "w") as tar:
            tar.add(rootfs, arcname=".")
        if shutil.which("podman"):
            try:
                quiet_run(["podman", "import", "--change", "CMD [\"sh\"]", tarball, "bench-busybox:latest"])
                cmd = ["podman", "build", "-q", "--pull=never", "--network=none", "-t", "bench:podman", ctx]
                quiet_run(cmd)
                results["podman build"] = timed(lambda: quiet_run(cmd), opts.n)
            except subprocess.CalledProcessError as exc:
                print(f"podman: skipped ({exc.stderr.decode(errors='replace').strip()[-200:]})")
        if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
            try:
                quiet_run(["docker", "import", "--change", "CMD [\"sh\"]", tarball, "bench-busybox:latest"])
                cmd = ["docker", "build", "-q", "-t", "bench:docker", ctx]
                quiet_run(cmd)
                results["docker build"] = timed(lambda: quiet_run(cmd), opts.n)
            except subprocess.CalledProcessError as exc:
                print(f"docker: skipped ({exc.stderr.decode(errors='replace').strip()[-200:]})")
        else:
            print("docker: no engine answers; skipped")

        base = statistics.median(results["podman build"]) if "podman build" in results else None
        print(f"fully cached rebuild of a 10-step Dockerfile, median of {opts.n} (ms):")
        for name, values in results.items():
            med = statistics.median(values)
            ratio = f"  {med / base:6.3f}x podman" if base else ""
            print(f"  {name:14s} {med:9.1f}{ratio}")
        return 0
    finally:
        subprocess.run(["podman", "rmi", "-f", "bench:podman", "bench-busybox:latest"],
                       capture_output=True)
        remove_networks_and_cgroup_parent(os.path.join(work, "contain-root"))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
