"""Named volumes: directories that outlive containers.

A volume lives in <root>/volumes/<name>/: its data in _data/ (what containers
mount) and a small record, volume.json ({"Name", "Labels", "CreatedAt",
"Options"}).  A container mounts one by name (`volumes={"data": {"bind":
"/var/lib/x"}}` or `["data:/var/lib/x"]`); Container.create makes the
directory when the name is new, so a volume without a record is still a
volume (its record is made on first sight).

Anonymous volumes (an image's VOLUME paths) carry the label
`contain.volume.anonymous` and are removed with `container.remove(v=True)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
from typing import Any, Iterable, Mapping, Optional, Sequence

import attrs

from . import _names, _timefmt
from ._jsonfile import read_json, write_json as _write_json
from ._root import Root, RootArg, get_root
from .errors import Conflict, InvalidArgument, NotFound
from .storage.locks import FileLock

__all__ = ["Volume", "VolumeNotFound", "ANONYMOUS_LABEL"]

ANONYMOUS_LABEL = "contain.volume.anonymous"
_RECORD = "volume.json"


class VolumeNotFound(NotFound):
    pass


def _lock(r: Root) -> FileLock:
    return FileLock(os.path.join(r.path, "locks", "volumes.lock"))


def _created_from_mtime(path: str) -> str:
    return _timefmt.rfc3339(int(os.stat(path).st_mtime * 1_000_000_000))


@attrs.define(eq=False, repr=False)
class Volume:
    """A handle on one named volume."""

    name: str
    _root: Root = attrs.field(alias="root")

    def __repr__(self) -> str:
        return f"<Volume: {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Volume) and other.name == self.name and other._root is self._root

    def __hash__(self) -> int:
        return hash(self.name)

    # ------------------------------------------------------------ paths
    @property
    def _dir(self) -> str:
        return os.path.join(self._root.volumes, self.name)

    @property
    def mountpoint(self) -> str:
        """The host directory containers see (<root>/volumes/<name>/_data)."""
        return os.path.join(self._dir, "_data")

    # ------------------------------------------------------- attributes
    @property
    def attrs(self) -> dict:
        return self.inspect()

    def inspect(self) -> dict:
        """Shaped like `docker volume inspect`."""
        rec = self._record()
        return {
            "Name": self.name,
            "Driver": "local",
            "Mountpoint": self.mountpoint,
            "CreatedAt": rec.get("CreatedAt", ""),
            "Labels": dict(rec.get("Labels") or {}),
            "Options": dict(rec.get("Options") or {}),
            "Scope": "local",
        }

    @property
    def labels(self) -> dict:
        return dict(self._record().get("Labels") or {})

    @property
    def created(self) -> str:
        return self._record().get("CreatedAt", "")

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels

    def _record(self) -> dict:
        path = os.path.join(self._dir, _RECORD)
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            if not os.path.isdir(self.mountpoint):
                raise VolumeNotFound(f"no such volume: {self.name}") from None
            # Made by Container.create from a name: record it now.
            rec = {"Name": self.name, "Labels": {}, "Options": {},
                   "CreatedAt": _created_from_mtime(self.mountpoint)}
            with contextlib.suppress(OSError):
                _write_json(path, rec)
            return rec

    def users(self) -> list:
        """The containers (any state) whose record mounts this volume."""
        from .container import Container

        found = []
        for cid in _container_ids(self._root):
            state = _load_state(self._root, cid)
            if state is not None and self.mountpoint in _mount_sources(state):
                found.append(Container(cid, self._root))
        return found

    def size(self) -> int:
        """Bytes used by the data (apparent sizes, each inode once)."""
        total, seen = 0, set()
        for dirpath, dirnames, filenames in os.walk(self.mountpoint):
            for n in filenames + dirnames:
                try:
                    st = os.lstat(os.path.join(dirpath, n))
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size if stat.S_ISREG(st.st_mode) else 0
        return total

    # ------------------------------------------------------- making
    @classmethod
    def create(cls, name: Optional[str] = None, labels: Optional[Mapping[str, str]] = None, *,
               driver: str = "local", driver_opts: Optional[Mapping[str, str]] = None,
               root: RootArg = None) -> "Volume":
        """Create a volume (a 64-hex name when none is given).  Creating an
        existing name returns it, as Docker does, unless the labels differ."""
        if driver != "local":
            raise InvalidArgument(f"volume driver {driver!r}: only 'local' is available")
        if driver_opts:
            raise InvalidArgument("volume driver options are not supported")
        r = get_root(root)
        name = _names.check_name(name) if name is not None else secrets.token_hex(32)
        want = {str(k): str(v) for k, v in (labels or {}).items()}
        vol = cls(name, r)
        with _lock(r).exclusive():
            if os.path.exists(os.path.join(vol._dir, _RECORD)) or os.path.isdir(vol.mountpoint):
                have = vol.labels
                if labels is not None and have != want:
                    raise Conflict(f"volume {name!r} exists with other labels")
                return vol
            tmp = os.path.join(r.volumes, f".creating-{name}-{secrets.token_hex(4)}")
            os.makedirs(os.path.join(tmp, "_data"), mode=0o755)
            os.chmod(tmp, 0o701)
            _write_json(os.path.join(tmp, _RECORD), {
                "Name": name, "Labels": want, "Options": {}, "CreatedAt": _timefmt.now()})
            try:
                os.rename(tmp, vol._dir)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not os.path.isdir(vol.mountpoint):
                    raise
        return vol

    # ------------------------------------------------------- finding
    @classmethod
    def get(cls, name: str, *, root: RootArg = None) -> "Volume":
        r = get_root(root)
        if not _names.NAME_RE.match("/" + name.lstrip("/")):
            raise VolumeNotFound(f"no such volume: {name}")
        vol = cls(name.lstrip("/"), r)
        vol._record()  # raises VolumeNotFound
        return vol

    @classmethod
    def list(cls, *, filters: Optional[Mapping[str, Any]] = None,
             root: RootArg = None) -> list["Volume"]:
        """Every volume, by name; filters: {"label": "k" | "k=v" | [...],
        "name": "part", "dangling": True|False}."""
        r = get_root(root)
        vols = []
        for n in sorted(os.listdir(r.volumes)):
            if n.startswith(".") or not os.path.isdir(os.path.join(r.volumes, n, "_data")):
                continue
            vols.append(cls(n, r))
        if filters:
            vols = [v for v in vols if _matches(v, filters)]
        return vols

    # ------------------------------------------------------- removing
    def remove(self, force: bool = False) -> None:
        """Delete the volume and its data; refused (Conflict) while a
        container's record mounts it, unless force=True."""
        with _lock(self._root).exclusive():
            if not os.path.isdir(self._dir):
                raise VolumeNotFound(f"no such volume: {self.name}")
            if not force:
                users = self.users()
                if users:
                    ids = ", ".join(c.short_id for c in users)
                    raise Conflict(f"remove {self.name}: volume is in use - [{ids}]")
            trash = os.path.join(self._root.volumes, f".removing-{self.name}-{secrets.token_hex(4)}")
            os.rename(self._dir, trash)
        shutil.rmtree(trash, ignore_errors=True)

    @classmethod
    def prune(cls, *, all: bool = False, filters: Optional[Mapping[str, Any]] = None,
              root: RootArg = None) -> dict:
        """Remove unused volumes: anonymous ones only (Docker >= 23), every
        unused one with all=True.  Returns Docker's prune report."""
        r = get_root(root)
        used = set()
        for cid in _container_ids(r):
            state = _load_state(r, cid)
            if state is not None:
                used |= _mount_sources(state)
        deleted, reclaimed = [], 0
        for v in cls.list(filters=filters, root=r):
            if v.mountpoint in used or not (all or v.anonymous):
                continue
            size = v.size()
            with contextlib.suppress(NotFound, Conflict):
                v.remove()
                deleted.append(v.name)
                reclaimed += size
        return {"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}

    def reload(self) -> "Volume":
        self._record()
        return self


# ------------------------------------------------------------------ helpers
def _container_ids(r: Root) -> list[str]:
    try:
        return [c for c in os.listdir(r.containers) if not c.startswith(".")]
    except FileNotFoundError:
        return []


def _load_state(r: Root, cid: str) -> Optional[dict]:
    return read_json(os.path.join(r.container_dir(cid), "state.json"))


def _mount_sources(state: dict) -> set:
    """Host paths a container record mounts (HostConfig.Binds and Mounts)."""
    found = set()
    for b in (state.get("HostConfig") or {}).get("Binds") or ():
        found.add(b.split(":", 1)[0])
    for m in state.get("Mounts") or ():
        if m.get("Source"):
            found.add(m["Source"])
    return found


def _matches(v: Volume, filters: Mapping[str, Any]) -> bool:
    def as_list(x: Any) -> list:
        return list(x) if isinstance(x, (list, tuple, set)) else [x]

    labels = v.labels
    for want in as_list(filters.get("label", [])):
        k, sep, val = str(want).partition("=")
        if k not in labels or (sep and labels[k] != val):
            return False
    for part in as_list(filters.get("name", [])):
        if str(part) not in v.name:
            return False
    if "dangling" in filters:
        dangling = str(filters["dangling"]).lower() in ("1", "true")
        if dangling == bool(v.users()):
            return False
    return True


# ------------------------------------------- anonymous volumes (VOLUME paths)
def anonymous_mounts(image_volumes: Iterable[str], taken: Sequence[str], *,
                     lowerdirs: Sequence[str] = (), root: RootArg = None) -> list[tuple[str, str]]:
    """For Container.create: a fresh anonymous volume for each of the image's
    VOLUME paths no mount of the container covers already, filled with what
    the image holds at that path (as Docker copies it on first use).
    Returns [(host _data path, container path)] to bind-mount read-write.
    `lowerdirs` are the image's layers, topmost first (store.lowerdirs)."""
    r = get_root(root)
    out = []
    covered = {os.path.normpath(t) for t in taken}
    for path in sorted(image_volumes or ()):
        dest = os.path.normpath("/" + path.lstrip("/"))
        if dest in covered:
            continue
        vol = Volume.create(labels={ANONYMOUS_LABEL: ""}, root=r)
        if lowerdirs:
            copy_from_layers(lowerdirs, dest, vol.mountpoint)
        out.append((vol.mountpoint, dest))
    return out


def remove_anonymous(state: dict, *, root: RootArg = None) -> list[str]:
    """For Container.remove(v=True): remove the anonymous volumes the record
    mounts (named ones stay, as in Docker).  Returns their names."""
    r = get_root(root)
    removed = []
    prefix = os.path.join(r.volumes, "")
    for src in _mount_sources(state):
        if not (src.startswith(prefix) and src.endswith("/_data")):
            continue
        name = src[len(prefix):-len("/_data")]
        if "/" in name:
            continue
        with contextlib.suppress(NotFound, Conflict):
            vol = Volume(name, r)
            if vol.anonymous:
                # Refused if another container mounts it too (--volumes-from).
                others = [c for c in vol.users() if c.id != state.get("Id")]
                if not others:
                    vol.remove(force=True)
                    removed.append(name)
    return removed


def copy_from_layers(lowerdirs: Sequence[str], path: str, dest: str) -> None:
    """Copy what an overlay of `lowerdirs` (topmost first) shows at `path`
    into `dest`, honouring whiteouts (0/0 character devices) and opaque dirs."""
    rel = path.lstrip("/")
    for layer in reversed(list(lowerdirs)):
        src = os.path.join(layer, rel)
        if os.path.islink(src) or not os.path.isdir(src):
            if os.path.lexists(src) and _is_whiteout(src):
                _clear(dest)
            continue
        if _is_opaque(src):
            _clear(dest)
        _merge_tree(src, dest)


def _is_whiteout(p: str) -> bool:
    st = os.lstat(p)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(p: str) -> bool:
    for attr in ("trusted.overlay.opaque", "user.overlay.opaque"):
        with contextlib.suppress(OSError):
            if os.getxattr(p, attr, follow_symlinks=False) == b"y":
                return True
    return False


def _clear(d: str) -> None:
    for n in os.listdir(d):
        p = os.path.join(d, n)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


def _merge_tree(src: str, dst: str) -> None:
    for n in os.listdir(src):
        s, d = os.path.join(src, n), os.path.join(dst, n)
        st = os.lstat(s)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # whiteout
            if os.path.isdir(d) and not os.path.islink(d):
                shutil.rmtree(d)
            elif os.path.lexists(d):
                os.unlink(d)
            continue
        if stat.S_ISDIR(st.st_mode):
            if os.path.lexists(d) and not os.path.isdir(d):
                os.unlink(d)
            if _is_opaque(s) and os.path.isdir(d):
                shutil.rmtree(d)
            os.makedirs(d, exist_ok=True)
            _merge_tree(s, d)
            shutil.copystat(s, d, follow_symlinks=False)
            os.lchown(d, st.st_uid, st.st_gid)
            continue
        if os.path.isdir(d) and not os.path.islink(d):
            shutil.rmtree(d)
        elif os.path.lexists(d):
            os.unlink(d)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISREG(st.st_mode):
            shutil.copy2(s, d, follow_symlinks=False)
        else:
            continue  # devices, fifos, sockets: not copied into volumes
        os.lchown(d, st.st_uid, st.st_gid)
