"""Shared test setup: float32 JAX on CPU, strict rank promotion, repo root on sys.path."""

import os
import pathlib
import sys

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
