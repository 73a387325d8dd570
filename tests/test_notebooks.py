"""The notebooks: committed without outputs, and each runs top to bottom in a real Jupyter
kernel (nbclient, the ``python3`` kernel that ipykernel provides for this environment),
with a small step budget (``ADAPTIVE_DATA_NOTEBOOK_STEPS``)."""

import shutil
import time

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]
# Model updates of every training run of a notebook in CI (their defaults are what a user
# runs); seconds allowed per cell.
CI_STEPS = "20"
CELL_TIMEOUT_S = 600


def test_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_when_does_it_work.ipynb",
        "03_bring_your_own_data.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name}: cell {i} has outputs; strip them"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path, tfds_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", tfds_dir)
    monkeypatch.setenv("ADAPTIVE_DATA_NOTEBOOK_STEPS", CI_STEPS)
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    start = time.time()
    try:
        client.execute()  # raises CellExecutionError on the first failing cell
    finally:
        nbformat.write(nb, copy)  # the executed notebook, to inspect after a failure
        print(f"{path.name}: {time.time() - start:.0f} s, executed copy {copy}")
    errors = [
        (i, out)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors, f"{path.name}: error outputs {errors}"
