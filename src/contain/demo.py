"""The main job: a real container from the embedded busybox image, showing
that it is isolated (its own pid 1, hostname, filesystem, network, limits).

    python -m contain.demo          (as root)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from . import Container, Image
from ._busybox import make_rootfs
from ._root import get_root


def main(argv: list[str] | None = None) -> int:
    root = get_root()
    print(f"state root: {root.path}")
    try:
        image = Image.get("contain-demo/busybox:latest")
    except Exception:
        with tempfile.TemporaryDirectory() as tmp:
            make_rootfs(tmp)
            image = Image.from_directory(tmp, tag="contain-demo/busybox:latest",
                                         config={"Cmd": ["sh"]})
        print(f"made image {image.tags[0]} ({image.short_id}) from the host's busybox-static")

    script = (
        'echo "inside:  pid $$, hostname $(hostname), user $(id -un)"; '
        'echo "processes: $(ps -o pid,comm | tail -n +2 | tr -s " " | paste -sd ";" -)"; '
        'echo "network:  $(ls /sys/class/net | paste -sd " " -)"; '
        'echo "root fs:  $(ls / | paste -sd " " -)"; '
        'echo "memory limit: $(cat /sys/fs/cgroup/memory.max 2>/dev/null || '
        'cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"; '
        'echo hello > /written-inside; ls /written-inside'
    )
    print(f"outside: pid {os.getpid()}, hostname {os.uname().nodename}")
    t0 = time.perf_counter()
    with Container.run(image, ["sh", "-c", script], hostname="demo", mem_limit="64m", network="none",
                       pids_limit=64) as c:
        code = c.wait(timeout=60)
        elapsed = (time.perf_counter() - t0) * 1000
        sys.stdout.write(c.logs().decode())
        print(f"container {c.short_id} ({c.name}) exited {code} after {elapsed:.1f} ms, start to exit")
    written = any(os.path.exists(os.path.join(d, "written-inside"))
                  for d in root.store.lowerdirs(image.id))
    print(f"the image is untouched by the container's writes: {not written}")
    if not Container.list(all=True):
        # The last container is gone: so is the shared parent cgroup.
        try:
            root.cgroups.remove_parent()
        except Exception:
            pass
    return code


if __name__ == "__main__":
    sys.exit(main())
