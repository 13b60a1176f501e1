"""Layer unpacking and packing on the real filesystem (run as root)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import stat
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import Optional

import pytest
import zstandard

from contain.errors import InvalidArgument, LayerError
from contain.storage.unpack import pack_directory, unpack_layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod, trusted xattrs)")

T0 = 1_600_000_000  # a fixed mtime, seconds
# struct vfs_cap_data, revision 2, permitted = CAP_NET_RAW (13)
CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


# -- helpers -------------------------------------------------------------------------


def member(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = T0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def tar_bytes(*entries: tuple[tarfile.TarInfo, Optional[bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return out.getvalue()


def f(name: str, data: bytes = b"data", **fields: object) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, **fields), data


def d(name: str, **fields: object) -> tuple[tarfile.TarInfo, None]:
    return member(name, tarfile.DIRTYPE, **fields), None


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return member(name, tarfile.SYMTYPE, linkname=target, mode=0o777), None


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return member(name, tarfile.LNKTYPE, linkname=target), None


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything unpacking must preserve, per relative path (the root included)."""
    result: dict[str, tuple] = {}
    inode_names: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["", *sorted(dirnames), *sorted(filenames)] if dirpath == str(root) else [*dirnames, *filenames]:
            path = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            content = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            xattrs = {}
            for attr in os.listxattr(path, follow_symlinks=False):
                if attr.startswith(("user.", "trusted.overlay.opaque")) or attr == "security.capability":
                    xattrs[attr] = os.getxattr(path, attr, follow_symlinks=False)
            # Hard links: name each inode by the first path seen with it.
            group = inode_names.setdefault(st.st_ino, rel) if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode) else None
            mtime = st.st_mtime_ns if rel != "." else None  # the root is not in a packed layer
            result[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime, content, st.st_rdev, xattrs, group)
    return result


def tree(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(p, n), root) for p, ds, fs in os.walk(root) for n in ds + fs}


@pytest.fixture
def jail(tmp_path: Path) -> Path:
    """A temporary root holding the destination and bait outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "bait").write_text("original")
    return tmp_path


def build_rich_tree(src: Path) -> None:
    src.mkdir()
    (src / "etc").mkdir()
    (src / "etc/hostname").write_text("box\n")
    big = os.urandom(3 * 1024 * 1024 + 17)  # spans several copy chunks
    (src / "big.bin").write_bytes(big)
    (src / "empty").write_bytes(b"")
    (src / "bin").mkdir(mode=0o750)
    (src / "bin/su").write_bytes(b"#!/bin/sh\n")
    os.chown(src / "bin/su", 0, 0)
    os.chmod(src / "bin/su", 0o4755)
    (src / "bin/wall").write_bytes(b"x")
    os.chown(src / "bin/wall", 0, 5)
    os.chmod(src / "bin/wall", 0o2755)
    (src / "bin/ping").write_bytes(b"ping")
    os.setxattr(src / "bin/ping", "security.capability", CAP_NET_RAW)
    (src / "tmp").mkdir()
    os.chmod(src / "tmp", 0o1777)
    (src / "home/user/.cache").mkdir(parents=True)
    (src / "home/user/notes.txt").write_text("notes")
    os.setxattr(src / "home/user/notes.txt", "user.binary", b"\xff\x00\x01")
    os.setxattr(src / "home/user/notes.txt", "user.text", b"hello")
    for p in ("home/user", "home/user/.cache", "home/user/notes.txt"):
        os.chown(src / p, 1000, 1000)
    os.link(src / "home/user/notes.txt", src / "etc/notes-link")  # hard link across dirs
    os.symlink("/etc/hostname", src / "hostname-abs")
    os.symlink("../etc/hostname", src / "home/rel-link")
    os.chown(src / "home/rel-link", 7, 8, follow_symlinks=False)
    (src / "dev").mkdir()
    os.mknod(src / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(src / "dev/loop0", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.mkfifo(src / "dev/fifo", 0o600)
    (src / ("n" * 150)).write_text("long name")
    (src / os.fsdecode(b"latin1-\xe9")).write_text("not utf-8")
    (src / "emptydir").mkdir(mode=0o700)
    # overlay upper-dir artefacts: a whiteout and an opaque directory
    os.mknod(src / "etc/removed", stat.S_IFCHR, 0)
    (src / "var/cache").mkdir(parents=True)
    (src / "var/cache/fresh").write_text("new")
    os.setxattr(src / "var/cache", "trusted.overlay.opaque", b"y")
    # distinct mtimes everywhere, directories last (creating entries changes them)
    paths = sorted((p for p in src.rglob("*")), key=lambda p: -len(p.parts))
    for i, p in enumerate(paths):
        t = (T0 + i * 1000) * 1_000_000_000
        os.utime(p, ns=(t, t), follow_symlinks=False)


# -- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_round_trip_preserves_everything(tmp_path: Path, compression: str) -> None:
    src = tmp_path / "src"
    build_rich_tree(src)
    blob = io.BytesIO()
    packed = pack_directory(src, blob, compression=compression)
    data = blob.getvalue()
    assert packed.digest == sha(data) and packed.size == len(data)
    raw = {"none": data, "gzip": gzip.decompress(data) if compression == "gzip" else b"",
           "zstd": b""}[compression]
    if compression == "zstd":
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    assert packed.diff_id == sha(raw) and packed.uncompressed_size == len(raw)
    if compression == "none":
        assert packed.digest == packed.diff_id

    out = tmp_path / "out"
    stats = unpack_layer(io.BytesIO(data), out)  # compression sniffed
    assert stats.diff_id == packed.diff_id
    assert stats.compressed_size == len(data) and stats.uncompressed_size == len(raw)
    assert stats.files == len(tarfile.open(fileobj=io.BytesIO(raw)).getmembers())
    assert stats.skipped_xattrs == 0

    expected, got = snapshot(src), snapshot(out)
    assert got.keys() == expected.keys()
    for rel in expected:
        assert got[rel] == expected[rel], rel
    # spot checks of what the comparison covers
    assert stat.S_IMODE(os.stat(out / "bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(out / "tmp").st_mode) == 0o1777
    assert os.getxattr(out / "bin/ping", "security.capability") == CAP_NET_RAW
    assert os.getxattr(out / "home/user/notes.txt", "user.binary") == b"\xff\x00\x01"
    assert os.stat(out / "etc/notes-link").st_ino == os.stat(out / "home/user/notes.txt").st_ino
    assert os.stat(out / "dev/null").st_rdev == os.makedev(1, 3)
    assert os.lstat(out / "etc/removed").st_rdev == 0 and stat.S_ISCHR(os.lstat(out / "etc/removed").st_mode)
    assert os.getxattr(out / "var/cache", "trusted.overlay.opaque") == b"y"
    assert (out / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_explicit_compression_and_stream_without_seek(tmp_path: Path, compression: str) -> None:
    raw = tar_bytes(d("a"), f("a/b", b"x" * 100_000))
    blob = compress(raw, compression)

    class Pipe(io.RawIOBase):  # short reads, no seek, like a socket
        def __init__(self) -> None:
            self.buf = io.BytesIO(blob)

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            chunk = self.buf.read(min(len(b), 777))
            b[: len(chunk)] = chunk
            return len(chunk)

    stats = unpack_layer(Pipe(), tmp_path / "out", compression=compression)
    assert stats.diff_id == sha(raw)
    assert stats.uncompressed_size == len(raw) and stats.compressed_size == len(blob)
    assert (tmp_path / "out/a/b").read_bytes() == b"x" * 100_000


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_multi_member_streams_and_trailing_garbage(tmp_path: Path, compression: str) -> None:
    raw = tar_bytes(f("a", os.urandom(50_000)), f("b", b"b"))
    blob = compress(raw[:30_000], compression) + compress(raw[30_000:], compression)
    stats = unpack_layer(io.BytesIO(blob), tmp_path / "out")
    assert stats.diff_id == sha(raw) and stats.compressed_size == len(blob)
    assert (tmp_path / "out/b").read_bytes() == b"b"
    with pytest.raises(LayerError, match="corrupt"):
        unpack_layer(io.BytesIO(compress(raw, compression) + b"garbage!"), tmp_path / "bad")
    assert not os.path.lexists(tmp_path / "bad")


def test_pack_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_rich_tree(src)
    for compression in ("none", "gzip", "zstd"):
        a, b = io.BytesIO(), io.BytesIO()
        sa = pack_directory(src, a, compression=compression)
        sb = pack_directory(src, b, compression=compression)
        assert a.getvalue() == b.getvalue() and sa == sb


def test_pack_writes_oci_whiteouts_and_sorted_numeric_entries(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "z/opq").mkdir(parents=True)
    (upper / "z/opq/kept").write_text("k")
    os.setxattr(upper / "z/opq", "trusted.overlay.opaque", b"y")
    os.setxattr(upper / "z/opq", "trusted.overlay.origin", b"junk")
    os.mknod(upper / "gone", stat.S_IFCHR, 0)
    os.link(upper / "gone", upper / "z/also-gone")  # overlayfs shares one whiteout inode
    (upper / "a").write_text("a")
    os.chown(upper / "a", 4242, 4343)
    blob = io.BytesIO()
    pack_directory(upper, blob)
    blob.seek(0)
    members = tarfile.open(fileobj=blob).getmembers()
    assert [m.name for m in members] == ["a", ".wh.gone", "z", "z/.wh.also-gone", "z/opq", "z/opq/.wh..wh..opq", "z/opq/kept"]
    by_name = {m.name: m for m in members}
    assert by_name[".wh.gone"].isreg() and by_name[".wh.gone"].size == 0
    assert by_name["z/.wh.also-gone"].isreg()  # not a hard link to the first whiteout
    assert (by_name["a"].uid, by_name["a"].gid, by_name["a"].uname) == (4242, 4343, "")
    assert not any(k.startswith("SCHILY.xattr.trusted") for m in members for k in m.pax_headers)


# -- whiteouts -----------------------------------------------------------------------


def test_oci_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    raw = tar_bytes(
        d("etc"),
        f("etc/.wh.passwd", b""),
        d("var"),
        d("var/lib"),
        f("var/lib/.wh..wh..opq", b""),
        f("var/lib/new", b"n"),
        f(".wh..wh.plnk", b""),  # aufs bookkeeping, ignored
        f(".wh.both", b""),  # whiteout and a directory of the same name in one layer
        d("both"),
        f("both/x", b"x"),
        f(".wh.implicit", b""),  # whiteout, then an entry below that name
        f("implicit/y", b"y"),
        f("samefile", b"s"),
        f(".wh.samefile", b""),  # the layer's own file stays
    )
    out = tmp_path / "out"
    unpack_layer(io.BytesIO(raw), out)
    st = os.lstat(out / "etc/passwd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not (out / "etc/.wh.passwd").exists()
    assert os.getxattr(out / "var/lib", "trusted.overlay.opaque") == b"y"
    assert not os.path.lexists(out / "var/lib/.wh..wh..opq")
    assert (out / "var/lib/new").read_bytes() == b"n"
    assert not os.path.lexists(out / ".wh..wh.plnk")
    assert os.getxattr(out / "both", "trusted.overlay.opaque") == b"y"
    assert (out / "both/x").read_bytes() == b"x"
    assert os.getxattr(out / "implicit", "trusted.overlay.opaque") == b"y"
    assert (out / "implicit/y").read_bytes() == b"y"
    assert (out / "samefile").read_bytes() == b"s"
    assert "trusted.overlay.opaque" not in os.listxattr(out / "etc")


def test_keep_leaves_whiteout_files(tmp_path: Path) -> None:
    raw = tar_bytes(d("etc"), f("etc/.wh.passwd", b""), f("etc/.wh..wh..opq", b""))
    out = tmp_path / "out"
    unpack_layer(io.BytesIO(raw), out, whiteouts="keep")
    assert (out / "etc/.wh.passwd").is_file() and (out / "etc/.wh..wh..opq").is_file()
    assert not os.path.lexists(out / "etc/passwd")
    assert "trusted.overlay.opaque" not in os.listxattr(out / "etc")


def test_layers_mount_as_overlay_lower_dirs(tmp_path: Path) -> None:
    base = tar_bytes(d("etc"), f("etc/passwd", b"root"), f("etc/group", b"g"), d("cache"), f("cache/old", b"o"))
    top = tar_bytes(d("etc"), f("etc/.wh.passwd", b""), d("cache"), f("cache/.wh..wh..opq", b""), f("cache/new", b"n"))
    lower1, lower2, merged = tmp_path / "l1", tmp_path / "l2", tmp_path / "m"
    unpack_layer(io.BytesIO(base), lower1)
    unpack_layer(io.BytesIO(top), lower2)
    merged.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower2}:{lower1}", str(merged)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"overlay mount unavailable: {mounted.stderr.decode().strip()}")
    try:
        assert sorted(os.listdir(merged / "etc")) == ["group"]
        assert sorted(os.listdir(merged / "cache")) == ["new"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)


# -- ordinary but tricky input -------------------------------------------------------


def test_duplicates_later_entry_wins_and_dirs_merge(tmp_path: Path, jail: Path) -> None:
    raw = tar_bytes(
        f("file", b"first"),
        f("file", b"second"),
        d("dir", mode=0o700),
        f("dir/kept", b"k"),
        d("dir", mode=0o750, uid=3),  # metadata only: contents stay
        f("was-file", b"x"),
        d("was-file"),
        d("was-dir"),
        f("was-dir/child", b"c"),
        f("was-dir", b"now a file"),
        sym("link", str(jail / "outside/bait")),
        f("link", b"replaces the link"),  # must not write through it
    )
    out = jail / "out"
    unpack_layer(io.BytesIO(raw), out)
    assert (out / "file").read_bytes() == b"second"
    assert (out / "dir/kept").read_bytes() == b"k"
    st = os.stat(out / "dir")
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_uid == 3
    assert (out / "was-file").is_dir()
    assert (out / "was-dir").read_bytes() == b"now a file"
    assert not os.path.islink(out / "link") and (out / "link").read_bytes() == b"replaces the link"
    assert (jail / "outside/bait").read_text() == "original"


def test_leading_slash_and_dot_are_stripped(tmp_path: Path) -> None:
    marker = f"contain-test-{os.getpid()}"
    raw = tar_bytes(f(f"/tmp/{marker}", b"abs"), f(f"./rel/{marker}", b"rel"), f(f"a/../b/{marker}", b"clean"))
    out = tmp_path / "out"
    unpack_layer(io.BytesIO(raw), out)
    assert (out / "tmp" / marker).read_bytes() == b"abs"
    assert (out / "rel" / marker).read_bytes() == b"rel"
    assert (out / "b" / marker).read_bytes() == b"clean"
    assert not os.path.lexists(f"/tmp/{marker}")
    assert tree(out) == {"tmp", f"tmp/{marker}", "rel", f"rel/{marker}", "b", f"b/{marker}"}  # no "a": lexical


def test_root_entry_and_implicit_parents(tmp_path: Path) -> None:
    raw = tar_bytes(d("./", mode=0o711, mtime=T0 + 5), f("x/y/z", b"z"))
    out = tmp_path / "out"
    unpack_layer(io.BytesIO(raw), out)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o711
    assert os.stat(out).st_mtime == T0 + 5
    assert stat.S_IMODE(os.stat(out / "x/y").st_mode) == 0o755
    assert (out / "x/y/z").read_bytes() == b"z"


def test_hardlink_to_symlink_pointing_outside_links_the_symlink(tmp_path: Path) -> None:
    nlink = os.stat("/etc/passwd").st_nlink
    raw = tar_bytes(sym("s", "/etc/passwd"), hard("h", "s"))
    out = tmp_path / "out"
    unpack_layer(io.BytesIO(raw), out)
    assert os.path.islink(out / "h") and os.readlink(out / "h") == "/etc/passwd"
    assert os.lstat(out / "h").st_ino == os.lstat(out / "s").st_ino
    assert os.stat("/etc/passwd").st_nlink == nlink


def test_device_entries_are_created(tmp_path: Path) -> None:
    raw = tar_bytes(
        (member("dev/zero", tarfile.CHRTYPE, devmajor=1, devminor=5, mode=0o666, uid=5, gid=6), None),
        (member("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660), None),
        (member("dev/pipe", tarfile.FIFOTYPE, mode=0o620), None),
    )
    out = tmp_path / "out"
    unpack_layer(io.BytesIO(raw), out)
    zero = os.lstat(out / "dev/zero")
    assert stat.S_ISCHR(zero.st_mode) and zero.st_rdev == os.makedev(1, 5)
    assert (stat.S_IMODE(zero.st_mode), zero.st_uid, zero.st_gid, zero.st_mtime) == (0o666, 5, 6, T0)
    assert stat.S_ISBLK(os.lstat(out / "dev/sda").st_mode) and os.lstat(out / "dev/sda").st_rdev == os.makedev(8, 0)
    assert stat.S_ISFIFO(os.lstat(out / "dev/pipe").st_mode)
    assert stat.S_IMODE(os.lstat(out / "dev/pipe").st_mode) == 0o620


def test_gnu_sparse_file(tmp_path: Path) -> None:
    info = member("sparse")
    info.pax_headers = {"GNU.sparse.map": "0,3,1048576,3", "GNU.sparse.realsize": str(2 * 1024 * 1024)}
    raw = tar_bytes((info, b"abcxyz"), f("after", b"next"))
    out = tmp_path / "out"
    unpack_layer(io.BytesIO(raw), out)
    data = (out / "sparse").read_bytes()
    assert len(data) == 2 * 1024 * 1024
    assert data[:3] == b"abc" and data[1048576:1048579] == b"xyz"
    assert data.count(0) == len(data) - 6
    assert (out / "after").read_bytes() == b"next"


def test_layer_overlay_xattrs_are_not_applied(tmp_path: Path) -> None:
    info, data = f("file", b"x")
    info.pax_headers = {
        "SCHILY.xattr.trusted.overlay.redirect": "/elsewhere",
        "SCHILY.xattr.user.overlay.opaque": "y",
        "SCHILY.xattr.user.kept": "v",
    }
    link, _ = sym("link", "file")
    link.pax_headers = {"SCHILY.xattr.user.refused": "v"}  # the kernel refuses user.* on symlinks
    out = tmp_path / "out"
    stats = unpack_layer(io.BytesIO(tar_bytes((info, data), (link, None))), out)
    assert os.listxattr(out / "file") == ["user.kept"]
    assert os.listxattr(out / "link", follow_symlinks=False) == []
    assert stats.skipped_xattrs == 3


def test_empty_blob_and_empty_tar_are_empty_layers(tmp_path: Path) -> None:
    for i, blob in enumerate([b"", b"\0" * 1024, gzip.compress(b"\0" * 10240, mtime=0)]):
        out = tmp_path / f"out{i}"
        stats = unpack_layer(io.BytesIO(blob), out)
        assert stats.files == 0 and os.listdir(out) == []
        assert stats.compressed_size == len(blob)
    assert stats.diff_id == sha(b"\0" * 10240)


def test_many_directories_exceed_the_fd_cache(tmp_path: Path) -> None:
    # Revisit 400 directories in an order that defeats any small cache.
    entries = [d(f"d{i}") for i in range(400)]
    entries += [f(f"d{i}/f", str(i).encode()) for i in range(399, -1, -1)]
    entries += [f(f"d{i}/g", b"g") for i in range(0, 400, 7)]
    out = tmp_path / "out"
    unpack_layer(io.BytesIO(tar_bytes(*entries)), out)
    assert all((out / f"d{i}/f").read_bytes() == str(i).encode() for i in range(400))
    assert os.stat(out / "d7").st_mtime == T0  # deferred mtimes reach evicted dirs too
    fds_open = len(os.listdir("/proc/self/fd"))
    unpack_layer(io.BytesIO(tar_bytes(*entries)), tmp_path / "out2")
    assert len(os.listdir("/proc/self/fd")) == fds_open  # nothing leaked


def test_destination_must_be_empty_and_is_left_alone(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "precious").write_text("keep")
    with pytest.raises(InvalidArgument, match="not empty"):
        unpack_layer(io.BytesIO(tar_bytes(f("x"))), dest)
    assert (dest / "precious").read_text() == "keep"
    empty = tmp_path / "empty"
    empty.mkdir()
    unpack_layer(io.BytesIO(tar_bytes(f("x"))), empty)
    assert (empty / "x").read_bytes() == b"data"
    with pytest.raises(InvalidArgument):
        unpack_layer(io.BytesIO(b""), tmp_path / "out", compression="rar")


# -- hostile and broken input --------------------------------------------------------


def hostile_cases(jail: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (blob, text the error must contain)."""
    outside = str(jail / "outside")
    good = tar_bytes(d("a"), f("a/b", os.urandom(200_000)), f("c", b"c" * 5000))
    gz = bytearray(gzip.compress(good, mtime=0))
    gz[len(gz) // 2] ^= 0xFF
    zs = zstandard.ZstdCompressor(write_checksum=True).compress(good)
    last = tarfile.open(fileobj=io.BytesIO(good)).getmembers()[-1]
    bad_header = bytearray(good)
    bad_header[last.offset + 100] ^= 0x55  # the last header's mode: checksum mismatch
    end_of_data = last.offset_data + (last.size + 511) // 512 * 512
    return {
        "dotdot": (tar_bytes(f("../escape")), "../escape"),
        "dotdot-nested": (tar_bytes(d("a"), f("a/../../escape")), "a/../../escape"),
        "absolute-dotdot": (tar_bytes(f("/../escape")), "/../escape"),
        "symlink-then-write": (tar_bytes(sym("link", outside), f("link/pwned")), "link/pwned"),
        "symlink-relative-climb": (tar_bytes(sym("link", "../../.."), f("link/tmp/pwned")), "link/tmp/pwned"),
        "symlink-chain": (tar_bytes(sym("a", "b"), sym("b", "../outside"), f("a/pwned")), "a/pwned"),
        "symlink-then-mkdir": (tar_bytes(sym("link", outside), d("link/sub")), "link/sub"),
        "symlink-deep-parent": (tar_bytes(d("x"), sym("x/y", outside), f("x/y/z/pwned")), "x/y/z/pwned"),
        "hardlink-etc-passwd": (tar_bytes(hard("h", "/etc/passwd")), "/etc/passwd"),
        "hardlink-dotdot": (tar_bytes(hard("h", "../outside/bait")), "h"),
        "hardlink-through-symlink": (tar_bytes(sym("link", outside), hard("h", "link/bait")), "h"),
        "device-through-symlink": (
            tar_bytes(sym("dev", outside), (member("dev/evil", tarfile.CHRTYPE, devmajor=1, devminor=3), None)),
            "dev/evil",
        ),
        "device-dotdot": (tar_bytes((member("../evil", tarfile.BLKTYPE, devmajor=8, devminor=0), None)), "../evil"),
        "whiteout-through-symlink": (tar_bytes(sym("link", outside), f("link/.wh.bait", b"")), "link/.wh.bait"),
        "opaque-through-symlink": (tar_bytes(sym("link", outside), f("link/.wh..wh..opq", b"")), "link"),
        "file-under-file": (tar_bytes(f("plain"), f("plain/child")), "plain/child"),
        "corrupt-gzip": (bytes(gz), "corrupt"),
        "truncated-gzip": (gzip.compress(good, mtime=0)[:-3000], "corrupt"),
        "truncated-zstd": (zs[: len(zs) // 2], "unexpected end of data"),
        "truncated-tar-data": (good[:100_000], "unexpected end of data"),
        "truncated-tar-at-header": (good[: last.offset], "truncated"),
        "tar-without-end-marker": (good[:end_of_data], "truncated"),
        "bad-header": (bytes(bad_header), "bad header"),
        "not-a-tar": (b"hello, this is not an archive" * 40, "tar"),
    }


HOSTILE = [
    "dotdot", "dotdot-nested", "absolute-dotdot", "symlink-then-write", "symlink-relative-climb",
    "symlink-chain", "symlink-then-mkdir", "symlink-deep-parent", "hardlink-etc-passwd", "hardlink-dotdot",
    "hardlink-through-symlink", "device-through-symlink", "device-dotdot", "whiteout-through-symlink",
    "opaque-through-symlink", "file-under-file", "corrupt-gzip", "truncated-gzip", "truncated-zstd",
    "truncated-tar-data", "truncated-tar-at-header", "tar-without-end-marker", "bad-header", "not-a-tar",
]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_layer_is_refused_and_leaves_nothing(jail: Path, case: str) -> None:
    blob, message = hostile_cases(jail)[case]
    before = snapshot(jail)
    passwd = os.stat("/etc/passwd")
    dest = jail / "dest"
    with pytest.raises(LayerError) as caught:
        unpack_layer(io.BytesIO(blob), dest)
    assert message in str(caught.value)
    assert not os.path.lexists(dest)
    assert snapshot(jail) == before  # nothing created, changed or linked outside dest
    assert (jail / "outside/bait").read_text() == "original"
    assert os.stat("/etc/passwd").st_nlink == passwd.st_nlink
    assert not os.path.lexists(jail.parent / "escape") and not os.path.lexists(jail / "escape")


def test_hostile_cases_are_all_exercised(jail: Path) -> None:
    assert sorted(hostile_cases(jail)) == sorted(HOSTILE)
    # the broken archives are broken copies of a layer that does unpack
    good = tar_bytes(d("a"), f("a/b", b"b"))
    assert unpack_layer(io.BytesIO(good), jail / "ok").files == 2


def test_failure_late_removes_a_big_partial_tree_without_following_links(jail: Path) -> None:
    deep = "/".join(["deep"] * 300)
    entries = [sym("escape", str(jail / "outside")), sym("etc-link", "/etc"), f(f"{deep}/leaf", b"l")]
    entries += [f(f"dir{i % 20}/file{i}", b"x" * 100) for i in range(2000)]
    entries += [d("ro", mode=0o555), f("ro/file", b"r")]  # a read-only dir to clean up too
    entries += [f("../late-escape")]
    before = snapshot(jail)
    dest = jail / "dest"
    with pytest.raises(LayerError, match="late-escape"):
        unpack_layer(io.BytesIO(tar_bytes(*entries)), dest)
    assert not os.path.lexists(dest)
    assert snapshot(jail) == before
    assert os.path.exists("/etc/passwd")


def test_source_errors_propagate_unchanged_and_clean_up(tmp_path: Path) -> None:
    raw = compress(tar_bytes(f("a", os.urandom(1 << 20)), f("b", b"b")), "zstd")

    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.left = io.BytesIO(raw[: len(raw) // 2])

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            chunk = self.left.read(len(b))
            if not chunk:
                raise OSError(errno.EIO, "disk on fire")
            b[: len(chunk)] = chunk
            return len(chunk)

    for compression in ("auto", "none", "gzip", "zstd"):
        blob = raw if compression in ("auto", "zstd") else None
        source = Failing()
        if blob is None:
            plain = tar_bytes(f("a", os.urandom(1 << 20)))
            raw_for = compress(plain, compression if compression != "none" else "none")
            source.left = io.BytesIO(raw_for[: len(raw_for) // 2])
        dest = tmp_path / f"out-{compression}"
        with pytest.raises(OSError) as caught:
            unpack_layer(source, dest, compression=compression)
        assert not isinstance(caught.value, LayerError)
        assert caught.value.errno == errno.EIO
        assert not os.path.lexists(dest)
