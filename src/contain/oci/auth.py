"""Registry credentials kept in Docker's config.json, so `docker login` and we share them.

The file is $DOCKER_CONFIG/config.json, else ~/.docker/config.json. Entries live under
"auths", keyed by registry host (Docker Hub's key is the historical
"https://index.docker.io/v1/"), each {"auth": base64("user:password")}. Every other key of
the file is kept as it was.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import InvalidArgument
from .reference import DEFAULT_DOMAIN, DOCKER_HUB_REGISTRY
from .registry import Credentials, RegistryClient

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = {DEFAULT_DOMAIN, "index.docker.io", DOCKER_HUB_REGISTRY, ""}

PathArg = Union[str, "os.PathLike[str]", None]


def default_config_path() -> Path:
    """$DOCKER_CONFIG/config.json, else ~/.docker/config.json (as the docker CLI)."""
    directory = os.environ.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


def _hostname(key: str) -> str:
    """Docker's ConvertToHostname: 'https://host:5000/v1/' -> 'host:5000'."""
    for prefix in ("http://", "https://"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return key.split("/", 1)[0]


def config_key(registry: str) -> str:
    """The "auths" key Docker uses for `registry` ('docker.io' -> Hub's v1 URL)."""
    host = _hostname(registry.strip())
    return DOCKER_HUB_KEY if host in _HUB_NAMES else host


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"{path}: not valid JSON ({exc}); not touching it") from None
    if not isinstance(config, dict):
        raise InvalidArgument(f"{path}: expected a JSON object")
    return config


def _write(path: Path, config: dict[str, Any]) -> None:
    """Replace `path` atomically with a 0600 file (it holds passwords)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".config.json.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(config, out, indent="\t")
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def _find_entry(auths: dict[str, Any], registry: str) -> Optional[str]:
    """The key in `auths` naming `registry`, however it was spelt (scheme, /v1/ ...)."""
    wanted = config_key(registry)
    if wanted in auths:
        return wanted
    for key in auths:
        if config_key(key) == wanted:
            return key
    return None


def credentials_for(registry: str, *, config_path: PathArg = None) -> Optional[Credentials]:
    """(user, password) stored for `registry`, or None.

    Only entries in the file itself are read; credential helpers (credsStore,
    credHelpers) are not consulted.
    """
    path = Path(config_path) if config_path else default_config_path()
    auths = _read(path).get("auths") or {}
    key = _find_entry(auths, registry)
    if key is None:
        return None
    entry = auths[key] or {}
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidArgument(f"{path}: malformed auth entry for {key}") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidArgument(f"{path}: auth entry for {key} is not 'user:password'")
        return user, password
    if entry.get("username") and entry.get("password") is not None:
        return entry["username"], entry["password"]
    return None


def login(registry: str, username: str, password: str, *, config_path: PathArg = None,
          insecure: Optional[bool] = None, timeout: float = 30.0) -> str:
    """Check the credentials against the registry, then store them; returns the key used.

    The registry is asked for /v2/ with the credentials (Basic or Bearer, as it
    challenges); AuthenticationError if it refuses, and then nothing is written.
    """
    if not username:
        raise InvalidArgument("login needs a username")
    with RegistryClient(_hostname(registry), insecure=insecure,
                        credentials=(username, password), timeout=timeout) as client:
        client.authenticate()
    path = Path(config_path) if config_path else default_config_path()
    config = _read(path)
    auths = config.get("auths")
    if not isinstance(auths, dict):
        auths = config["auths"] = {}
    key = _find_entry(auths, registry) or config_key(registry)
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    old = auths.get(key)
    # Keep other fields Docker may have put there (e.g. "email"), not stale plain ones.
    entry = {k: v for k, v in (old if isinstance(old, dict) else {}).items()
             if k not in ("username", "password")}
    entry["auth"] = token
    auths[key] = entry
    _write(path, config)
    return key


def logout(registry: str, *, config_path: PathArg = None) -> bool:
    """Forget the credentials for `registry`; False if there were none."""
    path = Path(config_path) if config_path else default_config_path()
    config = _read(path)
    auths = config.get("auths") or {}
    key = _find_entry(auths, registry)
    if key is None:
        return False
    del auths[key]
    _write(path, config)
    return True


__all__ = ["login", "logout", "credentials_for", "config_key", "default_config_path",
           "DOCKER_HUB_KEY"]
