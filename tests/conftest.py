"""Shared test setup: float32 JAX on CPU, strict rank promotion, repo root on sys.path."""

import os
import pathlib
import signal
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def load_default_config(arg: str = "runlocal"):
    """``configs/default.py:get_config(arg)``, loaded from its path."""
    from adaptive_data import config_args

    return config_args.load_config_module(REPO_ROOT / "configs" / "default.py").get_config(arg)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """One TFDS data dir per test session: the embedded corpus is prepared once per task."""
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def x64():
    """Runs a test with 64-bit JAX (the bilevel references are compared in float64)."""
    with jax.enable_x64(True):
        yield


def ridge_loss(theta, batch):
    """Per-example ridge loss 0.5 (x_i^T w - y_i)^2 + (lam_i / 2) ||w||^2: float[B]."""
    residual_B = batch["x"] @ theta["w"] - batch["y"]
    return 0.5 * residual_B**2 + 0.5 * batch["lam"] * jax.numpy.sum(theta["w"] ** 2)


def kill_after_checkpoint(command, checkpoint_dir, *, env=None, timeout_s=300):
    """Runs ``command`` and SIGKILLs it as soon as ``checkpoint_dir`` exists.

    Fails if the run ends (or is still short of the checkpoint after ``timeout_s``)
    before it can be killed, so a passing resume test really resumed a killed run.
    """
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout_s
    while not os.path.isdir(checkpoint_dir):
        assert proc.poll() is None, "run ended before its first checkpoint"
        assert time.time() < deadline, f"no {checkpoint_dir} after {timeout_s} s"
        time.sleep(0.02)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
