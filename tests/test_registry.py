"""The registry client against real peers on loopback: Debian's docker-registry (pushed to
with skopeo), and small http.server peers for what a well-behaved registry never does
(lying digests, oversized manifests, flaky blob storage, a Bearer token service)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from contain.errors import AuthenticationError, DigestMismatch, RegistryError
from contain.oci import mediatypes, registry as registry_module
from contain.oci.auth import DOCKER_HUB_KEY, config_key, credentials_for, login, logout
from contain.oci.reference import Reference
from contain.oci.registry import (
    AuthState,
    Challenge,
    Platform,
    RegistryClient,
    Request,
    Response,
    auth_flow,
    compute_digest,
    parse_challenges,
    select_platform,
    token_request,
)

from registry_server import RegistryServer

pytestmark = pytest.mark.skipif(
    not (shutil.which("docker-registry") and shutil.which("skopeo") and shutil.which("htpasswd")),
    reason="needs docker-registry, skopeo and htpasswd (apache2-utils)",
)

USER, PASSWORD = "alice", "correct horse"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep the retry tests quick; the policy (3 tries, doubling) is unchanged.
    monkeypatch.setattr(registry_module, "_BACKOFF", 0.01)


# --------------------------------------------------------------------------- image building


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """(gzip layer, diff id) of a tar holding `files`."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o755, 0
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), sha(tar_bytes)


def make_image(arch: str, text: bytes) -> dict[str, Any]:
    """Blobs and manifest of a one-layer OCI image."""
    layer, diff_id = make_layer({"hello": text})
    config = json.dumps({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": mediatypes.OCI_LAYER_GZIP, "digest": sha(layer),
                    "size": len(layer)}],
    }).encode()
    return {"layer": layer, "config": config, "manifest": manifest,
            "blobs": {sha(layer): layer, sha(config): config, sha(manifest): manifest}}


def write_oci_layout(directory: Path, image: dict[str, Any], tag: str) -> None:
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for digest, data in image["blobs"].items():
        (blobs / digest.split(":")[1]).write_bytes(data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (directory / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": mediatypes.OCI_MANIFEST, "digest": sha(image["manifest"]),
                       "size": len(image["manifest"]),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[RegistryServer]:
    with RegistryServer(users={USER: PASSWORD}) as server:
        yield server


@pytest.fixture
def client(registry: RegistryServer) -> Iterator[RegistryClient]:
    with RegistryClient(registry.host) as c:
        yield c


@pytest.fixture(scope="session")
def small_image(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A one-layer image pushed by skopeo from a hand-made OCI layout as test/small:1.0."""
    image = make_image("amd64", b"#!/bin/sh\necho hello\n")
    layout = tmp_path_factory.mktemp("layout") / "oci"
    write_oci_layout(layout, image, "1.0")
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", "--preserve-digests",
         "--dest-tls-verify=false", f"oci:{layout}:1.0", f"docker://{registry.host}/test/small:1.0"],
        check=True, capture_output=True, timeout=60)
    return image


class Peer:
    """A tiny HTTP/1.1 server on 127.0.0.1 answering from a table of handlers."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Callable[[BaseHTTPRequestHandler], None]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _dispatch(self) -> None:
                path = self.path.split("?")[0]
                peer.requests.append((self.command, self.path, dict(self.headers)))
                length = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(length) if length else b""
                route = peer.routes.get((self.command, path))
                if route is None:
                    reply(self, 404, b'{"errors":[{"code":"NOT_FOUND","message":"no route"}]}')
                else:
                    route(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _dispatch

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"",
          headers: Optional[dict[str, str]] = None, length: Optional[int] = None) -> None:
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


@pytest.fixture
def peer() -> Iterator[Peer]:
    server = Peer()
    yield server
    server.close()


# --------------------------------------------------------------------------- manifests


def test_get_manifest_by_tag_and_digest(client: RegistryClient, small_image: dict[str, Any]) -> None:
    by_tag = client.get_manifest("test/small", "1.0")
    assert by_tag.media_type == mediatypes.OCI_MANIFEST
    assert by_tag.data == small_image["manifest"]
    assert by_tag.digest == sha(small_image["manifest"])
    assert by_tag.index_digest is None
    by_digest = client.get_manifest("test/small", by_tag.digest)
    assert by_digest == by_tag
    assert by_tag.json()["layers"][0]["digest"] == sha(small_image["layer"])


def test_missing_manifest_is_a_404(client: RegistryClient, small_image: dict[str, Any]) -> None:
    with pytest.raises(RegistryError) as info:
        client.get_manifest("test/small", "nope")
    assert info.value.status == 404
    assert "MANIFEST_UNKNOWN" in str(info.value)


def test_manifest_list_selects_platform(client: RegistryClient, small_image: dict[str, Any],
                                        tmp_path: Path) -> None:
    arm = make_image("arm64", b"arm!\n")
    for digest, data in arm["blobs"].items():
        if digest != sha(arm["manifest"]):
            blob = tmp_path / digest.split(":")[1]
            blob.write_bytes(data)
            client.push_blob("test/small", blob, digest)
    arm_digest = client.put_manifest("test/small", sha(arm["manifest"]), mediatypes.OCI_MANIFEST,
                                     arm["manifest"])
    amd_digest = sha(small_image["manifest"])
    index = json.dumps({
        "schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
        "manifests": [
            {"mediaType": mediatypes.OCI_MANIFEST, "digest": amd_digest,
             "size": len(small_image["manifest"]),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": mediatypes.OCI_MANIFEST, "digest": arm_digest,
             "size": len(arm["manifest"]),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }).encode()
    index_digest = client.put_manifest("test/small", "multi", mediatypes.OCI_INDEX, index)
    assert index_digest == sha(index)

    amd = client.get_manifest("test/small", "multi")
    assert (amd.digest, amd.index_digest) == (amd_digest, index_digest)
    arm64 = client.get_manifest("test/small", "multi", platform="linux/arm64")
    assert (arm64.digest, arm64.data) == (arm_digest, arm["manifest"])
    assert client.get_manifest("test/small", "multi", platform="linux/aarch64/v8").digest == arm_digest
    whole = client.get_manifest("test/small", "multi", platform=None)
    assert whole.is_index and whole.digest == index_digest
    with pytest.raises(RegistryError, match=r"linux/s390x.*available: linux/amd64, linux/arm64"):
        client.get_manifest("test/small", "multi", platform="linux/s390x")


def test_select_platform_rules() -> None:
    index = {"manifests": [
        {"digest": "a", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"digest": "b", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "c", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "d", "platform": {"os": "unknown", "architecture": "unknown"}},
    ]}
    assert select_platform(index, Platform.parse("linux/arm"))["digest"] == "b"
    assert select_platform(index, Platform.parse("linux/arm/v6"))["digest"] == "a"
    assert select_platform(index, Platform.parse("linux/x86_64"))["digest"] == "c"
    assert select_platform(index, Platform.parse("windows/amd64")) is None


# --------------------------------------------------------------------------- blobs


def test_fetch_blob_verifies(client: RegistryClient, small_image: dict[str, Any],
                             tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    seen: list[tuple[int, Optional[int]]] = []
    layer = small_image["layer"]
    size = client.fetch_blob("test/small", sha(layer), dest, size=len(layer),
                             progress=lambda done, total: seen.append((done, total)))
    assert size == len(layer) and dest.read_bytes() == layer
    assert seen[-1] == (len(layer), len(layer))
    assert os.listdir(tmp_path) == ["layer"]


def test_fetch_blob_wrong_size_leaves_nothing(client: RegistryClient, small_image: dict[str, Any],
                                              tmp_path: Path) -> None:
    layer = small_image["layer"]
    with pytest.raises(DigestMismatch):
        client.fetch_blob("test/small", sha(layer), tmp_path / "x", size=len(layer) - 1)
    assert os.listdir(tmp_path) == []


def test_fetch_blob_wrong_content_leaves_nothing(peer: Peer, tmp_path: Path) -> None:
    claimed = sha(b"what was promised")
    peer.routes[("GET", f"/v2/r/blobs/{claimed}")] = lambda h: reply(h, 200, b"something else")
    with RegistryClient(peer.host) as client:
        with pytest.raises(DigestMismatch, match="hashes to " + sha(b"something else")):
            client.fetch_blob("r", claimed, tmp_path / "blob")
    assert os.listdir(tmp_path) == []


def test_missing_blob(client: RegistryClient, small_image: dict[str, Any], tmp_path: Path) -> None:
    assert client.blob_exists("test/small", sha(small_image["layer"]))
    assert not client.blob_exists("test/small", sha(b"absent"))
    with pytest.raises(RegistryError) as info:
        client.fetch_blob("test/small", sha(b"absent"), tmp_path / "x")
    assert info.value.status == 404
    assert os.listdir(tmp_path) == []


def test_push_blob_monolithic_chunked_and_mount(client: RegistryClient, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    path, digest = tmp_path / "blob", sha(data)
    path.write_bytes(data)
    assert client.push_blob("test/upload", path, digest) == "uploaded"
    assert client.push_blob("test/upload", path, digest) == "exists"
    assert client.push_blob("test/chunked", path, digest, chunk_size=64 * 1024) == "uploaded"
    assert client.push_blob("test/mounted", path, digest, mount_from="test/upload") == "mounted"
    # A mount the registry cannot do turns into an upload.
    assert client.push_blob("test/unmounted", path, digest, mount_from="test/none") == "uploaded"
    for repo in ("test/upload", "test/chunked", "test/mounted", "test/unmounted"):
        out = tmp_path / f"back-{repo.replace('/', '-')}"
        client.fetch_blob(repo, digest, out)
        assert out.read_bytes() == data


def test_push_blob_with_wrong_digest_is_refused(client: RegistryClient, tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"actual content")
    with pytest.raises(DigestMismatch):
        client.push_blob("test/wrong", path, sha(b"other content"))
    assert not client.blob_exists("test/wrong", sha(b"other content"))


def test_parallel_downloads_share_one_client(client: RegistryClient, tmp_path: Path) -> None:
    blobs = [os.urandom(50_000 + i) for i in range(8)]
    for i, data in enumerate(blobs):
        (tmp_path / f"in{i}").write_bytes(data)
        client.push_blob("test/parallel", tmp_path / f"in{i}", sha(data))
    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(
            lambda i: client.fetch_blob("test/parallel", sha(blobs[i]), tmp_path / f"out{i}"),
            range(len(blobs))))
    assert sizes == [len(b) for b in blobs]
    assert all((tmp_path / f"out{i}").read_bytes() == b for i, b in enumerate(blobs))


# --------------------------------------------------------------------------- listing


def test_catalog_tags_search(client: RegistryClient, small_image: dict[str, Any],
                             tmp_path: Path) -> None:
    for name in ("test/search-a", "test/search-b", "other/small-thing"):
        for data in (small_image["layer"], small_image["config"]):
            path = tmp_path / "blob"
            path.write_bytes(data)
            assert client.push_blob(name, path, sha(data), mount_from="test/small") == "mounted"
        client.put_manifest(name, "v1", mediatypes.OCI_MANIFEST, small_image["manifest"])
        client.put_manifest(name, "v2", mediatypes.OCI_MANIFEST, small_image["manifest"])
    everything = client.catalog()
    assert {"test/small", "test/search-a", "test/search-b"} <= set(everything)
    assert client.catalog(n=1) == everything  # one per page, following Link headers
    assert client.list_tags("test/search-a") == ["v1", "v2"]
    assert client.list_tags("test/search-a", n=1) == ["v1", "v2"]
    found = client.search("search")
    assert [r["name"] for r in found] == ["test/search-a", "test/search-b"]
    assert found[0] == {"name": "test/search-a", "description": "", "star_count": 0,
                        "is_official": False, "is_automated": False}
    assert [r["name"] for r in client.search("SMALL", limit=1)] == ["test/small"]


def test_search_uses_v1_when_offered(peer: Peer) -> None:
    answer = {"results": [{"name": "library/x", "description": "d", "star_count": 7,
                           "is_official": True, "is_automated": False}]}
    peer.routes[("GET", "/v1/search")] = lambda h: reply(h, 200, json.dumps(answer).encode())
    with RegistryClient(peer.host) as client:
        assert client.search("x") == answer["results"]
    assert "q=x" in peer.requests[-1][1]


# --------------------------------------------------------------------------- misbehaving peers


def test_wrong_content_digest_header_is_refused(peer: Peer) -> None:
    body = b'{"schemaVersion":2,"mediaType":"%s","config":{},"layers":[]}' % (
        mediatypes.OCI_MANIFEST.encode())
    headers = {"Content-Type": mediatypes.OCI_MANIFEST, "Docker-Content-Digest": sha(b"else")}
    peer.routes[("GET", "/v2/r/manifests/t")] = lambda h: reply(h, 200, body, headers)
    peer.routes[("GET", f"/v2/r/manifests/{sha(b'else')}")] = lambda h: reply(
        h, 200, body, {"Content-Type": mediatypes.OCI_MANIFEST})
    with RegistryClient(peer.host) as client:
        with pytest.raises(DigestMismatch, match="announced " + sha(b"else")):
            client.get_manifest("r", "t")
        with pytest.raises(DigestMismatch, match="hashes to " + sha(body)):
            client.get_manifest("r", sha(b"else"))


def test_huge_manifest_is_refused(client: RegistryClient, registry: RegistryServer,
                                  peer: Peer) -> None:
    huge = json.dumps({
        "schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": sha(b""), "size": 0},
        "layers": [], "annotations": {"padding": "x" * (4 * 1024 * 1024 + 10)},
    }).encode()
    try:
        client.put_manifest("test/huge", "big", mediatypes.OCI_MANIFEST, huge)
        host = registry.host  # this registry keeps what it is given: fetch it back from it
    except RegistryError:
        host = peer.host  # it refuses: let a peer serve it
    served: list[int] = []

    def serve(handler: BaseHTTPRequestHandler) -> None:
        served.append(1)
        reply(handler, 200, huge, {"Content-Type": mediatypes.OCI_MANIFEST,
                                   "Docker-Content-Digest": sha(huge)})
    peer.routes[("GET", "/v2/test/huge/manifests/big")] = serve
    with RegistryClient(host) as other:
        with pytest.raises(RegistryError, match="larger than 4194304 bytes"):
            other.get_manifest("test/huge", "big")
    # Without a Content-Length the body is read only up to the limit + 1.
    peer.routes[("GET", "/v2/r/manifests/chunked")] = lambda h: _serve_unsized(h, huge)
    with RegistryClient(peer.host) as other:
        with pytest.raises(RegistryError, match="larger than"):
            other.get_manifest("r", "chunked")


def _serve_unsized(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", mediatypes.OCI_MANIFEST)
    handler.send_header("Connection", "close")
    handler.end_headers()
    try:
        handler.wfile.write(body)
    except OSError:
        pass  # the client hung up once it had seen enough
    handler.close_connection = True


def test_flaky_blob_storage_is_retried_resumed_and_redirected(peer: Peer, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    digest = sha(data)
    calls: list[str] = []
    storage_saw_authorization: list[bool] = []

    def blob(handler: BaseHTTPRequestHandler) -> None:
        calls.append("blob")
        if len(calls) == 1:
            reply(handler, 503, b"busy")
        else:  # registries send blobs to storage elsewhere, here another name for this peer
            port = handler.server.server_address[1]
            reply(handler, 307, headers={"Location": f"http://localhost:{port}/storage/x?sig=1"})

    def storage(handler: BaseHTTPRequestHandler) -> None:
        calls.append("storage " + handler.headers.get("Range", "-"))
        storage_saw_authorization.append("Authorization" in handler.headers)
        if "Range" not in handler.headers:
            # Promise everything, deliver half, hang up: the client must resume.
            reply(handler, 200, data[:100_000], length=len(data))
            handler.close_connection = True
        else:
            start = int(handler.headers["Range"].split("=")[1].rstrip("-"))
            reply(handler, 206, data[start:],
                  {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})

    peer.routes[("GET", f"/v2/r/blobs/{digest}")] = blob
    peer.routes[("GET", "/storage/x")] = storage
    with RegistryClient(peer.host, credentials=("u", "p")) as client:
        client.auth.challenge = Challenge("basic", {})  # send credentials up front
        assert client.fetch_blob("r", digest, tmp_path / "blob") == len(data)
    assert (tmp_path / "blob").read_bytes() == data
    assert calls == ["blob", "blob", "storage -", "blob", "storage bytes=100000-"]
    # The registry got the credentials; the storage elsewhere did not.
    assert all("Authorization" in h for m, p, h in peer.requests if p.startswith("/v2/"))
    assert storage_saw_authorization == [False, False]


def test_retries_are_bounded(peer: Peer, tmp_path: Path) -> None:
    calls: list[int] = []
    digest = sha(b"x")

    def always_busy(handler: BaseHTTPRequestHandler) -> None:
        calls.append(1)
        reply(handler, 429, b"slow down")
    peer.routes[("GET", f"/v2/r/blobs/{digest}")] = always_busy
    with RegistryClient(peer.host) as client, pytest.raises(RegistryError) as info:
        client.fetch_blob("r", digest, tmp_path / "x")
    assert len(calls) == 3 and info.value.status == 429
    assert os.listdir(tmp_path) == []


def test_unreachable_registry(tmp_path: Path) -> None:
    from registry_server import free_port
    with RegistryClient(f"127.0.0.1:{free_port()}") as client:
        with pytest.raises(RegistryError, match="Connection refused"):
            client.get_manifest("r", "t")


# --------------------------------------------------------------------------- Basic auth


def test_basic_auth_registry(auth_registry: RegistryServer, tmp_path: Path) -> None:
    with RegistryClient(auth_registry.host) as anonymous:
        with pytest.raises(AuthenticationError, match="authentication required"):
            anonymous.catalog()
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"psFormat": "table {{.ID}}", "auths": {"other:1": {"auth": "eDp5"}}}))

    with pytest.raises(AuthenticationError, match="invalid username or password"):
        login(auth_registry.host, USER, "wrong", config_path=config)
    assert json.loads(config.read_text())["auths"] == {"other:1": {"auth": "eDp5"}}

    assert login(auth_registry.host, USER, PASSWORD, config_path=config) == auth_registry.host
    stored = json.loads(config.read_text())
    assert stored["psFormat"] == "table {{.ID}}"
    assert stored["auths"][auth_registry.host] == {
        "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
    assert stored["auths"]["other:1"] == {"auth": "eDp5"}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert [p.name for p in config.parent.iterdir()] == ["config.json"]  # no temp left

    credentials = credentials_for(auth_registry.host, config_path=config)
    assert credentials == (USER, PASSWORD)
    with RegistryClient(auth_registry.host, credentials=credentials) as client:
        blob = tmp_path / "blob"
        blob.write_bytes(b"private")
        assert client.push_blob("private/x", blob, sha(b"private"), chunk_size=3) == "uploaded"
        client.fetch_blob("private/x", sha(b"private"), tmp_path / "back")
        assert client.catalog() == ["private/x"]

    assert logout(auth_registry.host, config_path=config)
    assert not logout(auth_registry.host, config_path=config)
    assert credentials_for(auth_registry.host, config_path=config) is None
    assert json.loads(config.read_text())["psFormat"] == "table {{.ID}}"


def test_wrong_password_on_a_fresh_file_stores_nothing(auth_registry: RegistryServer,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    with pytest.raises(AuthenticationError):
        login(f"http://{auth_registry.host}", "mallory", PASSWORD)
    assert not (tmp_path / "cfg").exists()
    login(f"http://{auth_registry.host}/", USER, PASSWORD)  # DOCKER_CONFIG is honoured
    assert credentials_for(auth_registry.host) == (USER, PASSWORD)
    assert stat.S_IMODE((tmp_path / "cfg").stat().st_mode) == 0o700


def test_config_keys() -> None:
    assert config_key("docker.io") == DOCKER_HUB_KEY
    assert config_key("https://index.docker.io/v1/") == DOCKER_HUB_KEY
    assert config_key(Reference.parse("busybox").registry_host) == DOCKER_HUB_KEY
    assert config_key("https://localhost:5000/v2/") == "localhost:5000"


def test_hub_entry_is_found_under_its_legacy_key(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {DOCKER_HUB_KEY: {"auth": base64.b64encode(
        b"me:pw:with:colons").decode()}}}))
    assert credentials_for("docker.io", config_path=config) == ("me", "pw:with:colons")


# --------------------------------------------------------------------------- Bearer tokens


class TokenService:
    """A token endpoint and a 'registry' that demands its tokens, on one Peer."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.token_requests: list[str] = []
        self.manifest = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                                    "config": {}, "layers": []}).encode()
        realm = f"http://{peer.host}/token"
        peer.routes[("GET", "/token")] = self.token
        for path in ("/v2/", "/v2/team/app/manifests/1"):
            peer.routes[("GET", path)] = self.protected
        self.challenge = f'Bearer realm="{realm}",service="test-registry"'

    def token(self, handler: BaseHTTPRequestHandler) -> None:
        from urllib.parse import parse_qs, urlsplit
        query = parse_qs(urlsplit(handler.path).query)
        self.token_requests.append(handler.path)
        auth = handler.headers.get("Authorization")
        if auth is not None and auth != "Basic " + base64.b64encode(
                f"{USER}:{PASSWORD}".encode()).decode():
            reply(handler, 401, b'{"details":"incorrect username or password"}')
            return
        scopes = " ".join(query.get("scope", []))
        if "push" in scopes and auth is None:
            reply(handler, 401, b'{"details":"push needs an account"}')
            return
        token = "tok." + base64.b64encode(scopes.encode()).decode()
        reply(handler, 200, json.dumps({"token": token, "expires_in": 300}).encode())

    def protected(self, handler: BaseHTTPRequestHandler) -> None:
        scope = "repository:team/app:pull" if "manifests" in handler.path else ""
        given = handler.headers.get("Authorization", "")
        granted = (base64.b64decode(given[len("Bearer tok."):]).decode()
                   if given.startswith("Bearer tok.") else None)
        if granted is None or (scope and scope not in granted.split(" ")):
            challenge = self.challenge + (f',scope="{scope}"' if scope else "")
            reply(handler, 401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token please"}]}',
                  {"WWW-Authenticate": challenge})
        elif handler.path == "/v2/":
            reply(handler, 200, b"{}")
        else:
            reply(handler, 200, self.manifest, {"Content-Type": mediatypes.OCI_MANIFEST,
                                                "Docker-Content-Digest": sha(self.manifest)})


def test_bearer_token_flow(peer: Peer) -> None:
    service = TokenService(peer)
    with RegistryClient(peer.host) as client:
        first = client.get_manifest("team/app", "1")
        second = client.get_manifest("team/app", "1")
    assert first == second and first.data == service.manifest
    # One token fetched, then reused for the same scope without another 401.
    assert len(service.token_requests) == 1
    assert "scope=repository%3Ateam%2Fapp%3Apull" in service.token_requests[0]
    assert "service=test-registry" in service.token_requests[0]
    statuses = [path for method, path, _ in peer.requests if path.startswith("/v2/")]
    assert statuses == ["/v2/team/app/manifests/1"] * 3  # 401, retry, cached token


def test_bearer_login(peer: Peer, tmp_path: Path) -> None:
    TokenService(peer)
    config = tmp_path / "config.json"
    with pytest.raises(AuthenticationError, match="refused access as 'alice'"):
        login(peer.host, USER, "nope", config_path=config)
    assert not config.exists()
    login(peer.host, USER, PASSWORD, config_path=config)
    assert credentials_for(peer.host, config_path=config) == (USER, PASSWORD)


def test_auth_flow_without_io() -> None:
    """Drive the exchange by hand: it yields requests and is sent responses."""
    state = AuthState(credentials=("u", "p"))
    request = Request("GET", "https://r.example/v2/a/manifests/1")
    flow = auth_flow(request, state, ["repository:a:pull"], now=lambda: 100.0)
    assert next(flow) is request and "Authorization" not in request.headers
    challenge = 'Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"'
    token_req = flow.send(Response(401, {"WWW-Authenticate": challenge}, request.url, body=b""))
    assert token_req.url == ("https://auth.example/token?service=reg"
                             "&scope=repository%3Aa%3Apull&account=u")
    assert token_req.headers["Authorization"] == "Basic dTpw"
    retried = flow.send(Response(200, {}, token_req.url, body=b'{"token":"T","expires_in":60}'))
    assert retried is request and request.headers["Authorization"] == "Bearer T"
    with pytest.raises(StopIteration):
        flow.send(Response(200, {}, request.url, body=b""))
    # The next request in that scope carries the cached token at once.
    again = Request("GET", "https://r.example/v2/a/blobs/x")
    flow = auth_flow(again, state, ["repository:a:pull"], now=lambda: 101.0)
    assert next(flow).headers["Authorization"] == "Bearer T"
    # ... until it expires: then a new token is asked for first.
    late = Request("GET", "https://r.example/v2/a/blobs/x")
    flow = auth_flow(late, state, ["repository:a:pull"], now=lambda: 1000.0)
    assert next(flow).url.startswith("https://auth.example/token")


def test_parse_challenges_and_token_request() -> None:
    [basic, bearer] = parse_challenges(
        ['Basic realm="a \\"quoted\\" realm"', 'Bearer realm="https://t/x?a=1", error="invalid_token"'])
    assert basic == Challenge("basic", {"realm": 'a "quoted" realm'})
    assert bearer.params == {"realm": "https://t/x?a=1", "error": "invalid_token"}
    request = token_request(bearer, ["repository:a:pull", "repository:b:pull"], None)
    assert request.url == "https://t/x?a=1&scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull"
    assert "Authorization" not in request.headers
    with pytest.raises(AuthenticationError):
        token_request(Challenge("bearer", {}), [], None)


def test_scheme_choice() -> None:
    assert RegistryClient("localhost:5000").base_url == "http://localhost:5000"
    assert RegistryClient("127.0.0.2").base_url == "http://127.0.0.2"
    assert RegistryClient("[::1]:5000").base_url == "http://[::1]:5000"
    assert RegistryClient("localhost:5000", insecure=False).base_url == "https://localhost:5000"
    assert RegistryClient("quay.io").base_url == "https://quay.io"
    assert RegistryClient("docker.io").base_url == "https://registry-1.docker.io"
    assert RegistryClient("my.lan:5000", insecure=True).base_url == "http://my.lan:5000"


def test_compute_digest() -> None:
    assert compute_digest(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
