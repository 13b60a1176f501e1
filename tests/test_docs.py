"""The documentation site builds, and its API reference is the docstrings."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_api_reference_is_generated_from_docstrings(tmp_path):
    site = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import html
    import re

    import contain

    # The page as text: tags out, entities back, white space folded.
    api = " ".join(html.unescape(re.sub(r"<[^>]+>", "", (site / "api" / "index.html").read_text())).split())

    for obj in (contain.Container.run, contain.Container.exec_run, contain.Image.pull,
                contain.Builder.from_dockerfile, contain.Network.create, contain.Volume.create):
        first_line = " ".join(obj.__doc__.strip().splitlines()[0].replace("`", "").split())
        assert first_line[:40] in api, f"{obj.__qualname__}: {first_line!r}"
    for page in ("tutorial", "faces", "networking", "security", "rootless", "benchmarks"):
        assert (site / page / "index.html").exists()
