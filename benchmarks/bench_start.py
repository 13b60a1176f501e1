"""Start-to-exit of /bin/true from a warm Python process, side by side.

contain: Container.run + wait + remove (create, start, wait, remove), and
the bare native spawn underneath it.  crun and runc: `run` of an OCI bundle
of the same busybox rootfs with the same namespaces and no network; podman
and docker when present and working.  crun once more with an RCU grace
period paid ahead of each run (grace_period_paid).  Medians over N runs
(default 200), printed with ratios to crun; the tools take turns run by
run.

    .venv/bin/python benchmarks/bench_start.py [-n 200] [--without podman]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import contain
from _cleanup import remove_networks_and_cgroup_parent
from _turns import medians, take_turns
from contain._busybox import make_rootfs
from contain.linux import defaults, runtime
from contain.linux.spec import Linux, Namespace, Process, Root, Spec


def interleaved(runners: dict, n: int) -> dict[str, float]:
    """Median ms of each runner, the tools taking turns run by run."""
    return medians(take_turns(runners, n))


def bundle(rootfs: str, path: str) -> str:
    spec = Spec(
        process=Process(args=["/bin/true"], env=["PATH=/bin"], cwd="/",
                        capabilities=defaults.capabilities_for(0, defaults.DEFAULT_CAPABILITIES)),
        root=Root(rootfs), hostname="bench", mounts=defaults.default_mounts(),
        linux=Linux(namespaces=[Namespace(n) for n in ("mount", "pid", "uts", "ipc", "network", "cgroup")],
                    devices=list(defaults.DEVICES), masked_paths=list(defaults.MASKED_PATHS),
                    readonly_paths=list(defaults.READONLY_PATHS)))
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(spec.to_oci(root_path=rootfs), f)
    return path


def ensure_hugetlb_v1() -> None:
    """crun 1.8 refuses a hybrid host whose v2 tree holds a controller
    (hugetlb here); giving hugetlb a v1 hierarchy moves it out of v2."""
    try:
        with open("/sys/fs/cgroup/unified/cgroup.controllers") as f:
            if "hugetlb" not in f.read().split():
                return
    except FileNotFoundError:
        return
    os.makedirs("/sys/fs/cgroup/hugetlb", exist_ok=True)
    subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", "/sys/fs/cgroup/hugetlb"],
                   check=False, capture_output=True)


def grace_period_paid(work: str):
    """A step to run, untimed, just before a run: move this process out of a
    cgroup and back through cgroup.procs.  The kernel then waits for an RCU
    grace period once (5-15 ms when no process was moved lately) and lets
    moves made in the next few milliseconds through at once: the state a
    busy host, where processes keep moving, is mostly in.  crun moves its
    container through cgroup.procs, so it gains; contain's child moves
    itself through `tasks`, which takes no grace period either way.  None
    where there is no cgroup hierarchy to do it in."""
    for top in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(top, "cgroup.procs")) and os.access(top, os.W_OK):
            break
    else:
        return None
    with open("/proc/self/cgroup") as f:
        lines = f.read().splitlines()
    hier = "0::" if top != "/sys/fs/cgroup/pids" else None
    home = next((line.split(":", 2)[2] for line in lines
                 if (line.startswith("0::") if hier else ":pids:" in line)), None)
    if home is None:
        return None
    spare = os.path.join(top, os.path.basename(work))
    os.makedirs(spare, exist_ok=True)
    atexit.register(os.rmdir, spare)

    def warm() -> None:
        for d in (spare, top + home):
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write("0")
    try:
        warm()
    except OSError as exc:
        print(f"crun with a grace period paid ahead: skipped ({exc})")
        return None
    return warm


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--without", action="append", default=[], metavar="TOOL",
                    help="leave a peer out (crun, runc, podman): podman's vfs storage frees "
                         "thousands of inodes, which slows file creation on ext4 for minutes after")
    args = ap.parse_args()
    n = args.n
    work = tempfile.mkdtemp(prefix="contain-bench-")
    runners: dict = {}  # name -> (function, every), each warmed once
    try:
        rootfs = make_rootfs(os.path.join(work, "rootfs"))
        root = os.path.join(work, "state")
        image = contain.Image.from_directory(rootfs, tag="bench/busybox", root=root)

        def contain_run():
            c = contain.Container.run(image, ["/bin/true"], root=root, network="none")
            c.wait()
            c.remove()

        contain_run()
        runners["contain (run, wait, remove), network none"] = (contain_run, 1)

        spec_dir = os.path.join(work, "spawn")
        for d in ("upper", "work", "merged"):
            os.makedirs(os.path.join(spec_dir, d))
        lowers = contain._root.get_root(root).store.lowerdirs(image.id)
        spec = Spec(
            process=Process(args=["/bin/true"], env=["PATH=/bin"], cwd="/",
                            capabilities=defaults.capabilities_for(0, defaults.DEFAULT_CAPABILITIES)),
            root=Root(os.path.join(spec_dir, "merged"), lowerdirs=lowers,
                      upperdir=os.path.join(spec_dir, "upper"), workdir=os.path.join(spec_dir, "work")),
            hostname="bench", mounts=defaults.default_mounts(),
            linux=Linux(namespaces=[Namespace(x) for x in ("mount", "pid", "uts", "ipc", "network", "cgroup")],
                        devices=list(defaults.DEVICES), masked_paths=list(defaults.MASKED_PATHS),
                        readonly_paths=list(defaults.READONLY_PATHS)))

        def native_spawn():
            shutil.rmtree(os.path.join(spec_dir, "work", "work"), ignore_errors=True)
            child = runtime.spawn(spec, stdio=(None, None, None))
            os.waitid(os.P_PIDFD, child.pidfd, os.WEXITED)
            os.close(child.pidfd)

        native_spawn()
        runners["contain native spawn only (no cgroup, no monitor)"] = (native_spawn, 1)

        b = bundle(rootfs, os.path.join(work, "bundle"))
        ensure_hugetlb_v1()
        warm = grace_period_paid(work)
        for tool in ("crun", "runc"):
            exe = shutil.which(tool)
            if tool in args.without:
                continue
            if not exe:
                print(f"{tool}: not installed, skipped")
                continue
            state = os.path.join(work, f"{tool}-state")
            counter = iter(range(10**9))

            def tool_run(exe=exe, state=state):
                name = f"bench{next(counter)}"
                r = subprocess.run([exe, "--root", state, "run", "--bundle", b, name],
                                   stdin=subprocess.DEVNULL, capture_output=True)
                if r.returncode != 0:
                    raise RuntimeError(f"{tool} failed: {r.stderr.decode()[-300:]}")

            try:
                tool_run()
                runners[f"{tool} run"] = (tool_run, 1)
            except RuntimeError as exc:
                print(f"{tool}: {exc}")
                continue
            if tool == "crun" and warm is not None:
                runners["crun run, a grace period just paid (see below)"] = (tool_run, 1, warm)

        podman = shutil.which("podman") if "podman" not in args.without else None
        podman_runner = None
        if podman:
            tmp = os.path.join(work, "podman")
            base = [podman, "--root", os.path.join(tmp, "root"), "--runroot", os.path.join(work, "pr"),
                    "--storage-driver", "vfs"]
            archive = os.path.join(work, "bb.tar")
            from contain.oci.archive import save

            save(contain._root.get_root(root).store, ["bench/busybox"], archive)
            if subprocess.run(base + ["load", "-i", archive], capture_output=True).returncode == 0:
                def podman_run():
                    subprocess.run(base + ["run", "--rm", "--network", "none", "bench/busybox", "/bin/true"],
                                   check=True, capture_output=True)
                try:
                    podman_run()
                    podman_runner = podman_run
                except subprocess.CalledProcessError as exc:
                    print(f"podman: {exc.stderr.decode()[-300:]}")
        docker = shutil.which("docker")
        if docker and subprocess.run([docker, "info"], capture_output=True).returncode != 0:
            print("docker: no engine running, skipped")
        results = interleaved(runners, n)
        if podman_runner is not None:
            # On its own, after the others: its vfs storage copies the rootfs
            # for every container, and the thousands of inodes that frees
            # would slow every file the other tools make on ext4 without a
            # journal for the next 30 s (each new inode is checked against
            # the recently deleted ones).
            results.update(interleaved({"podman run --rm": (podman_runner, 1)}, max(10, n // 10)))
        if podman:
            subprocess.run(base + ["rmi", "-a", "-f"], capture_output=True)
    finally:
        subprocess.run(["umount", "-R", os.path.join(work, "podman", "root")], capture_output=True)
        remove_networks_and_cgroup_parent(os.path.join(work, "state"))
        shutil.rmtree(work, ignore_errors=True)

    ref = results.get("crun run")
    print(f"\nstart-to-exit of /bin/true, median of {n} runs ({time.strftime('%Y-%m-%d')}, "
          f"{os.uname().release}, {os.cpu_count()} CPUs)")
    for name, ms in results.items():
        ratio = f"{ms / ref:5.2f}x crun" if ref else ""
        print(f"  {name:55s} {ms:8.2f} ms  {ratio}")
    warm = results.get("crun run, a grace period just paid (see below)")
    ours = results.get("contain (run, wait, remove), network none")
    if warm and ours:
        print("  (before each of those runs, untimed, this process moved out of a cgroup and back\n"
              "  through cgroup.procs, so that crun's own move of its container needed no RCU grace\n"
              "  period, as on a host where processes move often; contain's child joins through\n"
              f"  `tasks`, which needs none either way.  contain against that crun: {ours / warm:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
