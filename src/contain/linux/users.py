"""Resolve a Docker `user` string ("name", "uid", "name:group", "uid:gid")
against the container's /etc/passwd and /etc/group, read from its layers."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import attrs

from ..errors import InvalidArgument


@attrs.frozen
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


def _read_layered(layers: Sequence[str], rel: str) -> str:
    """The file as the merged root shows it: the top-most layer that has it."""
    for layer in layers:
        path = os.path.join(layer, rel)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not os.path.isfile(path) or os.path.islink(path):
            return ""  # a whiteout (char 0/0) or something odd: treat as absent
        if st.st_size > 16 * 1024 * 1024:
            raise InvalidArgument(f"/{rel} in the image is too large to read")
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    return ""


def _entries(text: str):
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        yield line.split(":")


def resolve_user(spec: Optional[str], layers: Sequence[str]) -> ResolvedUser:
    """`layers` are directories top-most first (an upper dir, then the image's)."""
    spec = (spec or "").strip()
    if not spec:
        spec = "0"
    user, _, group = spec.partition(":")
    passwd = list(_entries(_read_layered(layers, "etc/passwd")))
    uid: Optional[int] = None
    gid: Optional[int] = None
    home = "/"
    name = None
    for e in passwd:
        if len(e) < 6:
            continue
        if e[0] == user or (user.isdigit() and e[2] == user):
            try:
                uid, gid, home, name = int(e[2]), int(e[3]), e[5] or "/", e[0]
            except ValueError:
                continue
            break
    if uid is None:
        if not user.isdigit():
            raise InvalidArgument(f"unable to find user {user}: no matching entries in passwd file")
        uid, gid = int(user), 0 if not group else None
    groups = list(_entries(_read_layered(layers, "etc/group")))
    if group:
        gid = None
        for e in groups:
            if len(e) >= 3 and (e[0] == group or (group.isdigit() and e[2] == group)):
                gid = int(e[2])
                break
        if gid is None:
            if not group.isdigit():
                raise InvalidArgument(f"unable to find group {group}: no matching entries in group file")
            gid = int(group)
    extra: list[int] = []
    if name:
        for e in groups:
            if len(e) >= 4 and name in e[3].split(",") and e[2].isdigit():
                g = int(e[2])
                if g != gid and g not in extra:
                    extra.append(g)
    assert gid is not None
    return ResolvedUser(uid, gid, tuple(extra), home)


_CACHE: dict = {}


def resolve_user_over(spec: Optional[str], upper: str, lowers: Sequence[str]) -> ResolvedUser:
    """resolve_user for a writable layer over read-only ones (an image's
    layers never change): while the writable layer holds neither
    /etc/passwd nor /etc/group, the answer from the read-only layers is
    kept, so a start does not read and parse them again."""
    if any(os.path.lexists(os.path.join(upper, rel)) for rel in ("etc/passwd", "etc/group")):
        return resolve_user(spec, [upper, *lowers])
    key = (spec, tuple(lowers))
    found = _CACHE.get(key)
    if found is None:
        if len(_CACHE) >= 256:
            _CACHE.clear()
        found = _CACHE[key] = resolve_user(spec, list(lowers))
    return found
