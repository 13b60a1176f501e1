"""Attacks on a container started with default settings; each test FAILS if
the attack succeeds.  Mechanism tests (the seccomp compiler against the
real kernel, the device cgroup programs, the sysctl filter) come first; the
attacks run through the public API (`Container.run` / `exec_run`).

Syscalls busybox cannot make come from a tiny static C program (PROBE_C),
compiled once per session and bind-mounted read-only at /t.  Every call it
makes uses arguments that are harmless even if allowed (a path that does not
exist, a bad magic number): it must stay harmless if it ever runs unconfined.
See docs/security.md for how each test maps to a protection."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

import contain
from contain import Container, InvalidArgument
from contain.linux import defaults, devices, seccomp
from contain.linux.sysctl import check_sysctls

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, cgroups, bpf)")

PROBE_C = r'''
/* Attack probe for tests/test_security.py: each subcommand tries one thing
 * and prints what happened (errno 0 = it worked).  Static, so it runs in
 * any image. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void report(const char *name, long rc)
{
    printf("%s %ld %d\n", name, rc, rc < 0 ? errno : 0);
    fflush(stdout);
}

#define TRY(name, call) do { errno = 0; long _r = (long)(call); report(name, _r); } while (0)

/* Every call is made with arguments that do nothing even where it is
 * allowed (a path that does not exist, a bad magic, invalid flags): the
 * probe must be harmless if it ever runs unconfined on the host. */
#define NOPATH "/nonexistent-contain-probe/x"

static int syscalls(void)
{
    char zero[256] = {0};
    int self_ns = open("/proc/self/ns/uts", O_RDONLY);
    TRY("mount", mount("none", NOPATH, "tmpfs", 0, NULL));
    TRY("umount2", umount2(NOPATH, MNT_DETACH));
    TRY("unshare_mount", syscall(SYS_unshare, CLONE_NEWNS));
    TRY("setns", syscall(SYS_setns, self_ns, 0));
    TRY("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));
    TRY("add_key", syscall(SYS_add_key, "user", "probe", "x", 1, -2));
    TRY("request_key", syscall(SYS_request_key, "user", "nonexistent-probe", NULL, 0));
    TRY("bpf", syscall(SYS_bpf, 0 /* MAP_CREATE */, zero, 64));
    TRY("perf_event_open", syscall(SYS_perf_event_open, zero, 0, -1, -1, 0));
    TRY("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0x0f0f0000UL));
    TRY("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, NULL, 0));
    TRY("reboot", syscall(SYS_reboot, 0, 0, 0, NULL)); /* bad magic: EINVAL if ever allowed */
    TRY("swapon", syscall(SYS_swapon, NOPATH, 0));
    TRY("swapoff", syscall(SYS_swapoff, NOPATH));
    TRY("init_module", syscall(SYS_init_module, NULL, 0, ""));
    TRY("finit_module", syscall(SYS_finit_module, -1, "", 0));
    TRY("delete_module", syscall(SYS_delete_module, "nonexistent_probe", O_NONBLOCK));
    TRY("acct", syscall(SYS_acct, NOPATH));
    TRY("syslog", syscall(SYS_syslog, 10 /* SIZE_BUFFER */, NULL, 0));
    TRY("userfaultfd", syscall(SYS_userfaultfd, 0));
    TRY("socket_vsock", socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
    TRY("socket_vsock_hi", syscall(SYS_socket, 0x100000028UL, SOCK_STREAM, 0));
    TRY("personality_bsd", syscall(SYS_personality, 0x0006));
    TRY("pivot_root", syscall(SYS_pivot_root, NOPATH, NOPATH));
    TRY("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
    TRY("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */));
    TRY("quotactl", syscall(SYS_quotactl, 0, NULL, 0, NULL));
    TRY("kcmp", syscall(SYS_kcmp, getpid(), getpid(), 0, 0, 0));
    TRY("set_mempolicy", syscall(SYS_set_mempolicy, 0, NULL, 0));
#ifdef SYS_iopl
    TRY("iopl", syscall(SYS_iopl, 0));
    TRY("ioperm", syscall(SYS_ioperm, 0, 0, 0));
#endif
    TRY("clone3", syscall(SYS_clone3, NULL, 0));
    {
        errno = 0;
        long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0)
            _exit(0);
        if (pid > 0)
            waitpid((pid_t)pid, NULL, 0);
        report("clone_newuser", pid);
    }
    /* Ordinary things keep working under the filter. */
    {
        long pid = fork();
        if (pid == 0)
            _exit(7);
        int st = 0;
        if (pid > 0)
            waitpid((pid_t)pid, &st, 0);
        report("fork", pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 7 ? 0 : -1);
    }
    TRY("socket_inet", socket(AF_INET, SOCK_STREAM, 0));
    TRY("personality_query", syscall(SYS_personality, 0xffffffffUL));
    TRY("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
    return 0;
}

/* "Shocker" (2014): open_by_handle_at with a guessed handle of inode 2,
 * the root of the filesystem a bind-mounted file lives on. */
static int shocker(const char *mounted)
{
    struct { unsigned int bytes; int type; unsigned char f_handle[8]; } h;
    int fd = open(mounted, O_RDONLY);
    if (fd < 0) {
        report("open_mounted", -1);
        return 1;
    }
    h.bytes = 8;
    h.type = 1; /* FILEID_INO32_GEN */
    unsigned int ino = 2, gen = 0;
    memcpy(h.f_handle, &ino, 4);
    memcpy(h.f_handle + 4, &gen, 4);
    TRY("open_by_handle_at", syscall(SYS_open_by_handle_at, fd, &h, O_RDONLY));
    return 0;
}

static int exewatch(double seconds)
{
    struct timespec t0, now;
    long scanned = 0, opened = 0, host = 0, writable = 0;
    char self[32];
    snprintf(self, sizeof self, "%d", getpid());
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] < '0' || e->d_name[0] > '9' || !strcmp(e->d_name, self) || !strcmp(e->d_name, "1"))
                continue;
            char path[64], target[4096], fdpath[64];
            snprintf(path, sizeof path, "/proc/%s/exe", e->d_name);
            scanned++;
            int fd = open(path, O_PATH | O_CLOEXEC);
            if (fd < 0)
                continue;
            opened++;
            /* What we hold, named from our own root: a file of the container
             * stats to the same inode through that name; a host file does not. */
            snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fd);
            ssize_t n = readlink(fdpath, target, sizeof target - 1);
            target[n > 0 ? n : 0] = 0;
            struct stat a, b;
            int same = fstat(fd, &a) == 0 && n > 0 && stat(target, &b) == 0 &&
                       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
            if (!same) {
                host++;
                printf("HOSTEXE pid=%s target=%s\n", e->d_name, target);
                int w = open(fdpath, O_WRONLY | O_CLOEXEC); /* never written to */
                if (w >= 0) {
                    writable++;
                    printf("WRITABLE pid=%s\n", e->d_name);
                    close(w);
                }
            }
            close(fd);
        }
        if (d)
            closedir(d);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    printf("scanned=%ld opened=%ld host=%ld writable=%ld\n", scanned, opened, host, writable);
    return 0;
}

static int mknodopen(const char *path, const char *type, int major_, int minor_)
{
    mode_t kind = type[0] == 'b' ? S_IFBLK : S_IFCHR;
    unlink(path);
    TRY("mknod", mknod(path, kind | 0600, makedev(major_, minor_)));
    TRY("open_read", open(path, O_RDONLY));
    TRY("open_write", open(path, O_WRONLY));
    return 0;
}

static int tcp(const char *mode, const char *ip, int port, double seconds)
{
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, ip, &a.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (!strcmp(mode, "connect")) {
        TRY("connect", connect(s, (struct sockaddr *)&a, sizeof a));
        return 0;
    }
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    TRY("bind", bind(s, (struct sockaddr *)&a, sizeof a));
    TRY("listen", listen(s, 4));
    alarm((unsigned)seconds);
    int c = accept(s, NULL, NULL);
    report("accept", c);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return 2;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "syscalls"))
        return syscalls();
    if (!strcmp(cmd, "euid")) {
        printf("%d %d\n", (int)geteuid(), (int)getuid());
        return 0;
    }
    if (!strcmp(cmd, "shocker") && argc > 2)
        return shocker(argv[2]);
    if (!strcmp(cmd, "exewatch") && argc > 2)
        return exewatch(atof(argv[2]));
    if (!strcmp(cmd, "mknodopen") && argc > 5)
        return mknodopen(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
    if (!strcmp(cmd, "ptrace") && argc > 2) {
        pid_t pid = (pid_t)atoi(argv[2]);
        TRY("kill0", kill(pid, 0));
        TRY("ptrace_attach", ptrace(PTRACE_ATTACH, pid, NULL, NULL));
        TRY("ptrace_seize", ptrace(PTRACE_SEIZE, pid, NULL, NULL));
        return 0;
    }
    if ((!strcmp(cmd, "connect") || !strcmp(cmd, "listen")) && argc > 4)
        return tcp(cmd, argv[2], atoi(argv[3]), atof(argv[4]));
    if (!strcmp(cmd, "withfilter") && argc > 3) {
        /* Load a compiled filter from a file, then exec the rest. */
        static unsigned char buf[65536];
        int fd = open(argv[2], O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
        if (n <= 0 || n % 8)
            return 3;
        struct sock_fprog prog = { (unsigned short)(n / 8), (struct sock_filter *)buf };
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
            perror("seccomp");
            return 4;
        }
        execv(argv[3], argv + 3);
        perror("execv");
        return 5;
    }
    return 2;
}
'''

WAIT = 30


# ----------------------------------------------------------------- helpers
@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the attack probe")
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text(PROBE_C)
    r = subprocess.run(["gcc", "-static", "-O1", "-o", str(d / "probe"), str(d / "probe.c")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a static probe (libc.a missing?): {r.stderr[-500:]}")
    os.chmod(d, 0o755)
    return str(d)


@pytest.fixture
def probe(probe_dir):
    """volumes= that put the probe at /t/probe."""
    return {probe_dir: {"bind": "/t", "mode": "ro"}}


def output(c: Container, timeout: float = WAIT) -> str:
    c.wait(timeout=timeout)
    return c.logs().decode(errors="replace")


def results(text: str) -> dict[str, tuple[int, int]]:
    """The probe's "name rc errno" lines."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].lstrip("-").isdigit() and parts[2].isdigit():
            found[parts[0]] = (int(parts[1]), int(parts[2]))
    return found


def host_block_device() -> tuple[int, int]:
    """major, minor of a block device of the host that the host itself can
    open (so that a refusal inside the container is the container's doing;
    a loop device where there is one)."""
    entries = sorted(os.listdir("/sys/dev/block"), key=lambda e: (not e.startswith("7:"), e))
    probe_dir = tempfile.mkdtemp(prefix="contain-devprobe-")
    try:
        for entry in entries:
            major, minor = (int(x) for x in entry.split(":"))
            node = os.path.join(probe_dir, "dev")
            os.mknod(node, 0o600 | 0o060000, os.makedev(major, minor))
            try:
                os.close(os.open(node, os.O_RDONLY))
                return major, minor
            except OSError:
                continue
            finally:
                os.unlink(node)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    pytest.skip("no block device the host can open")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Calls the default profile must refuse, and the errno it answers.
DENIED = {
    "mount": errno.EPERM, "umount2": errno.EPERM, "unshare_mount": errno.EPERM,
    "unshare_user": errno.EPERM, "setns": errno.EPERM, "keyctl": errno.EPERM,
    "add_key": errno.EPERM, "request_key": errno.EPERM, "bpf": errno.EPERM,
    "perf_event_open": errno.EPERM, "kexec_load": errno.EPERM, "kexec_file_load": errno.EPERM,
    "reboot": errno.EPERM, "swapon": errno.EPERM, "swapoff": errno.EPERM,
    "init_module": errno.EPERM, "finit_module": errno.EPERM, "delete_module": errno.EPERM,
    "acct": errno.EPERM, "syslog": errno.EPERM, "userfaultfd": errno.EPERM,
    "socket_vsock": errno.EPERM, "socket_vsock_hi": errno.EPERM,
    "personality_bsd": errno.EPERM, "pivot_root": errno.EPERM, "fsopen": errno.EPERM,
    "open_tree": errno.EPERM, "quotactl": errno.EPERM, "kcmp": errno.EPERM,
    "set_mempolicy": errno.EPERM, "clone_newuser": errno.EPERM,
    # glibc falls back to clone(2) on ENOSYS, whose flags the filter can see.
    "clone3": errno.ENOSYS,
}
if sys.platform == "linux" and os.uname().machine == "x86_64":
    DENIED.update(iopl=errno.EPERM, ioperm=errno.EPERM)
# Ordinary calls that must keep working under the filter.
ALLOWED = ("fork", "socket_inet", "personality_query")


def check_battery(found: dict[str, tuple[int, int]]) -> None:
    missing = set(DENIED) - set(found)
    assert not missing, f"the probe did not report {missing}"
    wrong = {name: found[name] for name, err in DENIED.items()
             if found[name][0] >= 0 or found[name][1] != err}
    assert not wrong, f"calls not refused as Docker's profile refuses them (rc, errno): {wrong}"
    broken = {name: found[name] for name in ALLOWED if found[name][0] < 0}
    assert not broken, f"ordinary calls broken by the filter: {broken}"


# ============================================================ mechanisms
# ------------------------------------------------------------- seccomp
def _reference(profile, caps, arch, nr, args):
    """The profile's verdict computed directly (no BPF): what the compiled
    binary search must agree with."""
    table = seccomp.SYSCALLS[arch]
    names = [n for n, v in table.items() if v == nr]
    kernel = seccomp._kernel()
    caps = frozenset(seccomp._norm_cap(c) for c in caps)
    if nr > max(table.values()):
        return seccomp.errno_action(errno.ENOSYS)
    for rule in profile.rules:
        if not rule.applies(caps, arch, kernel) or not set(rule.names) & set(names):
            continue
        ok = True
        for a in rule.args:
            v = args[a.index] & ((1 << a.width) - 1)
            value, two = a.value, a.value_two
            if a.width == 32:
                value &= 0xFFFFFFFF
                two &= 0xFFFFFFFF
            ok &= {"SCMP_CMP_EQ": v == value, "SCMP_CMP_NE": v != value,
                   "SCMP_CMP_LT": v < value, "SCMP_CMP_LE": v <= value,
                   "SCMP_CMP_GT": v > value, "SCMP_CMP_GE": v >= value,
                   "SCMP_CMP_MASKED_EQ": (v & value) == two}[a.op]
        if ok:
            return rule.action
    return profile.default_action


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("caps", [defaults.DEFAULT_CAPABILITIES, [],
                                  list(defaults.CAPABILITY_NUMBERS)])
def test_seccomp_binary_search_agrees_with_profile(arch, caps):
    prog = seccomp.compile_profile(caps, arch)
    top = max(seccomp.SYSCALLS[arch].values())
    samples = [(0,) * 6, (40,) + (0,) * 5, (0x10000000,) * 6, (0xFFFFFFFF,) * 6, (8,) * 6,
               ((1 << 32) | 40,) + (0,) * 5]
    for nr in range(top + 20):
        for args in samples:
            got = seccomp.simulate(prog, nr, args, arch=arch)
            want = _reference(seccomp.DEFAULT_PROFILE, caps, arch, nr, args)
            assert got == want, (arch, nr, args, seccomp.describe(got), seccomp.describe(want))
    # A binary search, not a linear list: far fewer instructions than allowed calls.
    allowed = sum(seccomp.simulate(prog, nr, arch=arch) == seccomp.SECCOMP_RET_ALLOW
                  for nr in range(top + 1))
    assert len(prog) // 8 < allowed


def test_seccomp_refuses_foreign_arch_and_x32():
    prog = seccomp.compile_profile(defaults.DEFAULT_CAPABILITIES, "x86_64")
    read = seccomp.SYSCALLS["x86_64"]["read"]
    assert seccomp.simulate(prog, read, arch="x86_64") == seccomp.SECCOMP_RET_ALLOW
    assert seccomp.simulate(prog, read | seccomp.X32_SYSCALL_BIT, arch="x86_64") != seccomp.SECCOMP_RET_ALLOW
    # i386 int 0x80 from an x86_64 process: other numbers, other meaning.
    assert seccomp.simulate(prog, 3, audit_arch=0x40000003) == seccomp.SECCOMP_RET_KILL_PROCESS
    assert seccomp.simulate(prog, read, audit_arch=seccomp.AUDIT_ARCH_AARCH64) == seccomp.SECCOMP_RET_KILL_PROCESS


def test_seccomp_capabilities_unlock_like_docker():
    T = seccomp.SYSCALLS["x86_64"]
    allow, eperm = seccomp.SECCOMP_RET_ALLOW, seccomp.errno_action(errno.EPERM)

    def verdict(caps, name, *args):
        return seccomp.simulate(seccomp.compile_profile(caps, "x86_64"), T[name], args, arch="x86_64")

    base = defaults.DEFAULT_CAPABILITIES
    for name in ("mount", "umount2", "unshare", "setns", "bpf", "perf_event_open", "sethostname"):
        assert verdict(base, name) == eperm, name
        assert verdict(base + ["CAP_SYS_ADMIN"], name) == allow, name
    assert verdict(base, "clone", 0x10000000) == eperm  # CLONE_NEWUSER
    assert verdict(base, "clone", 0x01200011) == allow  # what fork() passes
    assert verdict(base + ["SYS_ADMIN"], "clone", 0x10000000) == allow
    assert verdict(base, "clone3") == seccomp.errno_action(errno.ENOSYS)
    assert verdict(base + ["CAP_SYS_ADMIN"], "clone3") == allow
    for cap, names in {"CAP_SYS_MODULE": ("init_module", "finit_module", "delete_module"),
                       "CAP_SYS_BOOT": ("reboot",), "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd"),
                       "CAP_SYS_TIME": ("settimeofday", "clock_settime"),
                       "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
                       "CAP_SYS_RAWIO": ("iopl", "ioperm"), "CAP_SYS_PACCT": ("acct",),
                       "CAP_SYS_NICE": ("mbind", "set_mempolicy")}.items():
        for name in names:
            assert verdict(base, name) == eperm, name
            assert verdict(base + [cap], name) == allow, (cap, name)
    for never in ("kexec_load", "keyctl", "add_key", "swapon", "userfaultfd", "pivot_root"):
        assert verdict(list(defaults.CAPABILITY_NUMBERS), never) == eperm, never
    assert verdict(base, "socket", 40) == eperm and verdict(base, "socket", 2) == allow
    assert verdict(base, "socket", (1 << 32) | 40) == eperm  # high bits do not smuggle AF_VSOCK
    assert verdict(base, "personality", 8) == allow and verdict(base, "personality", 6) == eperm
    assert verdict(base, "read") == allow


def test_seccomp_cache_and_unknown_arch():
    a = seccomp.compile_profile(["CAP_CHOWN", "CAP_KILL"])
    b = seccomp.compile_profile(["KILL", "chown"])
    assert a is b  # same key: cached
    with pytest.raises(InvalidArgument):
        seccomp.compile_profile([], arch="mips")


def test_seccomp_from_json_docker_format(tmp_path):
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "syscalls": [
            {"names": ["read", "write", "exit_group", "nosuchcall"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["kill"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": 15, "op": "SCMP_CMP_EQ"}]},
            {"names": ["mmap"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 2, "value": 4, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["lseek"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 2, "value": 2, "op": "SCMP_CMP_LE"}]},
            {"names": ["dup"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": (1 << 32) + 5, "op": "SCMP_CMP_GT"}]},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["socket"], "action": "SCMP_ACT_KILL_PROCESS",
             "excludes": {"arches": ["amd64"]}},
        ],
    }
    path = tmp_path / "p.json"
    import json

    path.write_text(json.dumps(profile))
    p = seccomp.from_json(str(path))
    assert p == seccomp.from_json(profile)
    T = seccomp.SYSCALLS["x86_64"]
    prog = seccomp.compile_profile([], "x86_64", profile=p)
    run = lambda name, *a: seccomp.simulate(prog, T[name], a, arch="x86_64")  # noqa: E731
    assert run("read") == seccomp.SECCOMP_RET_ALLOW
    assert run("getpid") == seccomp.errno_action(13)
    assert run("kill", 1, 15) == seccomp.SECCOMP_RET_ALLOW
    assert run("kill", 1, 9) == seccomp.errno_action(1)
    assert run("kill", 1, 15 | (1 << 32)) == seccomp.errno_action(1)  # 64-bit compare
    assert run("mmap", 0, 0, 3) == seccomp.SECCOMP_RET_ALLOW
    assert run("mmap", 0, 0, 7) == seccomp.errno_action(1)
    assert [run("lseek", 0, 0, w) for w in (0, 2, 3)] == [seccomp.SECCOMP_RET_ALLOW] * 2 + [seccomp.errno_action(1)]
    assert run("dup", (1 << 32) + 6) == seccomp.SECCOMP_RET_ALLOW
    assert run("dup", (1 << 32) + 5) == seccomp.errno_action(1)
    assert run("dup", 7) == seccomp.errno_action(1)
    assert run("mount") == seccomp.errno_action(1)
    assert run("socket") == seccomp.errno_action(1)
    prog_admin = seccomp.compile_profile(["CAP_SYS_ADMIN"], "x86_64", profile=p)
    assert seccomp.simulate(prog_admin, T["mount"], arch="x86_64") == seccomp.SECCOMP_RET_ALLOW
    for bad in ({"defaultAction": "SCMP_ACT_NOTIFY"}, {"defaultAction": 3}, [], "{not json",
                {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW",
                                                                 "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
                {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]},
                str(tmp_path / "missing.json")):
        with pytest.raises(InvalidArgument):
            seccomp.from_json(bad)


def test_security_opt_selects_profile(tmp_path):
    assert seccomp.for_security_opt(None) is seccomp.DEFAULT_PROFILE
    assert seccomp.for_security_opt(["seccomp=unconfined"]) is None
    assert seccomp.for_security_opt(["seccomp:unconfined"]) is None
    assert seccomp.for_security_opt([], privileged=True) is None
    assert seccomp.for_security_opt(["no-new-privileges", "apparmor=x"]) is seccomp.DEFAULT_PROFILE
    f = tmp_path / "allow.json"
    f.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    assert seccomp.for_security_opt([f"seccomp={f}"]).default_action == seccomp.SECCOMP_RET_ALLOW
    with pytest.raises(InvalidArgument):
        seccomp.for_security_opt(["seccomp="])


def test_syscall_tables_match_kernel_headers(tmp_path):
    x86 = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
    if not os.path.exists(x86):
        pytest.skip("kernel headers not installed")
    with open(x86) as f:
        from_headers = seccomp._header_table(f.read())
    table = seccomp.SYSCALLS["x86_64"]
    assert {k: table[k] for k in from_headers} == from_headers
    generic = "/usr/include/asm-generic/unistd.h"
    if shutil.which("gcc") and os.path.exists(generic):
        src = tmp_path / "arm64.c"
        src.write_text("".join(f"#define __ARCH_WANT_{w}\n" for w in
                               ("RENAMEAT", "NEW_STAT", "SET_GET_RLIMIT", "TIME32_SYSCALLS",
                                "SYS_CLONE3", "MEMFD_SECRET")) + "#include <asm-generic/unistd.h>\n")
        text = subprocess.run(["gcc", "-E", "-dM", str(src)], capture_output=True, text=True,
                              check=True).stdout
        arm = seccomp._header_table(text)
        table = seccomp.SYSCALLS["aarch64"]
        assert {k: table[k] for k in arm} == arm


def test_seccomp_filter_on_the_real_kernel(probe_dir, tmp_path):
    """The compiled default profile, loaded by the probe itself on the host:
    every dangerous call refused, ordinary ones (fork through clone after the
    clone3 ENOSYS, sockets, personality query) working."""
    f = tmp_path / "default.bpf"
    f.write_bytes(seccomp.compile_profile(defaults.DEFAULT_CAPABILITIES))
    probe = os.path.join(probe_dir, "probe")
    r = subprocess.run([probe, "withfilter", str(f), probe, "syscalls"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    check_battery(results(r.stdout))


# ------------------------------------------------------------- devices
def test_device_rule_parsing():
    assert devices.DeviceRule.parse("c 1:3 rwm").line == "c 1:3 rwm"
    assert devices.DeviceRule.parse("b *:* m") == devices.DeviceRule("b", None, None, "m")
    assert devices.DeviceRule.parse("a *:* rwm").line == "a"
    for bad in ("x 1:3 rwm", "c 1:3", "c 1:3 rwx", "c -1:3 r", "c 1:3 rw\nb 8:0 rwm", "", "c 1:3 rr"):
        with pytest.raises(InvalidArgument):
            devices.DeviceRule.parse(bad)
    lines = [r.line for r in devices.default_rules()]
    assert lines[0] == "a" and not devices.default_rules()[0].allow
    for want in ("c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm",
                 "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm"):
        assert want in lines


def _open_in_cgroup(procs_file: str, paths: list[str]) -> dict[str, int]:
    """errno of opening each path (0: opened) from a process placed in a cgroup first."""
    code = ("import os,sys\n"
            "open(sys.argv[1],'w').write(str(os.getpid()))\n"
            "for p in sys.argv[2:]:\n"
            "    try:\n        os.close(os.open(p, os.O_RDONLY)); print(p, 0)\n"
            "    except OSError as e: print(p, e.errno)\n")
    r = subprocess.run([sys.executable, "-c", code, procs_file, *paths], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in r.stdout.splitlines()}


@pytest.fixture
def disk_node(tmp_path):
    major, minor = host_block_device()
    node = tmp_path / "hostdisk"
    os.mknod(node, 0o600 | 0o060000, os.makedev(major, minor))
    return str(node)


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_device_cgroup_denies_host_disk(kind, disk_node):
    base = "/sys/fs/cgroup/devices" if kind == "v1" else "/sys/fs/cgroup/unified"
    if not os.path.isdir(base) or (kind == "v1" and not os.path.exists(f"{base}/devices.allow")):
        pytest.skip(f"no {kind} device hierarchy at {base}")
    cg = os.path.join(base, f"contain-sectest-{os.getpid()}")
    os.mkdir(cg)
    try:
        if kind == "v1":
            devices.apply_v1(cg, devices.default_rules())
            with open(os.path.join(cg, "devices.list")) as f:
                listed = f.read().split("\n")
            assert "c 1:3 rwm" in listed and "a *:* rwm" not in listed
        else:
            devices.attach_v2(cg, devices.default_rules())
            assert devices.attached_programs(cg) == 1
        got = _open_in_cgroup(os.path.join(cg, "cgroup.procs"), ["/dev/null", "/dev/zero", disk_node])
        assert got["/dev/null"] == 0 and got["/dev/zero"] == 0
        assert got[disk_node] == errno.EPERM
    finally:
        deadline = time.monotonic() + 5
        while True:
            try:
                os.rmdir(cg)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def test_device_program_semantics():
    """The BPF program follows the v1 list: last matching rule wins."""
    rules = devices.default_rules() + devices.parse_rules(["b 8:* r"])
    prog = devices.bpf_program(rules)
    assert len(prog) % 8 == 0 and len(prog) // 8 < 200
    fd = devices.load_program(rules)  # the kernel's verifier accepts it
    os.close(fd)


# ------------------------------------------------------------- sysctls
def test_only_namespaced_sysctls():
    assert check_sysctls({"net.ipv4.ip_forward": "1", "kernel.shmmax": 1 << 20,
                          "kernel.sem": "250 32000 32 128", "fs.mqueue.msg_max": "20",
                          "net/ipv4/tcp_syncookies": "1"}) == [
        ("/proc/sys/net/ipv4/ip_forward", "1"), ("/proc/sys/kernel/shmmax", str(1 << 20)),
        ("/proc/sys/kernel/sem", "250 32000 32 128"), ("/proc/sys/fs/mqueue/msg_max", "20"),
        ("/proc/sys/net/ipv4/tcp_syncookies", "1")]
    for bad in ({"kernel.core_pattern": "|/x"}, {"vm.overcommit_memory": "1"},
                {"kernel.modprobe": "/x"}, {"kernel.shm_rmid_forced": "1+kernel.core_pattern=|/x"},
                {"net.ipv4.ip_forward": "1\nkernel.core_pattern=|/x"}, {"../../x": "1"},
                {"net..x": "1"}, {"kernel.sem": "1\x00"}, {"fs.mqueue": "1"}):
        with pytest.raises(InvalidArgument):
            check_sysctls(bad)
    with pytest.raises(InvalidArgument):
        check_sysctls({"net.ipv4.ip_forward": "1"}, host_network=True)


# ================================================================ attacks
def test_seccomp_is_on_in_container_and_exec(run):
    c = run(["sh", "-c", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; sleep 30"])
    time.sleep(0.2)
    r = c.exec_run(["grep", "-E", "^(Seccomp|NoNewPrivs):", "/proc/self/status"])
    c.kill()
    main = output(c)
    for text in (main, r.output.decode()):
        assert "Seccomp:\t2" in text, text  # mode 2: a filter is loaded
        assert "NoNewPrivs:\t1" in text


def test_dangerous_syscalls_refused_in_container(run, probe):
    c = run(["/t/probe", "syscalls"], volumes=probe)
    check_battery(results(output(c)))


def test_dangerous_syscalls_refused_in_exec(run, probe):
    c = run(["sleep", "30"], volumes=probe)
    r = c.exec_run(["/t/probe", "syscalls"])
    check_battery(results(r.output.decode()))


def test_seccomp_unconfined_opt_lifts_the_filter(run):
    c = run(["grep", "^Seccomp:", "/proc/self/status"], security_opt=["seccomp=unconfined"])
    assert output(c).strip() == "Seccomp:\t0"


def test_shocker_open_by_handle_at(run, probe):
    """open_by_handle_at with a guessed handle for the host filesystem's root
    inode, through a file bind-mounted from the host (Docker 2014)."""
    c = run(["/t/probe", "shocker", "/t/probe"], volumes=probe)
    found = results(output(c))
    rc, err = found["open_by_handle_at"]
    assert rc < 0 and err == errno.EPERM


def test_write_sysrq_trigger_fails(run):
    # 'h' only prints help to the kernel log, should the write ever succeed.
    c = run(["sh", "-c", "echo h > /proc/sysrq-trigger && echo WROTE; echo done"])
    out = output(c)
    assert "WROTE" not in out and "done" in out


def test_mount_and_unmasking_fail(run):
    c = run(["sh", "-c", "mount -t tmpfs none /mnt && echo MOUNTED; "
                         "umount /proc/kcore && echo UNMASKED; "
                         "mount -o remount,rw /proc/sys && echo REMOUNTED; "
                         "mount -t proc proc /mnt && echo PROC; echo done"])
    out = output(c)
    assert "done" in out
    for word in ("MOUNTED", "UNMASKED", "REMOUNTED", "PROC"):
        assert word not in out, out


def test_kernel_module_loading_fails(run, probe):
    c = run(["/t/probe", "syscalls"], volumes=probe)
    found = results(output(c))
    # EPERM from the filter (or from the missing CAP_SYS_MODULE); ENOSYS on a
    # kernel built without modules.
    for name in ("init_module", "finit_module", "delete_module"):
        assert found[name][0] < 0 and found[name][1] in (errno.EPERM, errno.ENOSYS), (name, found[name])


def test_masked_proc_files_are_empty(run):
    c = run(["sh", "-c", "for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do "
                         "[ -e $f ] && echo \"$f $(head -c 64 $f 2>/dev/null | wc -c)\"; done; "
                         "echo firmware $(ls /sys/firmware 2>/dev/null | wc -l)"])
    out = output(c)
    lines = dict(line.rsplit(" ", 1) for line in out.splitlines() if line.strip())
    assert lines.get("/proc/kcore", "0") == "0", out
    for name, size in lines.items():
        assert size == "0", (name, out)


def test_proc_sys_is_read_only(run):
    c = run(["sh", "-c", "echo 1 > /proc/sys/kernel/sysrq && echo WROTE; "
                         "echo '|/tmp/x' > /proc/sys/kernel/core_pattern && echo CORE; echo done"])
    out = output(c)
    assert "WROTE" not in out and "CORE" not in out and "done" in out


def _fd_targets(text: str) -> list[str]:
    return [line.split(" -> ", 1)[1] for line in text.splitlines() if " -> " in line]


def test_no_host_fd_or_cwd_in_container_or_exec(run):
    """CVE-2024-21626 class: no descriptor or working directory of the host
    process reaches the container (its init or an exec'd process)."""
    script = "ls -l /proc/self/fd/; echo cwd=$(readlink /proc/self/cwd); echo init=$(readlink /proc/1/cwd)"
    c = run(["sh", "-c", script + "; sleep 30"])
    time.sleep(0.2)
    r = c.exec_run(["sh", "-c", script])
    c.kill()
    for text in (output(c), r.output.decode()):
        for target in _fd_targets(text):
            assert target.startswith(("pipe:", "socket:", "/dev/null", "/dev/pts/", "/proc/")), text
        assert "cwd=/\n" in text and "init=/\n" in text, text


@pytest.mark.parametrize("fd", range(3, 12))
def test_workdir_through_leaked_fd_is_refused(croot, busybox, fd):
    """runc's CVE-2024-21626: cwd /proc/self/fd/N naming a host directory."""
    try:
        c = Container.run(busybox, ["sh", "-c", "ls ..; readlink /proc/self/cwd"], root=croot,
                          working_dir=f"/proc/self/fd/{fd}")
    except contain.ContainError:
        return  # refused at start: fine
    try:
        out = output(c)
        assert "(unreachable)" not in out
        # Had it worked, `ls ..` would list a host directory (etc, proc, usr...).
        assert not ({"etc", "usr", "var"} <= set(out.split())), out
    finally:
        c.remove(force=True)


def test_proc_exe_of_joining_process_is_out_of_reach(run, probe):
    """CVE-2019-5736 class: while processes join the container with exec,
    the container watches every new pid and tries to open /proc/PID/exe of
    it; a host binary must never be reachable (let alone writable)."""
    from contain.linux import runtime

    watched = [os.path.realpath(sys.executable), runtime.MONITOR_PATH]
    before = {p: sha256(p) for p in watched}
    c = run(["/t/probe", "exewatch", "4"], volumes=probe)
    deadline = time.monotonic() + 3.5
    n = 0
    while time.monotonic() < deadline:
        c.exec_run(["true"])
        n += 1
    out = output(c)
    assert n >= 3
    summary = [line for line in out.splitlines() if line.startswith("scanned=")]
    assert summary, out
    assert "host=0 " in summary[0] and summary[0].endswith("writable=0"), out
    assert "HOSTEXE" not in out and "WRITABLE" not in out
    assert {p: sha256(p) for p in watched} == before


def test_mknod_without_cap_mknod_fails(run):
    c = run(["sh", "-c", "mknod /dev/null2 c 1 3 && echo MADE; echo done"], cap_drop=["MKNOD"])
    out = output(c)
    assert "MADE" not in out and "done" in out


def test_device_outside_allowlist_cannot_be_opened(run, probe):
    """With CAP_MKNOD the node can be made (Docker allows mknod of any
    device), but the device cgroup refuses to open it."""
    major, minor = host_block_device()
    c = run(["/t/probe", "mknodopen", "/dev/hostdisk", "b", str(major), str(minor)], volumes=probe)
    found = results(output(c))
    assert found["mknod"][0] == 0, found  # allowed, as in Docker
    assert found["open_read"] == (-1, errno.EPERM), found
    assert found["open_write"] == (-1, errno.EPERM), found


def test_device_cgroup_rules_extend_the_allowlist(run, probe):
    major, minor = host_block_device()
    c = run(["/t/probe", "mknodopen", "/dev/hostdisk", "b", str(major), str(minor)], volumes=probe,
            device_cgroup_rules=[f"b {major}:{minor} r"])
    found = results(output(c))
    assert found["open_read"][0] >= 0, found
    assert found["open_write"] == (-1, errno.EPERM), found


def test_setuid_binary_does_not_elevate_under_no_new_privs(run, probe):
    c = run(["sleep", "30"], volumes=probe)
    setup = c.exec_run(["sh", "-c", "cp /t/probe /suidprobe && chown 0:0 /suidprobe && "
                                    "chmod 4755 /suidprobe && ls -ln /suidprobe"])
    assert setup.exit_code == 0 and setup.output.decode().startswith("-rwsr-xr-x"), setup.output
    r = c.exec_run(["/suidprobe", "euid"], user="1000")
    assert r.output.decode().split() == ["1000", "1000"], r.output


def test_ptrace_of_another_container_fails(run, probe):
    victim = run(["sleep", "30"])
    attacker = run(["sh", "-c", f"ls /proc | grep -qx {victim.pid} && echo VISIBLE; "
                                f"/t/probe ptrace {victim.pid}"], volumes=probe)
    out = output(attacker)
    found = results(out)
    assert "VISIBLE" not in out
    for name in ("kill0", "ptrace_attach", "ptrace_seize"):
        assert found[name][0] < 0, (name, found)
    assert found["ptrace_attach"][1] in (errno.ESRCH, errno.EPERM)
    assert victim.status == "running"


def test_other_containers_network_is_unreachable(run, probe):
    """B can neither reach a server on A's loopback nor share A's (or the
    host's) network namespace."""
    server = run(["/t/probe", "listen", "0.0.0.0", "18080", "20"], volumes=probe)
    time.sleep(0.3)
    client = run(["sh", "-c", "echo ns=$(readlink /proc/self/ns/net); "
                              "/t/probe connect 127.0.0.1 18080 1"], volumes=probe)
    out = output(client)
    assert results(out)["connect"][1] == errno.ECONNREFUSED, out
    ns = [line[3:] for line in out.splitlines() if line.startswith("ns=")][0]
    assert ns.startswith("net:[")
    assert ns != os.readlink(f"/proc/{server.pid}/ns/net")
    assert ns != os.readlink("/proc/self/ns/net")
    server.kill()
    accepted = results(output(server)).get("accept")
    assert accepted is None or accepted[0] < 0


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\nb", "evil\n", "a;b", "a b", "$(id)", "-rf",
                                  ".hidden", "x" * 300, "ok\x00bad", "tab\tname"])
def test_crafted_container_names_are_refused(croot, busybox, name):
    root = contain._root.get_root(croot)
    before = set(os.listdir(root.names))
    try:
        made = Container.create(busybox, ["true"], name=name, root=croot)
    except InvalidArgument:
        made = None
    if made is not None:
        made.remove(force=True)
        pytest.fail(f"container name {name!r} was accepted")
    assert set(os.listdir(root.names)) == before


@pytest.mark.parametrize("env", [{"A": "x\x00y"}, ["A=x\x00y"], {"A\x00B": "1"}, ["\x00=1"]])
def test_env_with_nul_is_refused(croot, busybox, env):
    try:
        made = Container.create(busybox, ["true"], environment=env, root=croot)
    except InvalidArgument:
        return
    made.remove(force=True)
    pytest.fail(f"environment {env!r} was accepted")


@pytest.mark.parametrize("hostname", ["evil\n10.0.0.1 victim", "a b", "../x", "x" * 100, "a;b"])
def test_crafted_hostnames_are_refused(croot, busybox, hostname):
    """A hostname ends up in /etc/hosts and the UTS namespace."""
    try:
        made = Container.create(busybox, ["true"], hostname=hostname, root=croot)
    except InvalidArgument:
        return
    made.remove(force=True)
    pytest.fail(f"hostname {hostname!r} was accepted")


def test_labels_are_data(run, croot):
    labels = {"com.example/evil": "line1\nline2\"}],\n", "k\nj": "v\x00w", "../x": "$(id)"}
    c = run(["true"], labels=labels)
    c.wait(timeout=WAIT)
    again = Container.get(c.id, root=croot)
    assert again.labels == labels
    assert c in Container.list(all=True, root=croot)
    assert again.inspect()["Config"]["Labels"] == labels


def test_sysctls_only_namespaced(run, croot, busybox):
    try:
        made = Container.create(busybox, ["true"], sysctls={"kernel.core_pattern": "|/evil"}, root=croot)
    except InvalidArgument:
        made = None
    if made is not None:
        made.remove(force=True)
        pytest.fail("kernel.core_pattern was accepted")
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        host_value = f.read().strip()
    want = "0" if host_value == "1" else "1"
    c = run(["cat", "/proc/sys/net/ipv4/ip_forward"], sysctls={"net.ipv4.ip_forward": want})
    assert output(c).strip() == want
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == host_value


def _host_responsive(limit: float = 5.0) -> float:
    t = time.monotonic()
    subprocess.run(["true"], check=True, timeout=limit)
    return time.monotonic() - t


def test_fork_bomb_is_contained(run, croot):
    c = run(["sh", "-c", "f() { f | f & }; f; sleep 20"], pids_limit=50)
    time.sleep(2)
    assert _host_responsive() < 5
    cg = contain._root.get_root(croot).cgroups.open(c.id)
    assert len(cg.pids()) <= 50
    t = time.monotonic()
    c.remove(force=True)
    assert time.monotonic() - t < 20


def test_memory_hog_is_contained(run):
    t = time.monotonic()
    c = run(["sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"], mem_limit="32m")
    assert _host_responsive() < 5
    assert c.wait(timeout=60) == 137
    assert time.monotonic() - t < 60
