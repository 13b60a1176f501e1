"""The root helper of a rootless container whose root is a fuse-overlayfs mount.

    python -I -S _fuse_root.py PID PROGRAM LOWERDIRS UPPERDIR WORKDIR ROOTFS

runtime.spawn has the native core run it (ct_spec.root_helper) once the new
container PID's user namespace has its id maps and before the container goes
on to mount its root.  LOWERDIRS is ':'-separated, topmost first.

1. Join PID's user namespace (its owner may), so that the fuse-overlayfs
   daemon runs as root of a namespace with the container's mapping: it can
   give files the container's owners, and the kernel lets every process of
   the container use the mount (the mount's user namespace is theirs).
2. Make a private mount namespace of its own (owned by that user
   namespace) and let PROGRAM mount the layers there on ROOTFS; it leaves a
   daemon serving the mount.
3. Take a detached copy of the mount (open_tree), unmount the original,
   join PID's mount namespace and attach the copy on ROOTFS.  The container
   then binds it as its root.

Nothing but the container holds the mount afterwards (the daemon's own
namespace no longer has it), so when the container's mount namespace goes,
the kernel ends the FUSE connection and the daemon exits: no process has to
watch for that.

It runs with the standard library only (-S: no site), and says what failed
in one line on stderr, which becomes the RuntimeFailure's message.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 2
AT_FDCWD = -100
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 4
# x86-64 and the generic table (aarch64, riscv64) agree on these numbers.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Failure(Exception):
    pass


def _check(result: int, step: str) -> int:
    if result < 0:
        e = ctypes.get_errno()
        raise Failure(f"{step}: {os.strerror(e)}")
    return result


def mount_root(pid: int, program: str, lowerdirs: str, upperdir: str, workdir: str,
               rootfs: str) -> None:
    user_ns = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    mount_ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    _check(_libc.setns(user_ns, CLONE_NEWUSER), "join the container's user namespace")
    _check(_libc.unshare(CLONE_NEWNS), "create a mount namespace")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    options = f"lowerdir={lowerdirs},upperdir={upperdir},workdir={workdir},volatile"
    proc = subprocess.run([program, "-o", options, rootfs], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        said = [line for line in (proc.stderr + proc.stdout).splitlines()
                if line.strip() and "unknown argument ignored" not in line]
        raise Failure(f"{os.path.basename(program)}: "
                      f"{said[-1] if said else f'exit status {proc.returncode}'}")
    tree = _check(_libc.syscall(SYS_OPEN_TREE, AT_FDCWD, rootfs.encode(),
                                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC), "open_tree")
    _check(_libc.umount2(rootfs.encode(), MNT_DETACH), "unmount the helper's copy")
    _check(_libc.setns(mount_ns, CLONE_NEWNS), "join the container's mount namespace")
    _check(_libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, rootfs.encode(),
                         MOVE_MOUNT_F_EMPTY_PATH), "attach the root")


def main(argv: list[str]) -> int:
    try:
        pid, program, lowerdirs, upperdir, workdir, rootfs = argv[1:]
        mount_root(int(pid), program, lowerdirs, upperdir, workdir, rootfs)
    except (Failure, OSError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
