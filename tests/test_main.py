"""The command line's persistent compilation cache: where it goes, and that a run which
loads its step functions from it computes what a run compiling them did."""

import os
import socket
import subprocess

import pytest

from adaptive_data import main

from conftest import REPO_ROOT, main_command, metrics_rows


def test_cache_dir_flag_wins_and_empty_turns_it_off():
    environ = {"JAX_COMPILATION_CACHE_DIR": "/from/env"}
    assert main.compilation_cache_dir("/from/flag", environ) == "/from/flag"
    assert main.compilation_cache_dir("", environ) is None


def test_cache_dir_from_environment_then_per_host_default():
    assert main.compilation_cache_dir(None, {"JAX_COMPILATION_CACHE_DIR": "/e"}) == "/e"
    default = main.compilation_cache_dir(None, {})
    home = os.path.expanduser("~")
    assert default == os.path.join(home, ".cache", "adaptive_data", "xla", socket.gethostname())


@pytest.mark.slow
def test_run_from_cached_programs_matches_compiled_run(tmp_path, tfds_dir):
    cache = tmp_path / "xla"
    flags = (
        f"--compilation_cache_dir={cache}",
        "--config.train.steps=20",
        "--config.train.eval_every=10",
        "--config.train.log_every=5",
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    rows = {}
    for name in ("compiled", "cached"):
        completed = subprocess.run(
            main_command(tmp_path / name, tfds_dir, *flags),
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert f"Compiled programs are cached in {cache}" in completed.stderr
        if name == "compiled":
            entries = set(os.listdir(cache))
            assert any(e.startswith("jit_") for e in entries), entries
        rows[name] = [
            {k: v for k, v in r.items() if "per_sec" not in k}
            for r in metrics_rows(tmp_path / name)
        ]
    assert set(os.listdir(cache)) == entries  # the second run compiled nothing new
    assert rows["cached"] == rows["compiled"]
