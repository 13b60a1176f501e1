"""A real registry (Debian's docker-registry, i.e. distribution 2.x) for tests, on loopback.

    with RegistryServer() as registry:                 # anonymous push and pull
        registry.host                                  # "127.0.0.1:PORT"
    with RegistryServer(users={"alice": "pw"}) as r:   # htpasswd (bcrypt) Basic auth

Storage, config and log live in a temporary directory that is removed at stop, and the
process is killed at stop even if the test failed.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

REGISTRY_BINARY = "/usr/bin/docker-registry"
HTPASSWD_BINARY = "/usr/bin/htpasswd"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bcrypt_line(user: str, password: str) -> str:
    """An htpasswd line with a bcrypt hash (distribution accepts only bcrypt)."""
    result = subprocess.run([HTPASSWD_BINARY, "-Bbn", user, password], check=True,
                            capture_output=True, text=True)
    return result.stdout.strip() + "\n"


class RegistryServer:
    """docker-registry serving 127.0.0.1 on a free port; a context manager."""

    def __init__(self, *, users: Optional[dict[str, str]] = None,
                 binary: str = REGISTRY_BINARY, startup_timeout: float = 15.0) -> None:
        self.users = dict(users or {})
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.port = 0
        self.directory: Optional[Path] = None
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _config(self) -> str:
        assert self.directory is not None
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.directory / 'data'}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  secret: contain-test-secret",
        ]
        if self.users:
            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text("".join(bcrypt_line(u, p) for u, p in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: contain-test",
                      f"    path: {htpasswd}"]
        return "\n".join(lines) + "\n"

    def start(self) -> "RegistryServer":
        self.directory = Path(tempfile.mkdtemp(prefix="contain-registry-"))
        try:
            for _ in range(5):  # another process may take the port between probe and bind
                self.port = free_port()
                config = self.directory / "config.yml"
                config.write_text(self._config())
                log = open(self.directory / "registry.log", "wb")
                self.process = subprocess.Popen(
                    [self.binary, "serve", str(config)], stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                log.close()
                if self._wait_ready():
                    return self
                self._kill()
            raise RuntimeError(f"docker-registry did not start:\n{self.log()}")
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/v2/")
                status = conn.getresponse().status
                conn.close()
                if status in (200, 401):
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def log(self) -> str:
        if self.directory is None:
            return ""
        try:
            return (self.directory / "registry.log").read_text(errors="replace")
        except OSError:
            return ""

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        self._kill()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> "RegistryServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
