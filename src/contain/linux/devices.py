"""The device allowlist: which device nodes a container may open or create.

Docker's rules (`default_rules`): deny everything, then allow mknod of any
node (creating one is harmless; opening it is what is checked) and rwm on
/dev/null, zero, full, random, urandom, tty, console, ptmx and the pts
slaves.  A container with CAP_MKNOD can make /dev/sda, but cannot open it.

Two mechanisms carry the rules, depending on the hierarchy:
  - v1: the `devices` controller (`devices.deny` / `devices.allow` files);
  - v2: a BPF_PROG_TYPE_CGROUP_DEVICE program, written here in raw eBPF
    instructions, loaded with bpf(2) through ctypes and attached with
    BPF_PROG_ATTACH to the cgroup directory (the kernel keeps it alive with
    the cgroup; nothing is pinned).  On a hybrid host both apply when the
    container is also placed in the unified tree.

`apply(cgroup, rules)` does whichever the cgroup has; `apply_v1(dir, rules)`
and `attach_v2(dir, rules)` take a directory (any tree, for tests).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import functools
import os
import platform
import re
import struct
from typing import Any, Iterable, Optional, Sequence

import attrs

from ..errors import InvalidArgument, RuntimeFailure


@attrs.frozen
class DeviceRule:
    """One line of a device cgroup list: `c 1:3 rwm`, `a *:* rwm`, `b 8:* r`.
    None for major or minor means `*`."""

    type: str  # "a" (all), "c" (char), "b" (block)
    major: Optional[int] = None
    minor: Optional[int] = None
    access: str = "rwm"
    allow: bool = True

    def __attrs_post_init__(self) -> None:
        if self.type not in ("a", "c", "b"):
            raise InvalidArgument(f"device rule: type must be a, b or c, not {self.type!r}")
        if not self.access or set(self.access) - set("rwm") or len(set(self.access)) != len(self.access):
            raise InvalidArgument(f"device rule: access must be letters of 'rwm', not {self.access!r}")
        for v in (self.major, self.minor):
            if v is not None and not (isinstance(v, int) and 0 <= v < (1 << 32)):
                raise InvalidArgument(f"device rule: invalid device number {v!r}")

    @property
    def line(self) -> str:
        """The text the v1 devices.allow/deny files take."""
        if self.type == "a":
            return "a"
        num = lambda v: "*" if v is None else str(v)  # noqa: E731
        return f"{self.type} {num(self.major)}:{num(self.minor)} {self.access}"

    @classmethod
    def parse(cls, text: str, allow: bool = True) -> "DeviceRule":
        """Docker's --device-cgroup-rule syntax: 'c 1:3 rwm', 'a *:* rwm'."""
        if not isinstance(text, str):
            raise InvalidArgument(f"invalid device cgroup rule: {text!r}")
        m = re.fullmatch(r"\s*([abc])\s+(\*|\d+):(\*|\d+)\s+([rwm]{1,3})\s*", text)
        if m is None:
            m2 = re.fullmatch(r"\s*a\s*", text)
            if m2:
                return cls("a", None, None, "rwm", allow)
            raise InvalidArgument(f"invalid device cgroup rule: {text!r} (expected e.g. 'c 1:3 rwm')")
        kind, major, minor, access = m.groups()
        num = lambda v: None if v == "*" else int(v)  # noqa: E731
        if kind == "a":
            major = minor = "*"
        return cls(kind, num(major), num(minor), access, allow)


def default_rules() -> list[DeviceRule]:
    """Docker's default device cgroup (moby oci/defaults + runc's allowed devices)."""
    allow = DeviceRule
    return [
        DeviceRule("a", access="rwm", allow=False),
        allow("c", None, None, "m"),  # mknod of any char device
        allow("b", None, None, "m"),  # mknod of any block device
        allow("c", 1, 3),  # /dev/null
        allow("c", 1, 5),  # /dev/zero
        allow("c", 1, 7),  # /dev/full
        allow("c", 1, 8),  # /dev/random
        allow("c", 1, 9),  # /dev/urandom
        allow("c", 5, 0),  # /dev/tty
        allow("c", 5, 1),  # /dev/console
        allow("c", 5, 2),  # /dev/ptmx
        allow("c", 136, None),  # /dev/pts/*
    ]


def privileged_rules() -> list[DeviceRule]:
    return [DeviceRule("a", access="rwm", allow=True)]


def parse_rules(texts: Iterable[str]) -> list[DeviceRule]:
    """device_cgroup_rules=["c 10:200 rwm", ...] -> allow rules."""
    if isinstance(texts, str):
        raise InvalidArgument("device_cgroup_rules must be a list of rules, not one string")
    return [DeviceRule.parse(t) for t in texts or ()]


def rules_for(privileged: bool, extra: Iterable[str] = ()) -> list[DeviceRule]:
    """The list a container gets: Docker's defaults (every device when
    privileged) followed by its device_cgroup_rules lines."""
    if isinstance(extra, str):
        raise InvalidArgument("device_cgroup_rules must be a list of rules, not one string")
    return list(_rules_for(bool(privileged), tuple(extra or ())))


@functools.lru_cache(maxsize=64)  # every start asks; the rules are frozen
def _rules_for(privileged: bool, extra: tuple[str, ...]) -> tuple[DeviceRule, ...]:
    base = privileged_rules() if privileged else default_rules()
    return tuple(base + parse_rules(list(extra)))


# --------------------------------------------------------------------- v1
@functools.lru_cache(maxsize=256)
def _line_bytes(rule: DeviceRule) -> bytes:
    return rule.line.encode()


def v1_writes(directory: str, rules: Sequence[DeviceRule]) -> list[tuple[str, str]]:
    """What apply_v1 writes, as (file, rule) pairs in order, for a cgroup
    made natively (runtime.CgroupPlan)."""
    allow, deny = directory + "/devices.allow", directory + "/devices.deny"
    return [(allow if rule.allow else deny, rule.line) for rule in rules]


def apply_v1(directory: str, rules: Sequence[DeviceRule]) -> None:
    """Write `rules` in order into a v1 devices cgroup directory.  Must be
    done before any process is in the cgroup (the list can only shrink
    below an ancestor's, and "deny a" fails once children exist)."""
    fds: dict[str, int] = {}  # each file opened once: every write() is one rule
    try:
        for rule in rules:
            name = "devices.allow" if rule.allow else "devices.deny"
            try:
                if name not in fds:
                    fds[name] = os.open(directory + "/" + name, os.O_WRONLY | os.O_CLOEXEC)
                os.write(fds[name], _line_bytes(rule))
            except OSError as exc:
                raise RuntimeFailure("device cgroup", exc.errno or 0,
                                     f"{os.path.join(directory, name)}: {rule.line}") from None
    finally:
        for fd in fds.values():
            os.close(fd)


# --------------------------------------------------------------------- v2
# eBPF instruction encoding (linux/bpf.h): u8 code, u8 dst:4|src:4, s16 off, s32 imm.
_BPF_LDX_MEM_W = 0x61
_BPF_ALU64_AND_K = 0x57
_BPF_ALU64_RSH_K = 0x77
_BPF_ALU64_MOV_K = 0xB7
_BPF_ALU64_MOV_X = 0xBF
_BPF_JMP_JNE_K = 0x55
_BPF_JMP_JA = 0x05
_BPF_EXIT = 0x95

# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
# access_type = (access << 16) | type
_DEV_BLOCK = 1
_DEV_CHAR = 2
_ACC = {"m": 1, "r": 2, "w": 4}

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

_SYS_BPF = {"x86_64": 321, "aarch64": 280}


def _bpf_insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _signed32(v: int) -> int:
    return v - (1 << 32) if v >= (1 << 31) else v


def bpf_program(rules: Sequence[DeviceRule]) -> bytes:
    """A cgroup device program with v1 list semantics: a leading "a" rule
    sets the default (deny unless it allows), then the last matching rule
    wins.  Returns 1 (allow) or 0 (deny)."""
    default = False
    body = list(rules)
    if body and body[0].type == "a":
        default = body[0].allow
        body = body[1:]
    insns: list[bytes] = [
        # r2 = type, r3 = access, r4 = major, r5 = minor (r1 = ctx)
        _bpf_insn(_BPF_LDX_MEM_W, dst=2, src=1, off=0),
        _bpf_insn(_BPF_ALU64_AND_K, dst=2, imm=0xFFFF),
        _bpf_insn(_BPF_LDX_MEM_W, dst=3, src=1, off=0),
        _bpf_insn(_BPF_ALU64_RSH_K, dst=3, imm=16),
        _bpf_insn(_BPF_LDX_MEM_W, dst=4, src=1, off=4),
        _bpf_insn(_BPF_LDX_MEM_W, dst=5, src=1, off=8),
    ]
    # The last rule in the list decides first.
    for rule in reversed(body):
        block: list[tuple[str, Any]] = []  # ("jne", (reg, imm)) or raw bytes
        if rule.type == "a":
            # Matches everything: the rest of the list cannot matter.
            block = []
        else:
            block.append(("jne", (2, _DEV_CHAR if rule.type == "c" else _DEV_BLOCK)))
        mask = sum(_ACC[c] for c in rule.access)
        checks: list[bytes] = []
        if mask != 7:
            # The access asked for must be within the rule's: (r3 & ~mask) == 0.
            checks.append(_bpf_insn(_BPF_ALU64_MOV_X, dst=1, src=3))
            checks.append(_bpf_insn(_BPF_ALU64_AND_K, dst=1, imm=~mask & 7))
        code: list[tuple[str, Any]] = list(block)
        if checks:
            code += [("raw", c) for c in checks]
            code.append(("jne", (1, 0)))
        if rule.major is not None:
            code.append(("jne", (4, _signed32(rule.major))))
        if rule.minor is not None:
            code.append(("jne", (5, _signed32(rule.minor))))
        tail = [_bpf_insn(_BPF_ALU64_MOV_K, dst=0, imm=1 if rule.allow else 0),
                _bpf_insn(_BPF_EXIT)]
        n = len(code) + len(tail)
        for i, (kind, v) in enumerate(code):
            if kind == "raw":
                insns.append(v)
            else:
                reg, imm = v
                # Skip to the instruction after this rule's exit.
                insns.append(_bpf_insn(_BPF_JMP_JNE_K, dst=reg, off=n - (i + 1), imm=imm))
        insns += tail
        if rule.type == "a":
            break
    insns += [_bpf_insn(_BPF_ALU64_MOV_K, dst=0, imm=1 if default else 0), _bpf_insn(_BPF_EXIT)]
    return b"".join(insns)


_libc: Any = None


def _syscall_bpf(cmd: int, attr: ctypes.Array) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    machine = platform.machine()
    nr = _SYS_BPF.get({"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine))
    if nr is None:
        raise RuntimeFailure("bpf", _errno.ENOSYS, f"unsupported architecture {machine}")
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        return -ctypes.get_errno()
    return ret


def load_program(rules: Sequence[DeviceRule]) -> int:
    """Load the program for `rules`; returns its fd (close-on-exec)."""
    prog = bpf_program(rules)
    insns = ctypes.create_string_buffer(prog, len(prog))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(65536)
    attr = ctypes.create_string_buffer(128)
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license,
    # log_level, log_size, log_buf, kern_version, prog_flags, prog_name[16]
    struct.pack_into("<IIQQIIQII16s", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(prog) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license_), 1, len(log),
                     ctypes.addressof(log), 0, 0, b"contain_devices")
    fd = _syscall_bpf(BPF_PROG_LOAD, attr)
    if fd < 0:
        detail = log.value.decode(errors="replace").strip().splitlines()
        raise RuntimeFailure("load device program", -fd, detail[-1] if detail else "")
    os.set_inheritable(fd, False)
    return fd


def attach_v2(directory: str, rules: Sequence[DeviceRule]) -> None:
    """Load the program for `rules` and attach it to the cgroup at `directory`
    (BPF_F_ALLOW_MULTI: programs of ancestors, e.g. systemd's, still run and
    must allow too)."""
    prog_fd = load_program(rules)
    try:
        try:
            cg_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeFailure("attach device program", exc.errno or 0, directory) from None
        try:
            attr = ctypes.create_string_buffer(128)
            # target_fd, attach_bpf_fd, attach_type, attach_flags
            struct.pack_into("<IIII", attr, 0, cg_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
            rc = _syscall_bpf(BPF_PROG_ATTACH, attr)
            if rc < 0:
                raise RuntimeFailure("attach device program", -rc, directory)
        finally:
            os.close(cg_fd)
    finally:
        os.close(prog_fd)


def attached_programs(directory: str) -> int:
    """How many device programs are attached to the cgroup itself."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ids = (ctypes.c_uint32 * 64)()
        attr = ctypes.create_string_buffer(128)
        # target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt
        struct.pack_into("<IIIIQI", attr, 0, fd, BPF_CGROUP_DEVICE, 0, 0,
                         ctypes.addressof(ids), 64)
        rc = _syscall_bpf(BPF_PROG_QUERY, attr)
        if rc < 0:
            raise RuntimeFailure("query device programs", -rc, directory)
        return struct.unpack_from("<I", attr, 24)[0]
    finally:
        os.close(fd)


# ------------------------------------------------------------------ facade
V1_KEY = "devices"
V2_KEY = "unified"


def apply(cgroup: Any, rules: Sequence[DeviceRule]) -> None:
    """Apply `rules` to a `cgroups.Cgroup` before its first process enters:
    v1 through its `devices` directory, v2 through its unified directory
    (both on a hybrid host where the container is tracked in the v2 tree)."""
    paths = getattr(cgroup, "paths", {})
    applied = False
    if paths.get(V1_KEY):
        apply_v1(paths[V1_KEY], rules)
        applied = True
    if paths.get(V2_KEY):
        try:
            attach_v2(paths[V2_KEY], rules)
            applied = True
        except RuntimeFailure:
            # On a hybrid host the v1 controller already enforces the list;
            # on a pure v2 host the program is the only guard: fail.
            if not applied:
                raise
    if not applied:
        raise RuntimeFailure("device cgroup", _errno.ENOENT,
                             "the container's cgroup has neither a v1 devices nor a v2 directory")


__all__ = ["DeviceRule", "default_rules", "privileged_rules", "parse_rules", "rules_for", "apply",
           "apply_v1", "attach_v2", "bpf_program", "load_program", "attached_programs"]
