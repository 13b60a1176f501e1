"""A client for the OCI distribution API (/v2/) of image registries.

Three parts, each replaceable on its own:

* the authentication exchange (401 challenge -> token -> retry) is a generator that does no
  I/O: it yields requests and is sent the responses (as httpx does), so it is testable
  against any peer and shared by every request;
* the transport sends one request and hands back the response unread, with keep-alive
  connections pooled per thread (so a ThreadPoolExecutor may share one client);
* RegistryClient speaks the API: manifests (with platform selection and digest checks),
  blobs (streamed, verified, retried, resumed), uploads, tags, catalog and search.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import re
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import IO, Any, Callable, Optional, Protocol, Union

import attrs

from ..errors import AuthenticationError, DigestMismatch, InvalidReference, RegistryError
from . import mediatypes
from .reference import DEFAULT_DOMAIN, DOCKER_HUB_REGISTRY, validate_digest

MANIFEST_SIZE_LIMIT = 4 * 1024 * 1024
# Error bodies and token answers are small; never buffer an unbounded body by mistake.
_SMALL_BODY_LIMIT = 1024 * 1024
DEFAULT_TIMEOUT = 30.0
DEFAULT_ACCEPT = (
    mediatypes.OCI_INDEX,
    mediatypes.DOCKER_MANIFEST_LIST,
    mediatypes.OCI_MANIFEST,
    mediatypes.DOCKER_MANIFEST,
)
_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
_TRIES = 3
_BACKOFF = 0.25  # seconds, doubled each try, with jitter
_MAX_REDIRECTS = 5
_COPY_BLOCK = 256 * 1024

Credentials = tuple[str, str]
Progress = Callable[[int, Optional[int]], None]


class Readable(Protocol):
    def read(self, amount: int = ..., /) -> bytes: ...


# A body is bytes or anything read()-able (streamed); seekable ones can be sent again.
Body = Union[bytes, IO[bytes], Readable, None]


# --------------------------------------------------------------------------- messages


@attrs.define
class Request:
    """One HTTP request; `url` is absolute. `read_body` asks the driver for a loaded body."""

    method: str
    url: str
    headers: dict[str, str] = attrs.field(factory=dict)
    body: Body = None
    read_body: bool = False
    # Where a seekable body started, so the driver can rewind it to send it again.
    body_start: Optional[int] = None


class Response:
    """A response whose body is read on demand; the connection returns to its pool when
    the body has been read to the end, and is closed if the body is abandoned."""

    def __init__(self, status: int, headers: Any, url: str, raw: Any = None,
                 release: Optional[Callable[[bool], None]] = None,
                 body: Optional[bytes] = None) -> None:
        self.status = status
        self.headers = headers  # anything with a case-insensitive .get(); .get_all() if multi
        self.url = url
        self._raw = raw
        self._release = release
        self.body = body

    def header(self, name: str) -> Optional[str]:
        value = self.headers.get(name)
        return None if value is None else str(value)

    def header_all(self, name: str) -> list[str]:
        if hasattr(self.headers, "get_all"):
            return list(self.headers.get_all(name) or [])
        value = self.headers.get(name)
        return [str(value)] if value is not None else []

    def read(self, amount: int = -1) -> bytes:
        """Up to `amount` bytes of the body (all with -1); b"" at its end."""
        data: bytes
        if self.body is not None:
            split = len(self.body) if amount < 0 else amount
            data, self.body = self.body[:split], self.body[split:]
            return data
        if self._raw is None:
            return b""
        data = self._raw.read() if amount < 0 else self._raw.read(amount)
        if amount < 0 or not data:
            self.close(reuse=True)
        return data

    def load(self, limit: int = _SMALL_BODY_LIMIT) -> bytes:
        """Read the whole body, refusing (RegistryError) one longer than `limit` bytes."""
        if self.body is not None:
            return self.body
        length = self.header("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            self.close(reuse=False)
            raise RegistryError(
                f"{self.url}: body of {length} bytes exceeds the limit of {limit}", status=self.status
            )
        chunks, total = [], 0
        while True:
            chunk = self._raw.read(min(_COPY_BLOCK, limit + 1 - total)) if self._raw else b""
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                self.close(reuse=False)
                raise RegistryError(f"{self.url}: body exceeds the limit of {limit} bytes",
                                    status=self.status)
        self.close(reuse=True)
        self.body = b"".join(chunks)
        return self.body

    def close(self, reuse: bool = False) -> None:
        """Give the connection back (reuse=True, only once the body is read) or drop it."""
        release, self._release = self._release, None
        raw, self._raw = self._raw, None
        if release is not None:
            release(reuse and raw is not None and raw.isclosed())

    def discard(self) -> None:
        """Drain a small body so the connection can be reused; drop it otherwise."""
        if self._raw is None:
            return
        try:
            self.load()
        except (RegistryError, OSError, http.client.HTTPException):
            self.close(reuse=False)

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(reuse=True)  # reused only if the body was read to its end


# --------------------------------------------------------------------------- auth exchange


@attrs.frozen
class Challenge:
    """One challenge of a WWW-Authenticate header: scheme (lowercase) and parameters."""

    scheme: str
    params: Mapping[str, str] = attrs.field(factory=dict)


_CHALLENGE_PART = re.compile(
    r"""\s*(?:
        (?P<key>[!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<plain>[^\s,]*))
      | (?P<scheme>[!#$%&'*+.^_`|~0-9A-Za-z-]+)
    )\s*,?""",
    re.VERBOSE,
)


def parse_challenges(values: Union[str, Iterable[str]]) -> list[Challenge]:
    """Parse WWW-Authenticate header value(s) into challenges (RFC 7235, leniently)."""
    if isinstance(values, str):
        values = [values]
    challenges: list[Challenge] = []
    for value in values:
        scheme: Optional[str] = None
        params: dict[str, str] = {}
        pos = 0
        while pos < len(value):
            match = _CHALLENGE_PART.match(value, pos)
            if not match or match.end() == pos:
                break
            pos = match.end()
            if match.group("scheme"):
                if scheme is not None:
                    challenges.append(Challenge(scheme, params))
                scheme, params = match.group("scheme").lower(), {}
            elif scheme is not None:
                raw = match.group("quoted")
                text = re.sub(r"\\(.)", r"\1", raw) if raw is not None else match.group("plain")
                params[match.group("key").lower()] = text
        if scheme is not None:
            challenges.append(Challenge(scheme, params))
    return challenges


def basic_authorization(credentials: Credentials) -> str:
    user, password = credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def token_request(challenge: Challenge, scopes: Iterable[str],
                  credentials: Optional[Credentials]) -> Request:
    """The GET to a Bearer challenge's realm asking for a token for `scopes`."""
    realm = challenge.params.get("realm")
    if not realm:
        raise AuthenticationError("Bearer challenge without a realm")
    query: list[tuple[str, str]] = []
    if challenge.params.get("service"):
        query.append(("service", challenge.params["service"]))
    query.extend(("scope", scope) for scope in scopes)
    if credentials is not None:
        query.append(("account", credentials[0]))
    separator = "&" if "?" in realm else "?"
    url = realm + (separator + urllib.parse.urlencode(query) if query else "")
    headers = {"Accept": "application/json"}
    if credentials is not None:
        headers["Authorization"] = basic_authorization(credentials)
    return Request("GET", url, headers, read_body=True)


def parse_token_response(body: bytes, now: float) -> tuple[str, float]:
    """(token, expiry time) from a token server's JSON answer."""
    try:
        answer = json.loads(body)
        token = answer.get("token") or answer.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise AuthenticationError("token server answered without a token")
    expires_in = answer.get("expires_in")
    # 60 s is what the token spec says to assume; keep a margin for clock and latency.
    lifetime = expires_in if isinstance(expires_in, (int, float)) and expires_in > 0 else 60
    return token, now + max(lifetime - 5, 1)


def _merge_scopes(ours: Iterable[str], theirs: Optional[str]) -> tuple[str, ...]:
    merged = list(dict.fromkeys(ours))
    for scope in (theirs or "").split(" "):
        if scope and scope not in merged:
            merged.append(scope)
    return tuple(merged)


class AuthState:
    """What one client has learnt about a registry's auth: the scheme and tokens per scope."""

    def __init__(self, credentials: Optional[Credentials] = None) -> None:
        self.credentials = credentials
        self.challenge: Optional[Challenge] = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def cached_token(self, scopes: tuple[str, ...], now: float) -> Optional[str]:
        with self._lock:
            entry = self._tokens.get(scopes)
            return entry[0] if entry and entry[1] > now else None

    def store_token(self, scopes: tuple[str, ...], token: str, expires: float) -> None:
        with self._lock:
            self._tokens[scopes] = (token, expires)


def _pick_challenge(response: Response) -> Optional[Challenge]:
    challenges = parse_challenges(response.header_all("WWW-Authenticate"))
    for wanted in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == wanted:
                return challenge
    return None


def _fetch_token(state: AuthState, challenge: Challenge, scopes: tuple[str, ...],
                 now: Callable[[], float]) -> Generator[Request, Response, tuple[str, float]]:
    answer = yield token_request(challenge, scopes, state.credentials)
    if answer.status in (401, 403):
        who = f"as {state.credentials[0]!r}" if state.credentials else "anonymously"
        raise AuthenticationError(
            f"token server {challenge.params.get('realm')} refused access {who}: "
            f"{_error_text(answer)}", status=answer.status)
    if answer.status != 200:
        raise RegistryError(f"token server {challenge.params.get('realm')} answered "
                            f"{answer.status}: {_error_text(answer)}", status=answer.status)
    token, expires = parse_token_response(answer.body or b"", now())
    state.store_token(scopes, token, expires)
    return token, expires


def auth_flow(request: Request, state: AuthState, scopes: Iterable[str] = (),
              now: Callable[[], float] = time.monotonic) -> Generator[Request, Response, None]:
    """Authenticate `request`: yields requests to send, is sent their responses.

    Sends what is already known (Basic, or a cached Bearer token), and on a 401 answers the
    challenge once: Basic with the credentials, Bearer by fetching a token for our scopes
    plus the challenge's. A second 401 is an AuthenticationError.
    """
    wanted = tuple(dict.fromkeys(scopes))
    known = state.challenge
    sent_credentials = False
    if known is not None and known.scheme == "basic" and state.credentials:
        request.headers["Authorization"] = basic_authorization(state.credentials)
        sent_credentials = True
    elif known is not None and known.scheme == "bearer":
        token = state.cached_token(wanted, now())
        if token is None:
            token, _ = yield from _fetch_token(state, known, wanted, now)
        request.headers["Authorization"] = "Bearer " + token
        sent_credentials = True

    response = yield request
    if response.status != 401:
        return
    challenge = _pick_challenge(response)
    if challenge is None:
        raise AuthenticationError(f"{request.url}: unauthorized, and no usable challenge: "
                                  f"{_error_text(response)}", status=401)
    state.challenge = challenge
    if challenge.scheme == "basic":
        if state.credentials is None:
            raise AuthenticationError(f"{request.url}: authentication required "
                                      f"({_error_text(response)})", status=401)
        if sent_credentials:
            raise AuthenticationError(f"{request.url}: invalid username or password", status=401)
        request.headers["Authorization"] = basic_authorization(state.credentials)
    else:
        merged = _merge_scopes(wanted, challenge.params.get("scope"))
        token, expires = yield from _fetch_token(state, challenge, merged, now)
        if merged != wanted:
            # The registry wanted more than we asked for; ask for the same next time.
            state.store_token(wanted, token, expires)
        request.headers["Authorization"] = "Bearer " + token
    response = yield request
    if response.status == 401:
        if challenge.scheme == "basic":
            raise AuthenticationError(f"{request.url}: invalid username or password", status=401)
        who = f"as {state.credentials[0]!r}" if state.credentials else "anonymously"
        raise AuthenticationError(f"{request.url}: access denied {who}: {_error_text(response)}",
                                  status=401)


def _error_text(response: Response) -> str:
    """The registry's error message (its JSON 'errors' list), else the status line."""
    try:
        body = response.load()
    except (RegistryError, OSError, http.client.HTTPException):
        body = b""
    try:
        errors = json.loads(body).get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors]
        if parts:
            return "; ".join(parts)
    except (ValueError, AttributeError):
        pass
    text = body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {response.status}" + (f" {text}" if text else "")


def _error_codes(response: Response) -> set[str]:
    try:
        return {e.get("code") for e in json.loads(response.body or b"{}").get("errors") or []}
    except (ValueError, AttributeError):
        return set()


# --------------------------------------------------------------------------- transport


class Transport(Protocol):
    def send(self, request: Request) -> Response: ...
    def close(self) -> None: ...


class _Unreachable(RegistryError):
    """A connection-level failure: worth retrying."""


class HTTPTransport:
    """http.client with keep-alive connections pooled per thread and per (scheme, host)."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.timeout = timeout
        self._ssl = ssl_context
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _pool(self) -> dict[tuple[str, str], list[http.client.HTTPConnection]]:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        return pool

    def _connect(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            conn = http.client.HTTPSConnection(netloc, timeout=self.timeout, context=self._ssl,
                                               blocksize=_COPY_BLOCK)
        elif scheme == "http":
            conn = http.client.HTTPConnection(netloc, timeout=self.timeout, blocksize=_COPY_BLOCK)
        else:
            raise RegistryError(f"unsupported URL scheme {scheme!r}")
        with self._lock:
            self._all.append(conn)
        return conn

    def send(self, request: Request) -> Response:
        parts = urllib.parse.urlsplit(request.url)
        key = (parts.scheme, parts.netloc)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        idle = self._pool().setdefault(key, [])
        while True:
            reused = bool(idle)
            conn = idle.pop() if idle else self._connect(*key)
            if request.body_start is not None:
                request.body.seek(request.body_start)  # type: ignore[union-attr]
            elif hasattr(request.body, "seek"):
                request.body_start = request.body.tell()  # type: ignore[union-attr]
            try:
                conn.request(request.method, target, body=request.body, headers=request.headers)
                raw = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop(conn)
                if reused:
                    continue  # the server closed an idle keep-alive connection; say it again
                raise _Unreachable(f"{request.method} {request.url}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(conn)
                raise _Unreachable(f"{request.method} {request.url}: {exc}") from exc
            break

        def release(reusable: bool, conn: http.client.HTTPConnection = conn) -> None:
            if reusable and not raw.will_close:
                idle.append(conn)
            else:
                self._drop(conn)

        if request.method == "HEAD":
            raw.read()  # no body follows; this marks the response finished
        return Response(raw.status, raw.headers, request.url, raw, release)

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


# --------------------------------------------------------------------------- data


@attrs.frozen
class Manifest:
    """A manifest or index as fetched: its exact bytes, media type and verified digest.

    `index_digest` is the digest of the index it was selected from (Docker's RepoDigest),
    or None when the reference named this manifest directly.
    """

    media_type: str
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    digest: str
    index_digest: Optional[str] = None

    @property
    def is_index(self) -> bool:
        return self.media_type in mediatypes.INDEXES

    def json(self) -> Any:
        return json.loads(self.data)


@attrs.frozen
class Platform:
    """os/architecture[/variant], normalised as containerd does (x86_64 -> amd64, ...)."""

    os: str
    architecture: str
    variant: Optional[str] = None

    @classmethod
    def parse(cls, text: str) -> "Platform":
        parts = text.lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidReference(f"invalid platform {text!r} (want os/arch[/variant])")
        return cls.of(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def of(cls, os_: str, arch: str, variant: Optional[str] = None) -> "Platform":
        arch = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386",
                "armhf": "arm", "armel": "arm"}.get(arch, arch)
        if arch == "arm64" and variant in (None, "8", "v8"):
            variant = None  # arm64 is v8 unless it says otherwise
        elif arch == "arm":
            # "linux/arm" means v7, as in containerd's normalisation.
            variant = "v" + variant if variant in ("5", "6", "7", "8") else (variant or "v7")
        return cls(os_, arch, variant or None)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def select_platform(index: Mapping[str, Any], platform: Platform) -> Optional[Mapping[str, Any]]:
    """The index entry for `platform`: exact variant first, else (when `platform` names no
    variant) the first entry of the same os/architecture."""
    fallback: Optional[Mapping[str, Any]] = None
    entry: Mapping[str, Any]
    for entry in index.get("manifests") or []:
        spec = entry.get("platform") or {}
        if not isinstance(spec, Mapping):
            continue
        have = Platform.of(str(spec.get("os", "")), str(spec.get("architecture", "")),
                           spec.get("variant"))
        if (have.os, have.architecture) != (platform.os, platform.architecture):
            continue
        if have.variant == platform.variant:
            return entry
        if platform.variant is None and fallback is None:
            fallback = entry
    return fallback


def _hasher(digest: str) -> Any:
    return hashlib.new(digest.partition(":")[0])


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _media_type_of(response: Response, data: bytes) -> str:
    declared = (response.header("Content-Type") or "").split(";")[0].strip()
    if declared in DEFAULT_ACCEPT or declared in _SCHEMA1:
        return declared
    try:
        document = json.loads(data)
    except ValueError:
        raise RegistryError(f"{response.url}: manifest is not JSON") from None
    inner = document.get("mediaType") if isinstance(document, dict) else None
    if isinstance(inner, str) and inner:
        return inner
    if isinstance(document, dict) and document.get("schemaVersion") == 1:
        return _SCHEMA1[0]
    if isinstance(document, dict) and "manifests" in document:
        return mediatypes.OCI_INDEX
    return mediatypes.OCI_MANIFEST


def _is_loopback(host: str) -> bool:
    name = host
    if name.startswith("["):
        name = name[1:name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":")[0]
    return name in ("localhost", "::1") or name.startswith("127.") or name.endswith(".localhost")


def _transient(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


def _sleep_before_retry(attempt: int, response: Optional[Response] = None) -> None:
    delay = _BACKOFF * (2 ** attempt) * (0.5 + random.random())
    retry_after = response.header("Retry-After") if response is not None else None
    if retry_after and retry_after.isdigit():
        delay = max(delay, min(int(retry_after), 10))  # honour it, within reason
    time.sleep(delay)


class _FileSlice:
    """A read()-able window of a file, so http.client can stream one chunk of it."""

    def __init__(self, file: IO[bytes], start: int, length: int) -> None:
        self._file, self._start, self._left, self._length = file, start, length, length
        file.seek(start)

    def read(self, amount: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        amount = self._left if amount < 0 else min(amount, self._left)
        data = self._file.read(amount)
        self._left -= len(data)
        return data

    def tell(self) -> int:
        return self._length - self._left

    def seek(self, offset: int) -> None:
        self._file.seek(self._start + offset)
        self._left = self._length - offset


# --------------------------------------------------------------------------- client


class RegistryClient:
    """One registry's /v2/ API. Safe to share between threads (connections are per thread).

    `host` is 'host[:port]' as in an image reference ('docker.io' means Docker Hub).
    Plain http is used for loopback hosts and when `insecure` is True; https otherwise
    (insecure=False forces https even on loopback).
    """

    def __init__(self, host: str, *, insecure: Optional[bool] = None,
                 credentials: Optional[Credentials] = None, timeout: float = DEFAULT_TIMEOUT,
                 transport: Optional[Transport] = None) -> None:
        if host in (DEFAULT_DOMAIN, "index.docker.io"):
            host = DOCKER_HUB_REGISTRY
        self.host = host
        plain = insecure if insecure is not None else _is_loopback(host)
        self.base_url = f"{'http' if plain else 'https'}://{host}"
        self.auth = AuthState(credentials)
        self.transport: Transport = transport or HTTPTransport(timeout=timeout)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing

    def _url(self, path: str, query: Optional[Mapping[str, str]] = None) -> str:
        url = path if "://" in path else self.base_url + path
        if query:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(query)
        return url

    def request(self, method: str, url: str, *, scopes: Iterable[str] = (),
                headers: Optional[Mapping[str, str]] = None, body: Body = None,
                follow_redirects: bool = True, retry: bool = False) -> Response:
        """Send one authenticated request; the caller reads or closes the response.

        retry=True retries connection failures, 5xx and 429 (for idempotent requests).
        """
        attempt = 0
        while True:
            try:
                response = self._send(method, url, scopes, headers, body, follow_redirects)
            except _Unreachable:
                if not retry or attempt + 1 >= _TRIES:
                    raise
                _sleep_before_retry(attempt)
                attempt += 1
                continue
            if retry and _transient(response.status) and attempt + 1 < _TRIES:
                response.discard()
                _sleep_before_retry(attempt, response)
                attempt += 1
                continue
            return response

    def _send(self, method: str, url: str, scopes: Iterable[str],
              headers: Optional[Mapping[str, str]], body: Body,
              follow_redirects: bool) -> Response:
        request = Request(method, url, dict(headers or {}), body)
        flow = auth_flow(request, self.auth, scopes)
        outgoing = next(flow)
        while True:
            response = self.transport.send(outgoing)
            if outgoing.read_body:
                response.load()
            try:
                outgoing = flow.send(response)
            except StopIteration:
                break
            except BaseException:
                response.discard()
                raise
            response.discard()

        redirects = 0
        # Only reads are redirected (blobs to storage); a body would not be sent again.
        while (follow_redirects and method in ("GET", "HEAD")
               and response.status in (301, 302, 303, 307, 308)):
            location = response.header("Location")
            if not location or redirects >= _MAX_REDIRECTS:
                break
            response.discard()
            redirects += 1
            target = urllib.parse.urljoin(response.url, location)
            same_host = urllib.parse.urlsplit(target).netloc == urllib.parse.urlsplit(url).netloc
            forward = {k: v for k, v in request.headers.items()
                       # Blob storage (S3, a CDN) gets a signed URL; our token is not for it.
                       if same_host or k.lower() != "authorization"}
            response = self.transport.send(Request(method, target, forward))
        return response

    def _fail(self, response: Response, what: str) -> RegistryError:
        text = _error_text(response)
        cls = AuthenticationError if response.status in (401, 403) else RegistryError
        return cls(f"{what}: {self.host} answered {response.status}: {text}",
                   status=response.status)

    @staticmethod
    def _pull(repo: str) -> list[str]:
        return [f"repository:{repo}:pull"]

    @staticmethod
    def _push(repo: str) -> list[str]:
        return [f"repository:{repo}:pull,push"]

    # ---- base

    def ping(self) -> bool:
        """GET /v2/ (authenticating if asked to); True if the registry speaks the v2 API."""
        with self.request("GET", self._url("/v2/"), retry=True) as response:
            if response.status == 200:
                response.discard()
                return True
            if response.status == 404:
                return False
            raise self._fail(response, "GET /v2/")

    def authenticate(self) -> None:
        """Prove the credentials work (as `docker login` does): AuthenticationError if not.

        A registry open to anyone accepts any credentials here, as it does for Docker.
        """
        if not self.ping():
            raise RegistryError(f"{self.host} does not serve the registry API (/v2/)")

    # ---- manifests

    def get_manifest(self, repo: str, reference: str, *, platform: Optional[str] = "linux/amd64",
                     accept: Iterable[str] = DEFAULT_ACCEPT) -> Manifest:
        """Fetch a manifest by tag or digest, resolving an index to `platform`'s manifest.

        platform=None returns an index itself. The content is checked against the
        Docker-Content-Digest header and, when fetched by digest, against that digest.
        """
        accept = tuple(accept)
        manifest = self._fetch_manifest(repo, reference, accept)
        if platform is None or not manifest.is_index:
            return manifest
        wanted = Platform.parse(platform)
        try:
            index = manifest.json()
            entry = select_platform(index, wanted)
        except (ValueError, AttributeError, TypeError):
            raise RegistryError(f"{repo}:{reference}: malformed index") from None
        if entry is None:
            available = ", ".join(
                str(Platform.of(str(p.get("os")), str(p.get("architecture")), p.get("variant")))
                for p in (e.get("platform") or {} for e in index.get("manifests") or [])
                if p) or "none"
            raise RegistryError(f"{repo}:{reference}: no manifest for platform {wanted} "
                                f"(available: {available})")
        digest = entry.get("digest")
        if not isinstance(digest, str):
            raise RegistryError(f"{repo}:{reference}: index entry without a digest")
        chosen = self._fetch_manifest(repo, digest, accept)
        if chosen.is_index:
            raise RegistryError(f"{repo}@{digest}: an index inside an index is not supported")
        return attrs.evolve(chosen, index_digest=manifest.digest)

    def _fetch_manifest(self, repo: str, reference: str, accept: tuple[str, ...]) -> Manifest:
        by_digest = ":" in reference
        if by_digest:
            validate_digest(reference)
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        with self.request("GET", url, scopes=self._pull(repo),
                          headers={"Accept": ", ".join(accept)}, retry=True) as response:
            if response.status != 200:
                raise self._fail(response, f"manifest {repo}:{reference}")
            try:
                data = response.load(MANIFEST_SIZE_LIMIT)
            except RegistryError:
                raise RegistryError(f"manifest {repo}:{reference} is larger than "
                                    f"{MANIFEST_SIZE_LIMIT} bytes; refused") from None
            announced = response.header("Docker-Content-Digest")
            media_type = _media_type_of(response, data)
        if media_type in _SCHEMA1:
            raise RegistryError(f"manifest {repo}:{reference} uses Docker schema 1, "
                                "which is not supported")
        if announced:
            try:
                validate_digest(announced)
            except InvalidReference:
                raise RegistryError(f"manifest {repo}:{reference}: registry sent a malformed "
                                    f"Docker-Content-Digest {announced!r}") from None
            actual = compute_digest(data, announced.partition(":")[0])
            if actual != announced:
                raise DigestMismatch(f"manifest {repo}:{reference}: content hashes to {actual}, "
                                     f"registry announced {announced}")
        if by_digest:
            actual = compute_digest(data, reference.partition(":")[0])
            if actual != reference:
                raise DigestMismatch(f"manifest {repo}@{reference}: content hashes to {actual}")
            digest = reference
        else:
            digest = announced if announced else compute_digest(data)
        return Manifest(media_type, data, digest)

    def put_manifest(self, repo: str, reference: str, media_type: str, data: bytes) -> str:
        """Upload a manifest under a tag or its digest; returns its digest."""
        digest = compute_digest(data)
        if ":" in reference and reference != digest:
            raise DigestMismatch(f"manifest for {repo}@{reference} hashes to {digest}")
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        with self.request("PUT", url, scopes=self._push(repo), body=data,
                          headers={"Content-Type": media_type}) as response:
            if response.status not in (200, 201):
                raise self._fail(response, f"put manifest {repo}:{reference}")
            answered = response.header("Docker-Content-Digest")
            response.discard()
        if answered and answered != digest:
            raise DigestMismatch(f"registry stored manifest {repo}:{reference} as {answered}, "
                                 f"expected {digest}")
        return digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete a manifest by digest (the registry must allow deletes)."""
        validate_digest(digest)
        url = self._url(f"/v2/{repo}/manifests/{digest}")
        with self.request("DELETE", url, scopes=[f"repository:{repo}:delete"]) as response:
            if response.status not in (200, 202):
                raise self._fail(response, f"delete manifest {repo}@{digest}")
            response.discard()

    # ---- blobs

    def blob_exists(self, repo: str, digest: str) -> bool:
        validate_digest(digest)
        url = self._url(f"/v2/{repo}/blobs/{digest}")
        with self.request("HEAD", url, scopes=self._pull(repo), retry=True) as response:
            if response.status == 200:
                return True
            if response.status == 404:
                return False
            raise self._fail(response, f"HEAD blob {repo}@{digest}")

    def fetch_blob(self, repo: str, digest: str, dest_path: Union[str, os.PathLike[str]], *,
                   size: Optional[int] = None, progress: Optional[Progress] = None) -> int:
        """Download a blob to `dest_path`, verified; returns its size.

        The bytes go to a temporary file beside `dest_path`, hashed as they arrive, and are
        renamed into place only once digest (and `size`, if given) match; on any failure
        nothing is left behind. Transient failures are retried, resuming with a Range
        request where the server allows it.
        """
        validate_digest(digest)
        dest = os.fspath(dest_path)
        directory = os.path.dirname(os.path.abspath(dest))
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(dest)}.",
                                    suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as out:
                hasher, written = self._download(repo, digest, out, size, progress)
                actual = f"{digest.partition(':')[0]}:{hasher.hexdigest()}"
                if actual != digest:
                    raise DigestMismatch(f"blob {repo}@{digest}: content hashes to {actual}")
                if size is not None and written != size:
                    raise DigestMismatch(f"blob {repo}@{digest}: {written} bytes, expected {size}")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, dest)
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise
        return written

    def _download(self, repo: str, digest: str, out: IO[bytes], size: Optional[int],
                  progress: Optional[Progress]) -> tuple[Any, int]:
        url = self._url(f"/v2/{repo}/blobs/{digest}")
        hasher, written = _hasher(digest), 0
        for attempt in range(_TRIES):
            headers = {"Range": f"bytes={written}-"} if written else {}
            response: Optional[Response] = None
            try:
                response = self.request("GET", url, scopes=self._pull(repo), headers=headers)
                if _transient(response.status):
                    raise _Unreachable(f"blob {repo}@{digest}: {self.host} answered "
                                       f"{response.status}", status=response.status)
                if response.status == 206 and written:
                    match = re.match(r"bytes (\d+)-", response.header("Content-Range") or "")
                    if not match or int(match.group(1)) != written:
                        raise _Unreachable(f"blob {repo}@{digest}: unexpected Content-Range")
                elif response.status == 200:
                    if written:  # the server ignored Range: start over
                        out.seek(0)
                        out.truncate()
                        hasher, written = _hasher(digest), 0
                else:
                    raise self._fail(response, f"blob {repo}@{digest}")
                length = response.header("Content-Length")
                expected = written + int(length) if length and length.isdigit() else None
                total = size if size is not None else (expected if response.status == 200 else None)
                while True:
                    try:
                        chunk = response.read(_COPY_BLOCK)
                    except (OSError, http.client.HTTPException) as exc:
                        # A body cut short is as transient as a refused connection.
                        raise _Unreachable(f"blob {repo}@{digest}: {exc}") from exc
                    if not chunk:
                        break
                    written += len(chunk)
                    if size is not None and written > size:
                        raise DigestMismatch(f"blob {repo}@{digest}: more than the "
                                             f"{size} bytes announced")
                    hasher.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(written, total)
                if expected is not None and written < expected:
                    raise _Unreachable(f"blob {repo}@{digest}: connection closed after "
                                       f"{written} of {expected} bytes")
                return hasher, written
            except _Unreachable as exc:
                if attempt + 1 >= _TRIES:
                    raise RegistryError(f"{exc} (gave up after {_TRIES} tries)",
                                        status=exc.status) from exc
                _sleep_before_retry(attempt, response)
            finally:
                if response is not None:
                    response.close(reuse=True)
        raise AssertionError("unreachable")

    def push_blob(self, repo: str, path: Union[str, os.PathLike[str]], digest: str, *,
                  mount_from: Optional[str] = None, chunk_size: Optional[int] = None) -> str:
        """Upload a file as a blob; returns 'exists', 'mounted' or 'uploaded'.

        Skips a blob the repository already has; with `mount_from` asks the registry to
        link it from that repository instead of uploading; with `chunk_size` uploads in
        PATCH chunks, otherwise in one PUT.
        """
        validate_digest(digest)
        if self.blob_exists(repo, digest):
            return "exists"
        scopes = self._push(repo)
        query: dict[str, str] = {}
        if mount_from:
            scopes = scopes + [f"repository:{mount_from}:pull"]
            query = {"mount": digest, "from": mount_from}
        with self.request("POST", self._url(f"/v2/{repo}/blobs/uploads/", query),
                          scopes=scopes, headers={"Content-Length": "0"}, body=b"") as response:
            if response.status == 201 and mount_from:
                response.discard()
                return "mounted"
            if response.status != 202:
                raise self._fail(response, f"start upload to {repo}")
            location = self._location(response)
            response.discard()

        size = os.path.getsize(path)
        with open(path, "rb") as file:
            if chunk_size:
                offset = 0
                while offset < size:
                    length = min(chunk_size, size - offset)
                    headers = {"Content-Type": "application/octet-stream",
                               "Content-Length": str(length),
                               "Content-Range": f"{offset}-{offset + length - 1}"}
                    with self.request("PATCH", location, scopes=scopes, headers=headers,
                                      body=_FileSlice(file, offset, length)) as response:
                        if response.status != 202:
                            raise self._fail(response, f"upload chunk of {digest} to {repo}")
                        location = self._location(response)
                        response.discard()
                    offset += length
                final_body: Body = b""
                final_length = 0
            else:
                final_body, final_length = _FileSlice(file, 0, size), size
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Length": str(final_length)}
            with self.request("PUT", self._url(location, {"digest": digest}), scopes=scopes,
                              headers=headers, body=final_body) as response:
                if response.status != 201:
                    response.load()
                    if "DIGEST_INVALID" in _error_codes(response):
                        raise DigestMismatch(f"{path} does not hash to {digest} "
                                             f"(registry: {_error_text(response)})")
                    raise self._fail(response, f"finish upload of {digest} to {repo}")
                answered = response.header("Docker-Content-Digest")
                response.discard()
        if answered and answered != digest:
            raise DigestMismatch(f"registry stored {path} as {answered}, expected {digest}")
        return "uploaded"

    def _location(self, response: Response) -> str:
        location = response.header("Location")
        if not location:
            raise RegistryError(f"{response.url}: upload answer without a Location")
        return urllib.parse.urljoin(response.url, location)

    # ---- listing

    def _paginate(self, path: str, key: str, scopes: list[str],
                  n: Optional[int]) -> Iterator[str]:
        url: Optional[str] = self._url(path, {"n": str(n)} if n else None)
        while url:
            with self.request("GET", url, scopes=scopes, retry=True) as response:
                if response.status != 200:
                    raise self._fail(response, f"GET {path}")
                try:
                    items = json.loads(response.load()).get(key) or []
                except (ValueError, AttributeError):
                    raise RegistryError(f"{url}: answer is not the expected JSON") from None
                url = _next_link(response, url)
            yield from items

    def list_tags(self, repo: str, *, n: Optional[int] = None) -> list[str]:
        """All tags of `repo` (fetched `n` per page when given)."""
        return list(self._paginate(f"/v2/{repo}/tags/list", "tags", self._pull(repo), n))

    def catalog(self, n: Optional[int] = None) -> list[str]:
        """All repository names, following Link pagination (`n` per page when given)."""
        return list(self._paginate("/v2/_catalog", "repositories", ["registry:catalog:*"], n))

    def search(self, term: str, limit: int = 25) -> list[dict[str, Any]]:
        """Repositories matching `term`, shaped like Docker Hub's search results.

        Uses the registry's /v1/search when it has one, else filters its catalog.
        """
        found = self._search_v1(term, limit)
        if found is not None:
            return found
        needle = term.lower()
        names = [name for name in self.catalog() if needle in name.lower()]
        # Closest first: exact, then the last component equal, then prefix, then the rest.
        names.sort(key=lambda name: (name != needle, name.rsplit("/", 1)[-1] != needle,
                                     not name.startswith(needle), name))
        return [{"name": name, "description": "", "star_count": 0, "is_official": False,
                 "is_automated": False} for name in names[:limit]]

    def _search_v1(self, term: str, limit: int) -> Optional[list[dict[str, Any]]]:
        base = "https://index.docker.io" if self.host == DOCKER_HUB_REGISTRY else self.base_url
        url = f"{base}/v1/search?" + urllib.parse.urlencode({"q": term, "n": str(limit)})
        try:
            with self.request("GET", url, retry=True) as response:
                if response.status != 200:
                    response.discard()
                    return None
                answer = json.loads(response.load())
        except (ValueError, AuthenticationError):
            return None
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            return None
        return [{"name": r.get("name", ""), "description": r.get("description") or "",
                 "star_count": int(r.get("star_count") or 0),
                 "is_official": bool(r.get("is_official")),
                 "is_automated": bool(r.get("is_automated"))} for r in results[:limit]]


def _next_link(response: Response, current: str) -> Optional[str]:
    """The rel="next" URL of a Link header (RFC 8288), relative to the current page."""
    for value in response.header_all("Link"):
        for part in value.split(","):
            match = re.match(r'\s*<([^>]*)>\s*;(.*)', part)
            if match and re.search(r'rel="?next"?', match.group(2)):
                target: str = match.group(1)
                return urllib.parse.urljoin(current, target)
    return None


__all__ = [
    "RegistryClient",
    "Manifest",
    "Platform",
    "Challenge",
    "AuthState",
    "Request",
    "Response",
    "Transport",
    "HTTPTransport",
    "parse_challenges",
    "token_request",
    "parse_token_response",
    "auth_flow",
    "select_platform",
    "compute_digest",
    "MANIFEST_SIZE_LIMIT",
]
