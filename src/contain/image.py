"""Images: what containers start from.

An Image is a light handle on a record of the store (see storage/store.py):
the id is the config digest, as in Docker.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import attrs

from . import _imageops
from ._imageops import ProgressEvent
from ._root import RootArg, get_root
from .oci.imageconfig import ImageConfig
from .storage.store import ImageRecord


@attrs.define(eq=False, repr=False)
class Image:
    _record: ImageRecord = attrs.field(alias="record")
    _root: Any = attrs.field(alias="root")

    def __repr__(self) -> str:
        tags = ", ".join(repr(t) for t in self.tags)
        return f"<Image: {tags or self.short_id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # ---------------------------------------------------------- attributes
    @property
    def id(self) -> str:
        return self._record.id

    @property
    def short_id(self) -> str:
        return self._record.id.split(":", 1)[1][:12]

    @property
    def tags(self) -> list[str]:
        return list(self._record.repo_tags)

    @property
    def digest(self) -> Optional[str]:
        d = self._record.repo_digests
        return d[0].split("@", 1)[1] if d else None

    @property
    def size(self) -> int:
        return self._record.size

    @property
    def created(self) -> Optional[str]:
        return self._record.config.created

    @property
    def config(self):
        """The container config of the image (env, cmd, entrypoint, working_dir, user, ...)."""
        return self._record.config.config

    @property
    def image_config(self) -> ImageConfig:
        return self._record.config

    @property
    def labels(self) -> dict:
        return dict(self.config.labels or {})

    @property
    def layers(self):
        return list(self._record.layers)

    def history(self) -> list[dict]:
        return [attrs.asdict(h) for h in self._record.config.history]

    # ------------------------------------------------------------- finding
    @classmethod
    def get(cls, ref: str, *, root: RootArg = None) -> "Image":
        """By "name[:tag]", "name@digest", id or unique id prefix."""
        r = get_root(root)
        return cls(r.store.resolve(ref), r)

    @classmethod
    def list(cls, *, root: RootArg = None) -> list["Image"]:
        r = get_root(root)
        return [cls(rec, r) for rec in r.store.images()]

    # ------------------------------------------------------------- making
    @classmethod
    def from_directory(cls, path: Union[str, os.PathLike], *, tag: Optional[str] = None,
                       config: Optional[Mapping[str, Any]] = None, root: RootArg = None) -> "Image":
        """An image of one layer holding the directory tree (a root filesystem).
        `config` sets image config fields: {"Cmd": [...], "Env": [...], ...}."""
        from .oci.archive import import_rootfs

        r = get_root(root)
        return cls(import_rootfs(r.store, os.fspath(path), tag=tag, config_changes=config), r)

    @classmethod
    def from_tarball(cls, path: Union[str, os.PathLike], *, tag: Optional[str] = None,
                     config: Optional[Mapping[str, Any]] = None, root: RootArg = None) -> "Image":
        """Like `docker import`: a rootfs tarball (plain, gzip or zstd) as a one-layer image."""
        from .oci.archive import import_rootfs

        r = get_root(root)
        return cls(import_rootfs(r.store, os.fspath(path), tag=tag, config_changes=config), r)

    @classmethod
    def pull(cls, ref: str, *, tag: Optional[str] = None, platform: Optional[str] = None,
             progress: Optional[Callable[[ProgressEvent], None]] = None,
             insecure: Optional[bool] = None, root: RootArg = None) -> "Image":
        """`docker pull`: download, verify and unpack; bars in a terminal unless `progress`."""
        r = get_root(root)
        return cls(_imageops.pull(r, f"{ref}:{tag}" if tag else ref, platform=platform,
                                  progress=progress, insecure=insecure), r)

    def push(self, ref: Optional[str] = None, *, compression: str = "gzip",
             progress: Optional[Callable[[ProgressEvent], None]] = None,
             insecure: Optional[bool] = None) -> str:
        """`docker push` to `ref` (default: the first tag); returns the manifest digest."""
        digest = _imageops.push(self._root, self._record, ref, compression=compression,
                                progress=progress, insecure=insecure)
        self.reload()  # a push of the stored manifest adds a repo digest
        return digest

    @classmethod
    def search(cls, term: str, *, registry: Optional[str] = None, limit: int = 25,
               insecure: Optional[bool] = None) -> list[dict]:
        """`docker search`: [{"name", "description", "star_count", ...}]."""
        return _imageops.search(term, registry=registry, limit=limit, insecure=insecure)

    def save(self, path: Union[str, os.PathLike], *, format: str = "docker-archive") -> None:
        """`docker save` of this image with all its tags: docker-archive, oci-archive, oci-dir."""
        _imageops.save(self._root, self.tags or [self.id], path, format=format)

    @classmethod
    def save_all(cls, images: Sequence[Union[str, "Image"]], path: Union[str, os.PathLike], *,
                 format: str = "docker-archive", root: RootArg = None) -> None:
        """Several images (refs, or Images with all their tags) in one archive."""
        refs = [r for i in images for r in ((i.tags or [i.id]) if isinstance(i, Image) else [i])]
        owner = next((i._root for i in images if isinstance(i, Image)), None)
        _imageops.save(root if root is not None else owner, refs, path, format=format)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], *, root: RootArg = None) -> list["Image"]:
        """`docker load` of a docker-archive or OCI layout (tar or directory)."""
        r = get_root(root)
        return [cls(rec, r) for rec in _imageops.load(r, path)]

    # ------------------------------------------------------------ changing
    def tag(self, repository: str, tag: Optional[str] = None) -> "Image":
        ref = f"{repository}:{tag}" if tag else repository
        self._record = self._root.store.tag(self.id, ref)
        return self

    def reload(self) -> "Image":
        self._record = self._root.store.resolve(self.id)
        return self

    def remove(self, force: bool = False) -> list[dict]:
        """Untag and delete (Docker's rmi); refused while a container uses it
        unless force=True."""
        from .container import Container

        def in_use(image_id: str) -> bool:
            for c in Container.list(all=True, root=self._root):
                try:
                    if c._load()["Image"] == image_id:
                        return True
                except Exception:
                    continue
            return False

        return self._root.store.remove_image(self.id, force=force, in_use=in_use)
