"""Every notebook runs top to bottom (its code cells, in order, in one namespace)."""

import json

import matplotlib
import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tfds_dir, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.setenv("TFDS_DATA_DIR", tfds_dir)
    monkeypatch.chdir(REPO_ROOT / "notebooks")
    cells = json.loads(path.read_text())["cells"]
    namespace = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)
