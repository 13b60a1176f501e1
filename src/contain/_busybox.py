"""The embedded default image: a root filesystem made on the spot from the
host's busybox-static (Debian's busybox-static package), no registry needed."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional

from .errors import NotFound

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "user:x:1000:1000:user:/home/user:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nuser:x:1000:\nstaff:x:50:user\nnogroup:x:65534:\n"


def find_busybox() -> str:
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise NotFound("busybox is not installed: apt-get install busybox-static")


def make_rootfs(path: str, busybox: Optional[str] = None) -> str:
    """Fill `path` with busybox, its applets as links, and passwd/group."""
    busybox = busybox or find_busybox()
    for d in ("bin", "etc", "tmp", "root", "home/user", "proc", "sys", "dev"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    shutil.copy2(busybox, os.path.join(path, "bin", "busybox"))
    listed = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in listed.stdout.split():
        if applet == "busybox":  # the list names busybox itself: a link would replace it
            continue
        link = os.path.join(path, "bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write(PASSWD)
    with open(os.path.join(path, "etc", "group"), "w") as f:
        f.write(GROUP)
    os.chown(os.path.join(path, "home", "user"), 1000, 1000)
    return path
