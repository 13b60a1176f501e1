"""Image references ("busybox", "localhost:5000/a/b:1.0@sha256:...") parsed like Docker.

The grammar is that of distribution/reference (the package Docker, containerd and podman
share), including Docker's normalisation: a first component that looks like a host
(contains '.' or ':', or is 'localhost', or has uppercase letters) is the registry, else
the registry is docker.io and one-component names get the 'library/' prefix.
"""

from __future__ import annotations

import re
from typing import Optional

import attrs

from ..errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
# Docker Hub's API lives on another host than its name; everything else is addressed as is.
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
_LEGACY_DOCKER_DOMAINS = ("index.docker.io",)
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*\Z")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = re.compile(rf"{_HOST}(?::[0-9]+)?\Z")
# \w in Go's RE2 is ASCII only, so spell it out rather than use Python's Unicode \w.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}\Z")
_HEX64 = re.compile(r"[a-f0-9]{64}\Z")
# Lengths of the algorithms go-digest knows; others are refused as Docker refuses them.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def validate_digest(digest: str, *, text: Optional[str] = None) -> str:
    """Return `digest` if it is a well-formed 'algorithm:hex' digest, else InvalidReference."""
    where = f"invalid reference {text!r}: " if text is not None else ""
    if not _DIGEST.match(digest):
        raise InvalidReference(f"{where}invalid digest {digest!r} (want 'sha256:' and 64 hex digits)")
    algorithm, _, hexpart = digest.partition(":")
    if algorithm not in DIGEST_HEX_LENGTHS:
        raise InvalidReference(f"{where}unsupported digest algorithm {algorithm!r} in {digest!r}")
    if len(hexpart) != DIGEST_HEX_LENGTHS[algorithm] or hexpart != hexpart.lower():
        raise InvalidReference(
            f"{where}invalid digest {digest!r}: {algorithm} needs "
            f"{DIGEST_HEX_LENGTHS[algorithm]} lowercase hex digits"
        )
    return digest


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's splitDockerDomain: (domain, remainder) before validation."""
    first, slash, rest = name.partition("/")
    if not slash or (
        "." not in first and ":" not in first and first != "localhost" and first == first.lower()
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain in _LEGACY_DOCKER_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = "library/" + remainder
    return domain, remainder


@attrs.frozen
class Reference:
    """A normalised image reference; `tag` is 'latest' when neither tag nor digest is given."""

    domain: str
    path: str
    tag: Optional[str] = None
    digest: Optional[str] = None

    @classmethod
    def parse(cls, text: str) -> "Reference":
        """Parse and normalise `text`; InvalidReference says what is wrong with it."""
        if not isinstance(text, str):
            raise InvalidReference(f"invalid reference {text!r}: not a string")
        if not text:
            raise InvalidReference("invalid reference '': empty")
        if text != text.strip() or any(c.isspace() for c in text):
            raise InvalidReference(f"invalid reference {text!r}: contains whitespace")
        if _HEX64.match(text):
            # Docker refuses these so an image id is never mistaken for a repository name.
            raise InvalidReference(
                f"invalid reference {text!r}: a 64-character hex string is an image id, "
                "not a repository name"
            )

        remainder, at, digest_text = text.partition("@")
        digest: Optional[str] = None
        if at:
            if "@" in digest_text:
                raise InvalidReference(f"invalid reference {text!r}: more than one '@'")
            digest = validate_digest(digest_text, text=text)

        # A tag follows the last ':' after the last '/', so "host:5000/x" has no tag.
        tag: Optional[str] = None
        colon = remainder.rfind(":")
        if colon > remainder.rfind("/"):
            remainder, tag = remainder[:colon], remainder[colon + 1 :]
            if not tag:
                raise InvalidReference(f"invalid reference {text!r}: empty tag after ':'")
            if not _TAG.match(tag):
                raise InvalidReference(
                    f"invalid reference {text!r}: invalid tag {tag!r} (letters, digits, '_', "
                    "'.', '-', at most 128, not starting with '.' or '-')"
                )
        if not remainder:
            raise InvalidReference(f"invalid reference {text!r}: empty repository name")

        domain, path = _split_domain(remainder)
        if not _DOMAIN.match(domain):
            raise InvalidReference(f"invalid reference {text!r}: invalid registry host {domain!r}")
        for component in path.split("/"):
            if not component:
                raise InvalidReference(f"invalid reference {text!r}: empty path component")
            if component != component.lower():
                raise InvalidReference(
                    f"invalid reference {text!r}: repository name must be lowercase"
                )
            if not _PATH_COMPONENT.match(component):
                raise InvalidReference(
                    f"invalid reference {text!r}: invalid repository name component "
                    f"{component!r} (lowercase letters and digits, separated by '.', '_', "
                    "'__' or '-')"
                )
        if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
            raise InvalidReference(
                f"invalid reference {text!r}: repository name longer than "
                f"{NAME_TOTAL_LENGTH_MAX} characters"
            )
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(domain=domain, path=path, tag=tag, digest=digest)

    @property
    def repository(self) -> str:
        """The fully qualified repository: 'docker.io/library/busybox'."""
        return f"{self.domain}/{self.path}"

    @property
    def name(self) -> str:
        """The familiar repository name Docker shows: 'busybox', 'localhost:5000/x'."""
        if self.domain != DEFAULT_DOMAIN:
            return self.repository
        if self.path.startswith("library/") and self.path.count("/") == 1:
            return self.path[len("library/") :]
        return self.path

    @property
    def registry_host(self) -> str:
        """The host:port whose /v2/ API serves this repository."""
        return DOCKER_HUB_REGISTRY if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def identifier(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> "Reference":
        """This repository with `tag` (and no digest)."""
        if not _TAG.match(tag):
            raise InvalidReference(f"invalid tag {tag!r}")
        return attrs.evolve(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> "Reference":
        """This reference pinned to `digest` (the tag is kept for display, as Docker does)."""
        return attrs.evolve(self, digest=validate_digest(digest))

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text


def parse(text: str) -> Reference:
    """Shorthand for Reference.parse."""
    return Reference.parse(text)


__all__ = ["Reference", "parse", "validate_digest", "DEFAULT_DOMAIN", "DEFAULT_TAG"]
