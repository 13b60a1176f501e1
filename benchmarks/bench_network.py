"""Networking: run-to-exit with the default bridge network beside podman's
default networking (and beside contain without a network, which shows what the
bridge adds), and throughput through a published port on loopback beside a
direct connection to the container's address.

    .venv/bin/python benchmarks/bench_network.py [-n 50]

Traffic goes only to loopback and to the container on a bridge this script's
own state root made (checked with `ip route get` before connecting).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import contain
from _cleanup import remove_networks_and_cgroup_parent
from contain._busybox import make_rootfs


def timed(fn, n: int) -> list[float]:
    fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def nft_tables() -> set[tuple[str, str]]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {tuple(line.split()[1:3]) for line in out.splitlines() if line.startswith("table ")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curl_speed(url: str) -> float:
    """Bytes per second for one download (curl's own measurement)."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "60", "-w", "%{speed_download}",
                          url], capture_output=True, text=True, check=True)
    return float(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50)
    n = ap.parse_args().n
    work = tempfile.mkdtemp(prefix="contain-bench-net-")
    root = os.path.join(work, "state")
    rows: list[tuple[str, float, str]] = []
    try:
        image = contain.Image.from_directory(make_rootfs(os.path.join(work, "rootfs")),
                                             tag="bench/busybox", root=root)

        def run_bridge():
            c = contain.Container.run(image, ["/bin/true"], root=root)
            c.wait()
            c.remove()

        def run_none():
            c = contain.Container.run(image, ["/bin/true"], root=root, network="none")
            c.wait()
            c.remove()

        rows.append(("contain run, default bridge", statistics.median(timed(run_bridge, n)), "ms"))
        # The same start without a network: what the bridge itself adds is the difference.
        rows.append(("contain run, network none", statistics.median(timed(run_none, n)), "ms"))

        podman = shutil.which("podman")
        tables_before = nft_tables()
        if podman:
            base = [podman, "--root", os.path.join(work, "proot"), "--runroot", os.path.join(work, "pr"),
                    "--storage-driver", "vfs"]
            from contain.oci.archive import save

            archive = os.path.join(work, "bb.tar")
            save(contain._root.get_root(root).store, ["bench/busybox"], archive)
            subprocess.run(base + ["load", "-i", archive], check=True, capture_output=True)

            def run_podman():
                subprocess.run(base + ["run", "--rm", "bench/busybox", "/bin/true"], check=True,
                               capture_output=True)
            try:
                rows.append(("podman run --rm, default network",
                             statistics.median(timed(run_podman, max(5, n // 10))), "ms"))
            except subprocess.CalledProcessError as exc:
                print(f"podman with its default network failed here: {exc.stderr.decode()[-200:]}")
            subprocess.run(base + ["rmi", "-a", "-f"], capture_output=True)
            # podman's network backend (netavark, or CNI on older hosts) leaves
            # its iptables-nft tables behind: the ones this run brought,
            # holding only that backend's chains and iptables' built-in ones
            # (CNI's masquerade may leave nat with an empty POSTROUTING), go.
            for family, name in nft_tables() - tables_before:
                text = subprocess.run(["nft", "list", "table", family, name], capture_output=True,
                                      text=True).stdout
                lines = [ln.strip() for ln in text.splitlines()]
                chains = [ln.split()[1] for ln in lines if ln.startswith("chain ")]
                rules = [ln for ln in lines if ln and not ln.startswith(("chain ", "type ", "table ", "}", "#"))]
                ours = any(c.startswith(("NETAVARK", "CNI-")) for c in chains)
                if chains and all(c.isupper() for c in chains) and (ours or not rules):
                    subprocess.run(["nft", "delete", "table", family, name], capture_output=True)

        # Throughput: a 256 MiB file served by busybox httpd from a tmpfs.
        port = free_port()
        c = contain.Container.run(
            image, ["sh", "-c", "dd if=/dev/zero of=/www/big bs=1M count=256 2>/dev/null; "
                    "exec httpd -f -p 80 -h /www"],
            root=root, tmpfs={"/www": "size=300m"}, ports={80: ("127.0.0.1", port)})
        try:
            ip = c.inspect()["NetworkSettings"]["IPAddress"]
            route = subprocess.run(["ip", "route", "get", ip], capture_output=True, text=True).stdout
            bridge = contain.Network.get("bridge", root=root).inspect()["Options"][
                "com.docker.network.bridge.name"]
            assert "via" not in route and bridge in route, f"{ip} is not on our bridge: {route}"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "2",
                                   f"http://127.0.0.1:{port}/big"]).returncode == 0:
                    break
                time.sleep(0.2)
            direct = statistics.median(curl_speed(f"http://{ip}/big") for _ in range(3))
            published = statistics.median(curl_speed(f"http://127.0.0.1:{port}/big") for _ in range(3))
            rows.append(("direct to the container's address", direct / 1e6, "MB/s"))
            rows.append(("published port on 127.0.0.1", published / 1e6, "MB/s"))
            rows.append(("published / direct", 100 * published / direct, "%"))
        finally:
            c.remove(force=True)
    finally:
        subprocess.run(["umount", "-R", os.path.join(work, "proot")], capture_output=True)
        remove_networks_and_cgroup_parent(root)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nnetworking ({time.strftime('%Y-%m-%d')}, {os.uname().release}, {os.cpu_count()} CPUs)")
    for name, value, unit in rows:
        print(f"  {name:40s} {value:10.1f} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
