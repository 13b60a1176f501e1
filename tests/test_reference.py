"""Reference parsing against Docker's distribution/reference behaviour."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contain.errors import InvalidReference
from contain.oci.reference import Reference, validate_digest

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text, domain, path, tag, digest, name, shown",
    [
        ("busybox", "docker.io", "library/busybox", "latest", None, "busybox", "busybox:latest"),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "busybox", "busybox:1.36"),
        ("library/busybox", "docker.io", "library/busybox", "latest", None, "busybox", "busybox:latest"),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None, "busybox", "busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io", "library/busybox", "latest", None, "busybox", "busybox:latest"),
        ("user/app", "docker.io", "user/app", "latest", None, "user/app", "user/app:latest"),
        ("docker.io/user/app/sub", "docker.io", "user/app/sub", "latest", None, "user/app/sub", "user/app/sub:latest"),
        ("localhost/app", "localhost", "app", "latest", None, "localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b:v1", "localhost:5000", "a/b", "v1", None, "localhost:5000/a/b", "localhost:5000/a/b:v1"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", None, "127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
        ("[::1]:5000/x:t", "[::1]:5000", "x", "t", None, "[::1]:5000/x", "[::1]:5000/x:t"),
        ("quay.io/coreos/etcd", "quay.io", "coreos/etcd", "latest", None, "quay.io/coreos/etcd", "quay.io/coreos/etcd:latest"),
        ("Example.COM/x", "Example.COM", "x", "latest", None, "Example.COM/x", "Example.COM/x:latest"),
        ("busybox@" + D, "docker.io", "library/busybox", None, D, "busybox", "busybox@" + D),
        ("busybox:1@" + D, "docker.io", "library/busybox", "1", D, "busybox", "busybox:1@" + D),
        ("a.b/c__d-e--f.g_h:T_1.0-x", "a.b", "c__d-e--f.g_h", "T_1.0-x", None, "a.b/c__d-e--f.g_h", "a.b/c__d-e--f.g_h:T_1.0-x"),
        ("localhost:5000", "docker.io", "library/localhost", "5000", None, "localhost", "localhost:5000"),
    ],
)
def test_parse(text, domain, path, tag, digest, name, shown):
    ref = Reference.parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.name == name
    assert str(ref) == shown
    assert ref.repository == f"{domain}/{path}"
    # The familiar form parses back to the same reference.
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("docker.io/Library/busybox", "lowercase"),
        ("busybox:", "empty tag"),
        ("busybox:-x", "invalid tag"),
        ("busybox:" + "a" * 129, "invalid tag"),
        ("busybox@sha256:abc", "invalid digest"),
        ("busybox@sha256:" + "A" * 64, "lowercase hex"),
        ("busybox@sha256:" + "a" * 63, "64 lowercase hex"),
        ("busybox@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("busybox@", "invalid digest"),
        ("a@" + D + "@" + D, "more than one '@'"),
        ("a" * 64, "image id"),
        ("x/-a", "invalid repository name component"),
        ("x/a_", "invalid repository name component"),
        ("x/a___b", "invalid repository name component"),
        ("x//a", "empty path component"),
        ("x/", "empty path component"),
        ("-bad.host/x", "invalid registry host"),
        ("host.com:port/x", "invalid registry host"),
        ("::1/x", "invalid registry host"),
        (":tag", "empty repository name"),
        ("bus box", "whitespace"),
        ("quay.io/" + "a" * 250, "longer than 255"),
    ],
)
def test_invalid(text, words):
    with pytest.raises(InvalidReference) as info:
        Reference.parse(text)
    message = str(info.value)
    assert words in message
    assert repr(text) in message or text == ""


def test_name_length_limit_counts_domain():
    ok = "quay.io/" + "a" * (255 - len("quay.io/"))
    assert Reference.parse(ok).path == "a" * 247


def test_registry_host_and_identifier():
    assert Reference.parse("busybox").registry_host == "registry-1.docker.io"
    assert Reference.parse("localhost:5000/x").registry_host == "localhost:5000"
    assert Reference.parse("x:1").identifier == "1"
    assert Reference.parse("x:1@" + D).identifier == D


def test_with_tag_and_digest():
    ref = Reference.parse("x@" + D)
    assert ref.with_tag("2") == Reference("docker.io", "library/x", "2", None)
    assert ref.with_tag("2").with_digest(D).digest == D
    with pytest.raises(InvalidReference):
        ref.with_digest("sha256:zz")
    with pytest.raises(InvalidReference):
        ref.with_tag(".x")


def test_validate_digest_other_algorithms():
    assert validate_digest("sha512:" + "0" * 128)
    assert validate_digest("sha384:" + "0" * 96)


_component = st.from_regex(r"\A[a-z0-9]{1,5}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,5}){0,2}\Z")


@given(
    domain=st.sampled_from(["", "localhost:5000/", "registry.example.com/", "[::1]:1/"]),
    components=st.lists(_component, min_size=1, max_size=3),
    tag=st.one_of(st.none(), st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z")),
)
def test_roundtrip_property(domain, components, tag):
    text = domain + "/".join(components) + (f":{tag}" if tag else "")
    if not domain and len(components) > 1 and "." in components[0]:
        return  # the first component would be read as a registry host, as in Docker
    ref = Reference.parse(text)
    assert Reference.parse(str(ref)) == ref
    assert ref.tag == (tag or "latest")
