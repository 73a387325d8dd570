"""The notebooks: committed without outputs; their install cell (the first code cell)
installs the clone it runs in, a given path or a given URL, or says what to set (run
in-process with ``subprocess.run`` recorded, not run); and each runs top to bottom in a real
Jupyter kernel (nbclient, the ``python3`` kernel that ipykernel provides for this
environment), with a small step budget (``ADAPTIVE_DATA_NOTEBOOK_STEPS``), in the slow tier."""

import importlib.util
import pathlib
import shutil
import subprocess
import sys
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


# The one line of the install cell a user edits.
DEFAULT_SOURCE_LINE = 'ADAPTIVE_DATA_SOURCE = ""'


def _install_cell(path) -> str:
    return next(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")


def test_every_notebook_has_the_same_install_cell_with_one_source_setting():
    cells = {_install_cell(path) for path in NOTEBOOKS}
    assert len(cells) == 1
    (cell,) = cells
    assert cell.count("ADAPTIVE_DATA_SOURCE = ") == 1 and DEFAULT_SOURCE_LINE in cell
    assert "<org>" not in cell


def _fake_clone(path, project="adaptive_data"):
    """A directory with the pyproject.toml of ``project``: what the cell recognises."""
    path.mkdir(parents=True)
    text = (REPO_ROOT / "pyproject.toml").read_text()
    (path / "pyproject.toml").write_text(
        text.replace('name = "adaptive_data"', f'name = "{project}"')
    )
    return path


@pytest.fixture
def run_install_cell(monkeypatch):
    """``run(source, cwd, installed=False)``: executes the install cell with
    ADAPTIVE_DATA_SOURCE = source in ``cwd``, adaptive_data importable or not, and returns
    the commands it ran; ``subprocess.run`` only records them (a ``git clone`` leaves a
    fake clone at its destination)."""
    commands = []

    def record(command, **kwargs):
        commands.append([str(part) for part in command])
        if command[:2] == ["git", "clone"]:
            _fake_clone(pathlib.Path(command[-1]))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", record)
    monkeypatch.setattr(sys, "path", list(sys.path))
    find_spec = importlib.util.find_spec

    def run(source, cwd, installed=False):
        if not installed:
            monkeypatch.setattr(
                importlib.util,
                "find_spec",
                lambda name, *args: None if name == "adaptive_data" else find_spec(name, *args),
            )
        monkeypatch.chdir(cwd)
        cell = _install_cell(NOTEBOOKS[0])
        cell = cell.replace(DEFAULT_SOURCE_LINE, f"ADAPTIVE_DATA_SOURCE = {str(source)!r}")
        exec(compile(cell, "install cell", "exec"), {})
        return commands

    return run


def _pip_install(path):
    return [sys.executable, "-m", "pip", "install", "-q", "-e", str(path)]


def test_install_cell_installs_nothing_where_adaptive_data_is_importable(
    run_install_cell, tmp_path
):
    assert run_install_cell("", tmp_path, installed=True) == []


def test_install_cell_installs_the_clone_it_runs_in(run_install_cell):
    assert run_install_cell("", REPO_ROOT / "notebooks") == [_pip_install(REPO_ROOT)]
    assert sys.path[0] == str(REPO_ROOT)  # importable in the kernel that ran the install


def test_install_cell_installs_a_given_local_path(run_install_cell, tmp_path):
    clone = _fake_clone(tmp_path / "my clone")
    (tmp_path / "elsewhere").mkdir()
    # A given source is installed even where another adaptive_data is importable.
    commands = run_install_cell(clone, tmp_path / "elsewhere", installed=True)
    assert commands == [_pip_install(clone)]


def test_install_cell_clones_a_given_url_then_installs_it(run_install_cell, tmp_path):
    url = "https://example.org/someone/adaptive_data.git"
    clone = tmp_path / "adaptive_data"
    assert run_install_cell(url, tmp_path) == [
        ["git", "clone", "--depth=1", url, str(clone)],
        _pip_install(clone),
    ]


def test_install_cell_says_what_to_set_when_there_is_nothing_to_install(run_install_cell, tmp_path):
    other = _fake_clone(tmp_path / "other_project", project="other")  # not this project
    with pytest.raises(RuntimeError, match="Set ADAPTIVE_DATA_SOURCE at the top of this cell"):
        run_install_cell("", other)
    with pytest.raises(RuntimeError, match="has no pyproject.toml of the project adaptive_data"):
        run_install_cell(other, tmp_path)


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
