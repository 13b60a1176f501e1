"""Fuzzing of the parsers that read untrusted input: image references,
manifests and image configs (registry answers), layer tars (registry or
archive content).  Only contain's own errors may come out: an IndexError,
KeyError, UnicodeError or TypeError would be a crash on hostile input.

Deterministic and bounded: derandomize=True, no example database."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tarfile
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contain.errors import ContainError

FUZZ = settings(derandomize=True, max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])


def only_contain_errors(fn, *args, **kwargs):
    """Run fn; a ContainError is a clean refusal, anything else fails the test."""
    try:
        return fn(*args, **kwargs)
    except ContainError:
        return None


# --------------------------------------------------------------- references
REF_ALPHABET = "abcxyz019ABZ:/@.-_+ \t\n%#\x00é" + "sha256"
ref_text = st.one_of(
    st.text(alphabet=REF_ALPHABET, max_size=80),
    st.text(max_size=40),
    # Near-valid shapes, mutated by the alphabet above.
    st.builds(lambda host, path, tag, dig: f"{host}{path}{tag}{dig}",
              st.sampled_from(["", "docker.io/", "localhost:5000/", "[::1]:5000/", "a.b:x/",
                               "UPPER.io/", "host:99999999999999999999/"]),
              st.text(alphabet="abc/._-", min_size=0, max_size=30),
              st.sampled_from(["", ":latest", ":", ":-bad", ":" + "t" * 129]),
              st.sampled_from(["", "@sha256:" + "a" * 64, "@sha256:" + "A" * 64, "@sha256:",
                               "@sha512:" + "b" * 128, "@md5:abc", "@sha256:" + "a" * 63,
                               "@@", "@sha256:" + "0" * 64 + "@x"])),
)


@FUZZ
@given(ref_text)
def test_reference_parse(text):
    from contain.oci.reference import Reference

    ref = only_contain_errors(Reference.parse, text)
    if ref is not None:
        # What parses must print back to something that parses to the same.
        again = Reference.parse(str(ref))
        assert again == ref


@FUZZ
@given(st.one_of(st.none(), st.integers(), st.binary(max_size=20), st.lists(st.text(max_size=5))))
def test_reference_parse_wrong_types(value):
    from contain.oci.reference import Reference

    only_contain_errors(Reference.parse, value)


# ----------------------------------------------------- manifests and configs
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                        st.floats(allow_nan=False), st.text(max_size=20))
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)

DIGEST = "sha256:" + "ab" * 32
VALID_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": 7},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": DIGEST,
                "size": 32, "urls": ["http://x"], "annotations": {"a": "b"}}],
    "annotations": {"k": "v"},
}
VALID_CONFIG = {
    "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Entrypoint": None, "WorkingDir": "/",
               "User": "1000", "Labels": {"a": "b"}, "ExposedPorts": {"80/tcp": {}},
               "Volumes": {"/data": {}}, "StopSignal": "SIGTERM"},
    "rootfs": {"type": "layers", "diff_ids": [DIGEST]},
    "history": [{"created_by": "x", "empty_layer": True}],
}


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _replace(obj, path, value):
    if not path:
        return value
    obj = json.loads(json.dumps(obj))
    cur = obj
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value
    return obj


def _delete(obj, path):
    if not path:
        return obj
    obj = json.loads(json.dumps(obj))
    cur = obj
    for key in path[:-1]:
        cur = cur[key]
    del cur[path[-1]]
    return obj


def mutated(valid):
    paths = list(_paths(valid))
    return st.one_of(
        st.builds(lambda p, v: _replace(valid, p, v), st.sampled_from(paths), json_value),
        st.builds(lambda p: _delete(valid, p), st.sampled_from(paths)),
        json_value,
    )


documents = lambda valid: st.one_of(  # noqa: E731
    st.builds(json.dumps, mutated(valid)),
    st.builds(lambda o: json.dumps(o).encode("utf-16"), mutated(valid)),
    st.binary(max_size=200),
    st.builds(lambda o, cut: json.dumps(o)[:cut], mutated(valid), st.integers(0, 400)),
)


@FUZZ
@given(documents(VALID_MANIFEST))
def test_manifest_from_json(doc):
    from contain.oci.imageconfig import Manifest

    only_contain_errors(Manifest.from_json, doc)


@FUZZ
@given(documents(VALID_CONFIG))
def test_image_config_from_json(doc):
    from contain.oci.imageconfig import ImageConfig

    cfg = only_contain_errors(ImageConfig.from_json, doc)
    if cfg is not None:
        # A parsed config serialises again, and the result parses.
        only_contain_errors(lambda: ImageConfig.from_json(cfg.to_json()))


def test_valid_documents_parse():
    from contain.oci.imageconfig import ImageConfig, Manifest

    Manifest.from_json(json.dumps(VALID_MANIFEST))
    ImageConfig.from_json(json.dumps(VALID_CONFIG))


# ---------------------------------------------------------------- layer tars
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking chowns and makes devices")

NAMES = ["a", "a/b", "../escape", "/abs", "./x", "a/../../y", "", ".", "..", "a//b", "dir/",
         ".wh.a", ".wh..wh..opq", "dir/.wh..wh..opq", ".wh..wh.plnk", "é", "x" * 300,
         "a\x00b", "lnk/through", "lnk", "hl"]
TARGETS = ["/etc/passwd", "../../etc", "a", "/", "..", "lnk", "x" * 200, "", "dir/../.."]
KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
         tarfile.BLKTYPE, tarfile.FIFOTYPE, b"7", b"x", b"g"]


@st.composite
def tar_members(draw):
    return [
        (draw(st.sampled_from(NAMES) | st.text(max_size=12)), draw(st.sampled_from(KINDS)),
         draw(st.sampled_from(TARGETS)), draw(st.binary(max_size=64)),
         draw(st.integers(0, 0o7777)), draw(st.integers(-1, 70000)),
         draw(st.dictionaries(st.sampled_from(["SCHILY.xattr.user.a",
                                                "SCHILY.xattr.trusted.overlay.opaque",
                                                "SCHILY.xattr.security.capability",
                                                "path", "linkpath", "size", "uid", "mtime"]),
                              st.text(max_size=8), max_size=2)))
        for _ in range(draw(st.integers(1, 6)))
    ]


def build_tar(members, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, target, data, mode, ident, pax in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = mode
            info.uid = info.gid = max(ident, 0)
            info.mtime = 1_600_000_000
            info.linkname = target if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            info.devmajor, info.devminor = (1, 3) if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE) else (0, 0)
            info.pax_headers = dict(pax)
            try:
                if kind == tarfile.REGTYPE:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                else:
                    tar.addfile(info)
            except (ValueError, UnicodeError):
                continue  # tarfile itself refuses to write this one
    return buf.getvalue()


def _base_tar() -> bytes:
    return build_tar([("dir", tarfile.DIRTYPE, "", b"", 0o755, 0, {}),
                      ("dir/file", tarfile.REGTYPE, "", b"hello" * 40, 0o644, 0, {}),
                      ("dir/link", tarfile.SYMTYPE, "file", b"", 0o777, 0, {}),
                      ("dir/hard", tarfile.LNKTYPE, "dir/file", b"", 0o644, 0, {})])


BASE_TAR = _base_tar()


@st.composite
def mutated_tar(draw):
    data = bytearray(BASE_TAR)
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) if draw(st.booleans()) else bytes(data)


def _compress(raw: bytes, how: str) -> bytes:
    if how == "gzip":
        import gzip

        return gzip.compress(raw, mtime=0)
    if how == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(raw)
    if how == "gzip-truncated":
        import gzip

        out = gzip.compress(raw, mtime=0)
        return out[: max(2, len(out) // 2)]
    return raw


def _unpack_in_sandbox(blob: bytes) -> None:
    from contain.storage.unpack import unpack_layer

    box = tempfile.mkdtemp(prefix="fuzz-unpack-")
    try:
        sentinel = os.path.join(box, "sentinel")
        with open(sentinel, "w") as f:
            f.write("untouched")
        dest = os.path.join(box, "dest")
        try:
            unpack_layer(io.BytesIO(blob), dest)
        except ContainError:
            assert not os.path.exists(dest), "a refused layer must leave nothing behind"
        except OSError as exc:
            # Failures of the machine (ENOSPC, EMFILE...) may propagate; never one
            # that means the input was mishandled.
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM,
                                 errno.EMFILE, errno.ENFILE):
                raise
        # Nothing was written beside the destination.
        assert sorted(os.listdir(box)) in (["dest", "sentinel"], ["sentinel"])
        with open(sentinel) as f:
            assert f.read() == "untouched"
        etc = os.path.join(box, "etc")
        assert not os.path.exists(etc)
    finally:
        shutil.rmtree(box, ignore_errors=True)


@needs_root
@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["none", "gzip", "zstd", "gzip-truncated"]))
def test_unpack_random_bytes(data, how):
    _unpack_in_sandbox(_compress(data, how))


@needs_root
@FUZZ
@given(mutated_tar())
def test_unpack_mutated_tar(data):
    _unpack_in_sandbox(data)


@needs_root
@FUZZ
@given(tar_members(), st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]),
       st.sampled_from(["none", "gzip"]))
def test_unpack_hostile_members(members, fmt, how):
    _unpack_in_sandbox(_compress(build_tar(members, fmt), how))
