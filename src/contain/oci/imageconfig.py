"""The OCI image config and image manifest, as attrs models.

``ImageConfig.from_json`` reads configs written by Docker, Podman, BuildKit or contain;
``to_json`` writes a canonical encoding (sorted keys, compact separators). Configs read
from elsewhere are never re-encoded for storage: their original bytes are the blob, so
the digest (the image id) stays the one their author computed. Keys this model does not
know are kept in ``extra`` so a read-modify-write cycle does not drop them.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

import attrs

from ..errors import InvalidArgument
from . import mediatypes as mt

__all__ = [
    "ContainerConfig",
    "RootFS",
    "HistoryEntry",
    "ImageConfig",
    "Descriptor",
    "Manifest",
    "build_manifest",
    "canonical_json",
    "convert_media_type",
    "host_platform",
]


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _load_object(data: bytes | str, what: str) -> Dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    return value


def _str_list(value: Any, what: str) -> Optional[List[str]]:
    if value is None:
        return None
    if isinstance(value, str):  # some old configs carry a bare string
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what} must be a list of strings")
    return list(value)


def _set_dict(value: Any, what: str) -> Dict[str, Any]:
    """Docker encodes sets (ExposedPorts, Volumes) as {key: {}}."""
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(v): {} for v in value}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be an object")
    return dict(value)


# Field name in JSON -> attribute name, in the order Docker's struct declares them.
_CONTAINER_KEYS = {
    "User": "user",
    "ExposedPorts": "exposed_ports",
    "Env": "env",
    "Entrypoint": "entrypoint",
    "Cmd": "cmd",
    "Volumes": "volumes",
    "WorkingDir": "working_dir",
    "Labels": "labels",
    "StopSignal": "stop_signal",
    "Healthcheck": "healthcheck",
    "Shell": "shell",
    "OnBuild": "on_build",
    "ArgsEscaped": "args_escaped",
}


@attrs.define
class ContainerConfig:
    """The ``config`` section: how a container of this image runs by default."""

    user: str = ""
    env: List[str] = attrs.field(factory=list)
    entrypoint: Optional[List[str]] = None
    cmd: Optional[List[str]] = None
    working_dir: str = ""
    exposed_ports: Dict[str, Any] = attrs.field(factory=dict)
    labels: Dict[str, str] = attrs.field(factory=dict)
    volumes: Dict[str, Any] = attrs.field(factory=dict)
    stop_signal: str = ""
    healthcheck: Optional[Dict[str, Any]] = None
    shell: Optional[List[str]] = None
    on_build: Optional[List[str]] = None
    args_escaped: Optional[bool] = None
    extra: Dict[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "ContainerConfig":
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidArgument("image config 'config' must be an object")
        labels = data.get("Labels") or {}
        if not isinstance(labels, dict):
            raise InvalidArgument("config.Labels must be an object")
        return cls(
            user=data.get("User") or "",
            env=_str_list(data.get("Env"), "config.Env") or [],
            entrypoint=_str_list(data.get("Entrypoint"), "config.Entrypoint"),
            cmd=_str_list(data.get("Cmd"), "config.Cmd"),
            working_dir=data.get("WorkingDir") or "",
            exposed_ports=_set_dict(data.get("ExposedPorts"), "config.ExposedPorts"),
            labels=dict(labels),
            volumes=_set_dict(data.get("Volumes"), "config.Volumes"),
            stop_signal=data.get("StopSignal") or "",
            healthcheck=data.get("Healthcheck"),
            shell=_str_list(data.get("Shell"), "config.Shell"),
            on_build=_str_list(data.get("OnBuild"), "config.OnBuild"),
            args_escaped=data.get("ArgsEscaped"),
            extra={k: v for k, v in data.items() if k not in _CONTAINER_KEYS},
        )

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = dict(self.extra)
        for key, attr in _CONTAINER_KEYS.items():
            value = getattr(self, attr)
            if value is None or value == "" or value == {} or (value == [] and key == "Env"):
                continue  # omitempty, as both Docker and the OCI spec encode it
            out[key] = value
        return out

    def apply(self, changes: Mapping[str, Any]) -> "ContainerConfig":
        """A copy with ``changes`` applied; keys in Docker spelling ("Cmd") or ours ("cmd")."""
        attr_names = set(_CONTAINER_KEYS.values())
        updates: Dict[str, Any] = {}
        for key, value in changes.items():
            attr = _CONTAINER_KEYS.get(key, key)
            if attr not in attr_names:
                raise InvalidArgument(f"unknown image config field {key!r}")
            if attr in ("exposed_ports", "volumes"):
                value = _set_dict(value, key)
            elif attr in ("env", "entrypoint", "cmd", "shell", "on_build"):
                value = _str_list(value, key)
                if attr == "env":
                    value = value or []
            updates[attr] = value
        return attrs.evolve(self, **updates)


@attrs.define
class RootFS:
    type: str = "layers"
    diff_ids: List[str] = attrs.field(factory=list)


@attrs.define
class HistoryEntry:
    created: Optional[str] = None
    created_by: Optional[str] = None
    author: Optional[str] = None
    comment: Optional[str] = None
    empty_layer: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HistoryEntry":
        if not isinstance(data, Mapping):
            raise InvalidArgument("image config history entries must be objects")
        return cls(
            created=data.get("created"),
            created_by=data.get("created_by"),
            author=data.get("author"),
            comment=data.get("comment"),
            empty_layer=bool(data.get("empty_layer", False)),
        )

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for key in ("created", "created_by", "author", "comment"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.empty_layer:
            out["empty_layer"] = True
        return out


_TOP_KEYS = ("architecture", "os", "os.version", "os.features", "variant", "created",
             "author", "config", "rootfs", "history")


@attrs.define
class ImageConfig:
    """An OCI image config (``application/vnd.oci.image.config.v1+json``)."""

    architecture: str = ""
    os: str = "linux"
    created: Optional[str] = None
    author: Optional[str] = None
    variant: Optional[str] = None
    os_version: Optional[str] = None
    os_features: Optional[List[str]] = None
    config: ContainerConfig = attrs.field(factory=ContainerConfig)
    rootfs: RootFS = attrs.field(factory=RootFS)
    history: List[HistoryEntry] = attrs.field(factory=list)
    extra: Dict[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_json(cls, data: bytes | str) -> "ImageConfig":
        obj = _load_object(data, "image config")
        rootfs = obj.get("rootfs") or {}
        if not isinstance(rootfs, dict):
            raise InvalidArgument("image config rootfs must be an object")
        diff_ids = _str_list(rootfs.get("diff_ids"), "rootfs.diff_ids") or []
        history = obj.get("history") or []
        if not isinstance(history, list):
            raise InvalidArgument("image config history must be a list")
        return cls(
            architecture=obj.get("architecture") or "",
            os=obj.get("os") or "",
            created=obj.get("created"),
            author=obj.get("author"),
            variant=obj.get("variant"),
            os_version=obj.get("os.version"),
            os_features=_str_list(obj.get("os.features"), "os.features"),
            config=ContainerConfig.from_dict(obj.get("config")),
            rootfs=RootFS(type=rootfs.get("type") or "layers", diff_ids=diff_ids),
            history=[HistoryEntry.from_dict(h) for h in history],
            extra={k: v for k, v in obj.items() if k not in _TOP_KEYS},
        )

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = dict(self.extra)
        out["architecture"] = self.architecture
        out["os"] = self.os
        for key, value in (("created", self.created), ("author", self.author),
                           ("variant", self.variant), ("os.version", self.os_version),
                           ("os.features", self.os_features)):
            if value:
                out[key] = value
        out["config"] = self.config.to_dict()
        out["rootfs"] = {"type": self.rootfs.type, "diff_ids": list(self.rootfs.diff_ids)}
        if self.history:
            out["history"] = [h.to_dict() for h in self.history]
        return out

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def platform(self) -> str:
        """"os/arch[/variant]", as ``docker inspect`` and ``--platform`` spell it."""
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


@attrs.define(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about one blob."""

    media_type: str
    digest: str
    size: int
    annotations: Optional[Dict[str, str]] = None
    platform: Optional[Dict[str, Any]] = None

    @classmethod
    def from_dict(cls, data: Any, what: str = "descriptor") -> "Descriptor":
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"{what} must be an object")
        digest, size = data.get("digest"), data.get("size")
        if not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool) \
                or size < 0:
            raise InvalidArgument(f"{what} needs a digest and a non-negative size")
        return cls(
            media_type=data.get("mediaType") or "",
            digest=digest,
            size=size,
            annotations=data.get("annotations") or None,
            platform=data.get("platform") or None,
        )

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out


@attrs.define(frozen=True)
class Manifest:
    """An image manifest (OCI or Docker schema 2); indexes are not manifests."""

    media_type: str
    config: Descriptor
    layers: List[Descriptor]
    annotations: Optional[Dict[str, str]] = None

    @classmethod
    def from_json(cls, data: bytes | str) -> "Manifest":
        obj = _load_object(data, "image manifest")
        media_type = obj.get("mediaType") or ""
        if obj.get("schemaVersion") != 2:
            raise InvalidArgument("only schema version 2 image manifests are supported")
        if media_type in mt.INDEXES or "manifests" in obj:
            raise InvalidArgument("an image index is not an image manifest")
        if "config" not in obj:
            raise InvalidArgument("image manifest has no config")
        layers = obj.get("layers") or []
        if not isinstance(layers, list):
            raise InvalidArgument("image manifest layers must be a list")
        return cls(
            media_type=media_type or mt.OCI_MANIFEST,
            config=Descriptor.from_dict(obj["config"], "manifest config"),
            layers=[Descriptor.from_dict(layer, "manifest layer") for layer in layers],
            annotations=obj.get("annotations") or None,
        )


_TO_DOCKER = {
    mt.OCI_LAYER: mt.DOCKER_LAYER,
    mt.OCI_LAYER_GZIP: mt.DOCKER_LAYER_GZIP,
    mt.OCI_CONFIG: mt.DOCKER_CONFIG,
}
_TO_OCI = {docker: oci for oci, docker in _TO_DOCKER.items()}


def convert_media_type(media_type: str, media: str) -> str:
    """The equivalent layer/config media type in the "oci" or "docker" family."""
    table = _TO_DOCKER if media == "docker" else _TO_OCI
    return table.get(media_type, media_type)


def build_manifest(
    config_digest: str,
    config_size: int,
    layers: Sequence[Descriptor],
    media: str = "oci",
    annotations: Optional[Mapping[str, str]] = None,
) -> bytes:
    """Encode an image manifest; ``media`` picks OCI or Docker schema 2 media types.

    Layer media types are translated to the chosen family (zstd layers have no Docker
    spelling and keep the OCI one, as Docker itself does).
    """
    if media not in ("oci", "docker"):
        raise InvalidArgument(f"manifest media must be 'oci' or 'docker', not {media!r}")
    obj: Dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST if media == "oci" else mt.DOCKER_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG if media == "oci" else mt.DOCKER_CONFIG,
                   "digest": config_digest, "size": config_size},
        "layers": [
            attrs.evolve(layer, media_type=convert_media_type(layer.media_type, media)).to_dict()
            for layer in layers
        ],
    }
    if annotations:
        obj["annotations"] = dict(annotations)
    return canonical_json(obj)


_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm",
         "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64", "mips64": "mips64le"}


def host_platform() -> Dict[str, str]:
    """{"os": "linux", "architecture": ...} for this machine, in Go's GOARCH spelling."""
    import platform

    machine = platform.machine()
    out = {"os": "linux", "architecture": _ARCH.get(machine, machine)}
    if machine.startswith("armv7"):
        out["variant"] = "v7"
    elif machine.startswith("armv6"):
        out["variant"] = "v6"
    elif machine == "aarch64":
        out["variant"] = "v8"
    return out
