"""The classic walk-through: a Debian image with apache2 (made by debootstrap),
a Dockerfile with MAINTAINER, RUN and ADD, built, run with port 9000
published and fetched with curl; then the built image runs in podman after
save and load."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
from debian import rootfs_tarball

from contain import Builder, Container, Image

DOCKERFILE = """\
FROM debian-apache:test
MAINTAINER contain tests <tests@example.invalid>
RUN echo "ServerName localhost" >> /etc/apache2/apache2.conf
ADD start.sh /start.sh
ADD index.html /var/www/html/index.html
RUN chmod 755 /start.sh
EXPOSE 80
CMD ["/start.sh"]
"""

START_SH = """\
#!/bin/sh
. /etc/apache2/envvars
mkdir -p "$APACHE_RUN_DIR" "$APACHE_LOCK_DIR" "$APACHE_LOG_DIR"
exec /usr/sbin/apache2 -D FOREGROUND
"""

INDEX = "<html><body><h1>Hello from contain</h1></body></html>\n"


@pytest.fixture(scope="module")
def apache_image(croot):
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (scripts/setup.sh --test installs it)")
    tarball = rootfs_tarball("debian-bookworm-apache2", include=["apache2"])
    return Image.from_tarball(tarball, tag="debian-apache:test", root=croot)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def test_classic_build_run_and_curl(apache_image, croot, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "start.sh").write_text(START_SH)
    (ctx / "index.html").write_text(INDEX)
    logs: list[str] = []
    image = Builder.from_dockerfile(str(ctx), tag="classic:httpd", root=croot, log=logs.append)
    assert any(line.startswith("Step 3/8 : RUN echo") for line in logs), logs
    assert image.image_config.author == "contain tests <tests@example.invalid>"
    assert image.config.cmd == ["/start.sh"] and "80/tcp" in image.config.exposed_ports

    port = 9000 if _free(9000) else next(p for p in range(9001, 9100) if _free(p))
    c = Container.run(image, name="classic-httpd", ports={80: port}, root=croot)
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = subprocess.run(["curl", "-s", "--max-time", "2", f"http://127.0.0.1:{port}/"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout:
                body = out.stdout
                break
            time.sleep(0.2)
        assert body == INDEX, c.logs().decode()[-2000:]
        ports = c.inspect()["NetworkSettings"]["Ports"]
        assert ports["80/tcp"][0]["HostPort"] == str(port)
        # exec into the running server, as the walk-through does
        assert b"apache2" in c.exec_run(["sh", "-c", "ps -e -o comm 2>/dev/null || ls /proc"]).output \
            or c.exec_run(["pidof", "apache2"]).exit_code == 0
    finally:
        c.remove(force=True)


def test_built_image_runs_in_podman(apache_image, croot, tmp_path, podman):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM debian-apache:test\nRUN echo built-by-contain > /marker\nCMD [\"cat\", \"/marker\"]\n")
    image = Builder.from_dockerfile(str(ctx), tag="interop/built:1", root=croot, log=lambda _: None)
    archive = tmp_path / "built.tar"
    image.save(str(archive))
    podman("load", "-i", str(archive))
    out = podman("run", "--rm", "--network", "none", "docker.io/interop/built:1")
    assert out == "built-by-contain\n"
