"""docs/tutorial.md, run: every ```sh block in order, in one state root, against a
registry on loopback started here.  A block preceded by `<!-- input: TEXT -->` runs in a
pty and gets TEXT typed into it."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import contain

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r"(?:<!-- input: (?P<input>.*?) -->\n)?```sh\n(?P<body>.*?)```", re.S)


def blocks() -> list[tuple[str, str | None]]:
    return [(m.group("body"), m.group("input")) for m in BLOCK.finditer(TUTORIAL.read_text())]


def test_tutorial_has_the_walkthrough():
    text = "\n".join(b for b, _ in blocks())
    for command in ("contain info", "contain search", "contain pull", "contain images",
                    "contain run -it", "contain run -d", "contain logs", "contain ps\n",
                    "contain ps -a", "contain kill", "contain stop", "contain start",
                    "contain restart", "contain rm ", "contain rm -f", "contain commit",
                    "contain build", "contain save", "contain load", "contain push",
                    "curl", "contain exec", "ping"):
        assert command in text, command


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _shims(bindir: Path) -> None:
    bindir.mkdir()
    (bindir / "contain").write_text(f'#!/bin/sh\nexec {sys.executable} -m contain "$@"\n')
    if not shutil.which("ping"):
        busybox = shutil.which("busybox")
        if busybox is None:
            pytest.skip("neither ping nor busybox on the host")
        (bindir / "ping").write_text(f'#!/bin/sh\nexec {busybox} ping "$@"\n')
    for f in bindir.iterdir():
        f.chmod(0o755)


def _assert_contain_route(root: str, name: str) -> str:
    """The container's address is on a bridge of this root, reached directly."""
    addr = contain.Container.get(name, root=root).attrs["NetworkSettings"]["IPAddress"]
    assert addr, "the container has no address"
    bridges = {(n.attrs.get("Options") or {}).get("com.docker.network.bridge.name")
               for n in contain.Network.list(root=root)}
    route = subprocess.run(["ip", "route", "get", addr], capture_output=True, text=True, check=True).stdout
    dev = re.search(r"\bdev (\S+)", route)
    assert dev and dev.group(1) in bridges, (route, bridges)
    assert " via " not in route, route
    return addr


def _run_in_pty(body: str, typed: str, env: dict, cwd: Path, root: str) -> tuple[int, str]:
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover
        os.chdir(cwd)
        os.execve("/bin/bash", ["bash", "-e", "-c", body], env)
    name = re.search(r"--name (\S+)", body)
    deadline = time.time() + 30
    while name and time.time() < deadline:  # typing before the attach would be flushed
        try:
            if contain.Container.get(name.group(1), root=root).status == "running":
                break
        except contain.NotFound:
            pass
        time.sleep(0.05)
    time.sleep(0.5)
    os.write(fd, typed.encode() + b"\r")
    out = b""
    reading = True
    deadline = time.time() + 30
    while time.time() < deadline:
        if reading:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # EIO: the other side is closed
                    data = b""
                if not data:
                    reading = False
                out += data
        else:
            time.sleep(0.05)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            os.close(fd)
            return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    os.close(fd)
    raise AssertionError(f"interactive block did not finish: {out!r}")


def test_tutorial(tmp_path, busybox_rootfs):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    sys.path.insert(0, str(Path(__file__).parent))
    from registry_server import REGISTRY_BINARY, RegistryServer

    if not os.path.exists(REGISTRY_BINARY):
        pytest.skip("docker-registry is not installed")
    if not _port_free(8080):
        pytest.skip("127.0.0.1:8080, used by the tutorial, is taken")
    root = str(tmp_path / "root")
    work = tmp_path / "work"
    work.mkdir()
    _shims(tmp_path / "bin")
    try:
        with RegistryServer() as registry:
            seed = contain.Image.from_directory(busybox_rootfs, tag="seed:1", config={"Cmd": ["sh"]}, root=root)
            seed.push(f"{registry.host}/busybox:latest")
            seed.remove(force=True)
            env = dict(os.environ, CONTAIN_ROOT=root, REGISTRY=registry.host,
                       PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
            outputs = []
            for body, typed in blocks():
                if "ping" in body:
                    _assert_contain_route(root, "web")
                if typed is not None:
                    code, out = _run_in_pty(body, typed, env, work, root)
                    err = ""
                else:
                    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", body], cwd=work, env=env,
                                          capture_output=True, text=True, timeout=300)
                    code, out, err = proc.returncode, proc.stdout, proc.stderr
                assert code == 0, f"block failed ({code}):\n{body}\nstdout:\n{out}\nstderr:\n{err}"
                outputs.append((body, out))
            _check(outputs, registry.host)
    finally:
        for c in contain.Container.list(all=True, root=root):
            c.remove(force=True)
        # Its networks, the default bridge included, go with the root.
        for n in contain.Network.list(root=root):
            n.remove(force=True)


def _check(outputs, registry: str) -> None:
    """What each step is supposed to show."""
    def out_of(fragment: str) -> str:
        for body, out in outputs:
            if fragment in body:
                return out
        raise AssertionError(f"no block with {fragment!r}")

    assert "Containers:" in out_of("contain info")
    assert "busybox" in out_of("contain search")
    assert f"{registry}/busybox:latest" in out_of("contain pull $REGISTRY/busybox\n")
    assert re.search(r"^REPOSITORY +TAG +IMAGE ID +CREATED +SIZE$", out_of("contain images busybox"), re.M)
    assert "hello from inside" in out_of("contain run -it")
    ticker = out_of("contain logs ticker")
    assert re.match(r"^[0-9a-f]{64}\n", ticker) and "tick" in ticker
    ps = out_of("contain ps\n")
    assert re.search(r"^CONTAINER ID +IMAGE +COMMAND +CREATED +STATUS +PORTS +NAMES$", ps, re.M)
    assert re.search(r"Up .* ticker$", ps, re.M)
    assert re.search(r"Exited \(0\) .* first$", ps, re.M)
    assert "first: Exited (0)" in ps
    stop = out_of("contain stop -t 1 ticker")
    assert "Exited (" in stop and stop.rstrip().endswith("137")
    assert "refused: ticker is still running" in out_of("contain rm ticker ||")
    commit = out_of("contain commit")
    assert "A /greeting" in commit and "hello from a committed image" in commit
    assert re.search(r"sha256:[0-9a-f]{64}", commit)
    assert "Successfully tagged web:v1" in out_of("contain build")
    assert "Loaded image: web:v1" in out_of("contain load")
    assert "127.0.0.1:8080" in out_of("contain port web") and "Hello from contain" in out_of("curl -s http://127.0.0.1:8080/")
    server = out_of("contain exec web ps")
    assert "httpd" in server and "Hello from contain" in server
    addr = out_of("ping -c 1")
    assert "1 packets received" in addr or "1 received" in addr
    assert "Hello from contain" in addr
