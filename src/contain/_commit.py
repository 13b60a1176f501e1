"""Commit: a container's writable layer (or any overlay upper directory) as a new image.

As ``docker commit``: the upper directory is packed into one gzip layer (whiteouts
become ``.wh.`` entries), the new config is the base image's config with the
container's own settings (Cmd, Entrypoint, Env, WorkingDir, User, Labels, ...) and
the ``changes`` (Dockerfile instructions: ``CMD``, ``ENV``, ``EXPOSE``, ``LABEL``,
``USER``, ``WORKDIR``, ``VOLUME``, ``ENTRYPOINT``, ``ONBUILD``, ``STOPSIGNAL``,
``HEALTHCHECK``) applied on top, a history entry is appended and the image is
stored and tagged. An upper directory with nothing in it adds no layer, only a
history entry marked ``empty_layer`` (as Docker does for an empty diff).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import signal as _signal
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import attrs

from ._root import RootArg, get_root
from .errors import Conflict, ContainError, InvalidArgument
from .oci import mediatypes as mt
from .oci.imageconfig import (
    ContainerConfig,
    Descriptor,
    HistoryEntry,
    ImageConfig,
    RootFS,
    build_manifest,
    host_platform,
)
from .storage.store import ImageRecord, Store

__all__ = ["commit", "commit_directory", "apply_instruction", "parse_changes", "COMMIT_INSTRUCTIONS"]

COMMIT_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER",
                       "VOLUME", "WORKDIR", "STOPSIGNAL", "HEALTHCHECK")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _is_empty_dir(path: str) -> bool:
    with os.scandir(path) as it:
        return next(it, None) is None


def _env_lookup(env: Sequence[str]) -> Callable[[str], Optional[str]]:
    table = {}
    for item in env:
        k, _, v = item.partition("=")
        table[k] = v
    return table.get


def _set_env(env: List[str], key: str, value: str) -> List[str]:
    # Docker keeps an existing variable in its place and appends new ones.
    out = list(env)
    for i, e in enumerate(out):
        if e.partition("=")[0] == key:
            out[i] = f"{key}={value}"
            return out
    return out + [f"{key}={value}"]


def apply_instruction(config: ContainerConfig, instruction, *,
                      lookup: Optional[Callable[[str], Optional[str]]] = None,
                      escape: str = "\\") -> ContainerConfig:
    """The config after a config-changing Dockerfile instruction (already parsed).

    Variables are substituted with ``lookup`` (default: the config's own Env) for the
    instructions Docker expands. WORKDIR is resolved against the current WorkingDir.
    """
    from .dockerfile import parser as p

    if lookup is None:
        lookup = _env_lookup(config.env or [])
    ins = instruction.expand(lookup, escape)
    if isinstance(ins, p.Env):
        env = list(config.env or [])
        for k, v in ins.pairs:
            if not k:
                raise ins.error("ENV names can not be blank")
            env = _set_env(env, k, v)
        return attrs.evolve(config, env=env)
    if isinstance(ins, p.Label):
        labels = dict(config.labels or {})
        for k, v in ins.pairs:
            if not k:
                raise ins.error("LABEL names can not be blank")
            labels[k] = v
        return attrs.evolve(config, labels=labels)
    if isinstance(ins, p.Cmd):
        return attrs.evolve(config, cmd=ins.argv(config.shell or p.DEFAULT_SHELL),
                            args_escaped=None)
    if isinstance(ins, p.Entrypoint):
        argv = ins.argv(config.shell or p.DEFAULT_SHELL) if ins.args else None
        # As Docker: a new ENTRYPOINT resets a CMD inherited from the base image.
        return attrs.evolve(config, entrypoint=argv, cmd=None)
    if isinstance(ins, p.Expose):
        ports = dict(config.exposed_ports or {})
        for spec in ins.port_specs():
            ports[spec] = {}
        return attrs.evolve(config, exposed_ports=ports)
    if isinstance(ins, p.Volume):
        volumes = dict(config.volumes or {})
        for path in ins.paths:
            volumes[path] = {}
        return attrs.evolve(config, volumes=volumes)
    if isinstance(ins, p.User):
        return attrs.evolve(config, user=ins.user)
    if isinstance(ins, p.Workdir):
        path = ins.path
        if not path:
            raise ins.error("WORKDIR can not be empty")
        if not path.startswith("/"):
            path = os.path.join(config.working_dir or "/", path)
        return attrs.evolve(config, working_dir=os.path.normpath(path).replace("//", "/"))
    if isinstance(ins, p.Stopsignal):
        sig = ins.signal
        if not _valid_signal(sig):
            raise ins.error(f"invalid signal: {sig}", sig)
        return attrs.evolve(config, stop_signal=sig)
    if isinstance(ins, p.Healthcheck):
        return attrs.evolve(config, healthcheck=ins.to_config())
    if isinstance(ins, p.Shell):
        return attrs.evolve(config, shell=list(ins.shell))
    if isinstance(ins, p.Onbuild):
        return attrs.evolve(config, on_build=[*(config.on_build or []), ins.expression])
    if isinstance(ins, p.Maintainer):
        return config  # MAINTAINER sets the image's author, not the container config
    raise ins.error(f"{ins.keyword} does not change the image config")


def _valid_signal(sig: str) -> bool:
    text = sig.upper()
    if text.isdigit():
        return 0 < int(text) < 65
    if text.startswith("SIGRTMIN") or text.startswith("SIGRTMAX") or text.startswith("RTMIN") \
            or text.startswith("RTMAX"):
        return True
    if not text.startswith("SIG"):
        text = "SIG" + text
    return hasattr(_signal.Signals, text)


def parse_changes(changes: Union[None, str, Iterable[str]]):
    """``docker commit -c`` strings as parsed instructions (only the allowed kinds)."""
    from .dockerfile.parser import DockerfileError, parse_instruction

    if changes is None:
        return []
    if isinstance(changes, str):
        changes = [changes]
    out = []
    for i, text in enumerate(changes, 1):
        ins = parse_instruction(text, filename="changes", lineno=i)
        if ins.keyword not in COMMIT_INSTRUCTIONS:
            raise DockerfileError(f"{ins.keyword} is not a valid change command",
                                  filename="changes", lineno=i, text=text)
        out.append(ins)
    return out


def commit_directory(
    store: Store,
    base: Optional[ImageRecord],
    upper_dir: Optional[str],
    config: ContainerConfig,
    *,
    created_by: str = "",
    comment: Optional[str] = None,
    author: Optional[str] = None,
    tags: Sequence[str] = (),
    empty_layer: Optional[bool] = None,
    owners: Optional[Mapping[str, Tuple[int, int]]] = None,
) -> ImageRecord:
    """A new image: ``base`` plus ``upper_dir`` packed as one layer (none when it is
    None or empty, or ``empty_layer`` is True), with ``config`` as its container config.
    ``owners`` declares the owners of entries of ``upper_dir`` by relative path (see
    Store.pack_layer)."""
    now = _now()
    if base is not None:
        image_config = base.config
        layers = [Descriptor(layer.media_type, layer.digest, layer.size) for layer in base.layers]
        media = "docker" if base.manifest_media_type == mt.DOCKER_MANIFEST else "oci"
    else:
        plat = host_platform()
        image_config = ImageConfig(architecture=plat["architecture"], os=plat["os"],
                                   variant=plat.get("variant"))
        layers, media = [], "oci"
    diff_ids = list(image_config.rootfs.diff_ids)
    if empty_layer is None:
        empty_layer = upper_dir is None or _is_empty_dir(upper_dir)
    with store.ingest():
        if not empty_layer:
            assert upper_dir is not None
            packed = store.pack_layer(upper_dir, compression="gzip", owners=owners)
            layers.append(Descriptor(packed.media_type, packed.digest, packed.size))
            diff_ids.append(packed.diff_id)
        history = list(image_config.history)
        history.append(HistoryEntry(created=now, created_by=created_by or None,
                                    author=author or None, comment=comment or None,
                                    empty_layer=bool(empty_layer)))
        new_config = attrs.evolve(
            image_config, created=now, author=author or image_config.author,
            config=config, rootfs=RootFS(diff_ids=diff_ids), history=history)
        config_bytes = new_config.to_json()
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        manifest = build_manifest(config_digest, len(config_bytes), layers, media=media)
        return store.add_image(manifest, config_bytes, tags=list(tags))


def commit(root: RootArg, container_id: str, *, repository: Optional[str] = None,
           tag: Optional[str] = None, message: Optional[str] = None,
           author: Optional[str] = None, changes: Union[None, str, Iterable[str]] = None,
           config_overrides: Optional[Mapping[str, Any]] = None,
           pause: bool = True) -> ImageRecord:
    """``docker commit``: the container's changes as a new image (docker-py's names:
    repository, tag, message, author, changes, conf -> config_overrides)."""
    from .container import Container
    from .storage.store import _full_tag  # noqa: F401  (validates the reference early)

    r = get_root(root)
    container = Container.get(container_id, root=r)
    state = container._load()
    instructions = parse_changes(changes)
    tags: List[str] = []
    if repository:
        ref = f"{repository}:{tag}" if tag else repository
        _full_tag(ref)
        tags.append(ref)
    elif tag:
        raise InvalidArgument("a tag needs a repository")

    base = r.store.resolve(state["Image"])
    cfg = base.config.config
    c = state.get("Config") or {}
    updates: dict = {}
    for key in ("User", "Env", "Cmd", "Entrypoint", "WorkingDir", "Labels", "ExposedPorts",
                "Volumes", "Healthcheck"):
        if key in c:
            updates[key] = c[key]
    stop = c.get("StopSignal")
    if stop and stop != (cfg.stop_signal or "SIGTERM"):
        updates["StopSignal"] = stop
    config = cfg.apply(updates)
    for ins in instructions:
        config = apply_instruction(config, ins)
    if config_overrides:
        config = config.apply(config_overrides)

    paused_here = False
    if pause and state["State"].get("Running") and not state["State"].get("Paused"):
        with contextlib.suppress(Conflict, ContainError, OSError):
            container.pause()
            paused_here = True
    try:
        created_by = " ".join([state.get("Path", ""), *state.get("Args", [])]).strip()
        return commit_directory(r.store, base, container._path("upper"), config,
                                created_by=created_by, comment=message, author=author,
                                tags=tags)
    finally:
        if paused_here:
            with contextlib.suppress(Conflict, ContainError, OSError):
                container.unpause()
