"""A real notebook, run by a real kernel (nbclient + ipykernel): contain's
objects display as HTML tables, and progress shows."""

from __future__ import annotations

import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from contain import Container  # noqa: E402


CELLS = [
    # 1: the same import a user writes
    """import os
import contain
from contain import Container, Image
root = os.environ["CONTAIN_ROOT"]""",
    # 2: a container
    """c = Container.run("busybox:test", ["sleep", "60"], name="nb-shown", root=root, network=NETWORK)
c""",
    # 3: a list of containers, displayed as one table
    """from contain._display import ResultList
ResultList(Container.list(root=root))""",
    # 4: images and progress
    """from contain._display import progress
with progress(total=3, desc="nb-progress", unit="step") as p:
    for _ in range(3):
        p.update(1)
Image.get("busybox:test", root=root)""",
    # 5: clean up
    """c.remove(force=True)
print("removed", c.short_id)""",
]


def _run_notebook(network: str, tmp_path) -> "nbformat.NotebookNode":
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src.replace("NETWORK", repr(network))) for src in CELLS]
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


def _outputs(cell, kind: str) -> str:
    found = []
    for out in cell.outputs:
        if out.output_type in ("execute_result", "display_data"):
            found.append(out.data.get(kind, ""))
        elif out.output_type == "stream" and kind == out.name:
            found.append(out.text)
    return "".join(found)


@pytest.fixture
def kernel_env(croot, busybox, monkeypatch):
    monkeypatch.setenv("CONTAIN_ROOT", croot)
    # The kernel is this interpreter (ipykernel's native kernel spec).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    return croot


def test_notebook_shows_tables_and_progress(kernel_env, tmp_path):
    nb = _run_notebook("none", tmp_path)
    one = nb.cells[1]
    assert "<table" in _outputs(one, "text/html") and "nb-shown" in _outputs(one, "text/html")
    table = _outputs(nb.cells[2], "text/html")
    assert table.startswith("<table") and "<th" in table
    assert "nb-shown" in table and "CONTAINER ID" in table and "Up " in table
    assert "nb-shown" in _outputs(nb.cells[2], "text/plain")  # IPython's text form: a table too
    # tqdm writes its bar to the kernel's stderr (a widget when ipywidgets is there)
    progress_out = _outputs(nb.cells[3], "stderr") + str(nb.cells[3].outputs)
    assert "nb-progress" in progress_out
    assert "busybox" in _outputs(nb.cells[3], "text/html")
    assert "removed" in _outputs(nb.cells[4], "stdout")
    assert not [c for c in Container.list(all=True, root=kernel_env) if c.name == "nb-shown"]


def test_notebook_default_network(kernel_env, tmp_path):
    """A kernel runs cells on a thread with a running asyncio loop."""
    try:
        nb = _run_notebook("bridge", tmp_path)
    finally:
        for c in Container.list(all=True, root=kernel_env):
            if c.name == "nb-shown":
                c.remove(force=True)
    assert "nb-shown" in _outputs(nb.cells[2], "text/html")
