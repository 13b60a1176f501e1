"""Debian root filesystems made with debootstrap from the mirror apt uses,
cached as tarballs under /var/cache/contain-tests (about 35 s the first time)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from typing import Sequence

CACHE_DIR = "/var/cache/contain-tests"


def apt_mirror() -> str:
    """The Debian mirror apt uses (one-line or deb822 sources), for debootstrap."""
    candidates = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) \
        + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    for path in candidates:
        try:
            text = open(path).read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
                if uris and suites and "bookworm" in suites.group(1).split():
                    return uris.group(1)
        else:
            match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M)
            if match:
                return match.group(1)
    return "http://deb.debian.org/debian"


def rootfs_tarball(name: str, include: Sequence[str] = (), cache_dir: str = CACHE_DIR) -> str:
    """A gzip tarball of `debootstrap --variant=minbase bookworm` (plus the
    packages in `include`), made once and kept in the cache."""
    tarball = os.path.join(cache_dir, f"{name}.tar.gz")
    if os.path.exists(tarball):
        return tarball
    os.makedirs(cache_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="debootstrap-", dir=cache_dir)
    try:
        target = os.path.join(work, "rootfs")
        argv = ["debootstrap", "--variant=minbase"]
        if include:
            argv.append("--include=" + ",".join(include))
        subprocess.run(argv + ["bookworm", target, apt_mirror()], check=True,
                       stdout=subprocess.DEVNULL, timeout=900)
        partial = os.path.join(work, "rootfs.tar.gz")
        subprocess.run(["tar", "-C", target, "--numeric-owner", "--xattrs", "-czf", partial, "."],
                       check=True)
        os.rename(partial, tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball
