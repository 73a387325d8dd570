"""Shared test setup: float32 JAX on CPU, strict rank promotion, repo root on sys.path;
fixtures for a TFDS dir, 64-bit JAX and synthetic byte-LM batches."""

import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the test processes and the runs they launch, out
# of the user's home: a step function compiled by one test is loaded by the next.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "adaptive_data_test_xla")
)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The rows of ``workdir/metrics.jsonl``, under the name the tests import from here.
from adaptive_data.metrics import read_metrics as metrics_rows  # noqa: E402, F401


def load_default_config(arg: str = "runlocal"):
    """``configs/default.py:get_config(arg)``."""
    from adaptive_data import config_args

    return config_args.load_config("configs/default.py", arg)


def tiny_config(arg: str, **overrides):
    """``configs/default.py:ARG`` made small for unit tests: a 1-layer width-32 byte LM on
    16 bytes, b = 4 of B = 16, warm-up 0, a small weighting CNN; reference workdirs (read
    only by ``Method.load_state``, never by a step) point nowhere, and a method whose
    reference trains on the reserved shard (rho) draws from the rest of the pool. Then
    dotted ``overrides``."""
    from adaptive_data import config_args, methods

    config = load_default_config(arg)
    needs = methods.METHODS[config.method].needs_runs.values()

    values = {
        "model.num_layers": 1,
        "model.width": 32,
        "model.mlp_dim": 64,
        "model.num_heads": 2,
        "model.max_length": 16,
        "train.batch_size": 4,
        "train.target_batch_size": 4,
        "select.downsampling": 4,
        "select.warmup_steps": 0,
        "weighting.embed_dim": 8,
        "weighting.conv_features": (8,),
        "dsir.num_buckets": 64,
        "finetune.init_from": "/unused",
        "cds.generic_from": "/unused",
        "cds.target_from": "/unused",
        "rho.reference_from": "/unused",
    }
    if any(need.reserved_shard for need in needs):
        values["data.reserved_fraction"] = 0.2
    return config_args.override(config, {**values, **overrides})


def run_config(tfds_dir, arg="runlocal", **overrides):
    """``configs/default.py:ARG`` on the test TFDS dir, with dotted ``overrides``."""
    from adaptive_data import config_args

    config = load_default_config(arg)
    config.data.tfds_data_dir = tfds_dir
    return config_args.override(config, overrides)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """One TFDS data dir per test session: the embedded corpus is prepared once per task.

    Under pytest-xdist every worker is a session with its own base temp dir
    (``.../popen-gw<N>``), so each worker prepares into its own dir: no two processes
    write one dataset at once."""
    return str(tmp_path_factory.mktemp("tfds"))


# Subword vocabularies of the tests (before BOS/EOS/PAD): 512 ids, of which SentencePiece's
# byte fallback takes 256 and byte-level BPE's alphabet 256.
SUBWORD_VOCAB_SIZE = 512


@pytest.fixture(scope="session")
def subword_tokenizers(tmp_path_factory):
    """``{"sentencepiece": spec, "hf": spec}``: ``config.data.tokenizer`` values of a
    SentencePiece BPE and a byte-level BPE trained once per session on the embedded corpus
    (100 documents of each domain, about a second each). Skips without the libraries."""
    pytest.importorskip("sentencepiece")
    pytest.importorskip("tokenizers")
    from adaptive_data.data import train_tokenizer

    directory = tmp_path_factory.mktemp("tokenizers")
    specs = {}
    for kind, file_name in (("sentencepiece", "sp.model"), ("hf", "bpe.json")):
        trained = train_tokenizer.train(
            kind, SUBWORD_VOCAB_SIZE, str(directory / file_name), max_documents=100
        )
        specs[kind] = trained.spec
    return specs


@pytest.fixture(scope="module")
def example_model_only_here():
    """examples/rope_lm.py registers the model rope_lm when first imported (by a config's
    extra_modules); after the module's tests the model registry is left as it was, so
    other tests' rule and model lists do not see it."""
    yield
    from adaptive_data import models

    if "rope_lm" in models.MODELS:
        models.unregister("rope_lm")
    sys.modules.pop("examples.rope_lm", None)


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
    proc = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout_s
    while not os.path.isdir(checkpoint_dir):
        assert proc.poll() is None, "run ended before its first checkpoint"
        assert time.time() < deadline, f"no {checkpoint_dir} after {timeout_s} s"
        time.sleep(0.02)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def deterministic_rows(rows: list[dict]) -> list[dict]:
    """``rows`` without the wall-clock metric, for comparing two runs."""
    return [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in rows]


def main_command(workdir, tfds_dir, *flags, arg="runlocal") -> list[str]:
    """``python -m adaptive_data.main`` on ``configs/default.py:ARG`` with ``flags``."""
    from adaptive_data import command_line

    return command_line.driver_command(
        f"configs/default.py:{arg}",
        workdir,
        overrides={"data.tfds_data_dir": tfds_dir},
        flags=flags,
    )


# A 24-step tiny run checkpointed and evaluated every 8 steps: what the tests run on several
# device counts (or resume after a kill) and compare with ``assert_same_metrics``.
SHORT_RUN_FLAGS = (
    "--config.train.steps=24",
    "--config.checkpoint.every=8",
    "--config.train.eval_every=8",
    "--config.train.log_every=4",
)


def simulated_devices_env(devices: int) -> dict[str, str]:
    """The environment of a subprocess that sees ``devices`` simulated CPU devices."""
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }


def assert_same_metrics(workdir_a, workdir_b, rtol=1e-5, atol=1e-6) -> None:
    """The two runs logged the same steps and metrics, every value within ``rtol`` /
    ``atol`` (only the order of floating-point reductions may differ) but the wall clock."""
    rows_a, rows_b = metrics_rows(workdir_a), metrics_rows(workdir_b)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    for a, b in zip(deterministic_rows(rows_a), deterministic_rows(rows_b)):
        assert sorted(a) == sorted(b)
        keys = sorted(k for k in a if k != "step")
        np.testing.assert_allclose(
            [b[k] for k in keys],
            [a[k] for k in keys],
            rtol=rtol,
            atol=atol,
            err_msg=f"step {a['step']}: keys {keys}",
        )


# A 160-step tiny base run checkpointed every 40 steps: the reference of the resume tests.
RESUME_FLAGS = (
    "--config.train.steps=160",
    "--config.checkpoint.every=40",
    "--config.train.eval_every=40",
    "--config.train.log_every=5",
)


def run_resume_flags(workdir, tfds_dir) -> None:
    """Runs (or resumes) the run of ``RESUME_FLAGS`` in ``workdir`` to its end."""
    subprocess.run(
        main_command(workdir, tfds_dir, *RESUME_FLAGS),
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def uninterrupted_run(tfds_dir, tmp_path_factory):
    """Workdir of the run of ``RESUME_FLAGS``, never interrupted."""
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    run_resume_flags(workdir, tfds_dir)
    return workdir


def synthetic_lm_batch(
    rng: np.random.Generator,
    n: int,
    max_length: int,
    *,
    num_domains: int,
    first_id: int = 0,
    domain: int | None = None,
):
    """``n`` byte-LM examples of random bytes with random lengths, as the pipeline lays
    them out (``inputs``, ``targets``, ``mask``, ``num_bytes``, ``domain``), plus
    ``example_id`` = first_id .. first_id + n - 1 to trace where each example goes."""
    lengths = rng.integers(1, max_length + 1, size=n)
    inputs = rng.integers(0, 256, size=(n, max_length)).astype(np.int32)
    targets = np.roll(inputs, -1, axis=1)
    mask = (np.arange(max_length)[None, :] < lengths[:, None]).astype(np.float32)
    domains = (
        rng.integers(0, num_domains, size=n) if domain is None else np.full((n,), domain)
    ).astype(np.int32)
    return {
        "inputs": inputs,
        "targets": targets,
        "mask": mask,
        "num_bytes": lengths.astype(np.int32),
        "domain": domains,
        "example_id": np.arange(first_id, first_id + n, dtype=np.int32),
    }


@pytest.fixture
def method_batches():
    """``make(method, seed=0)``: one synthetic batch per stream of a ``Method``, of the
    stream's batch size; generic examples have ids 0.., target examples 100000.. (and
    every target example is of the target domain)."""

    def make(method, seed: int = 0, max_length: int = 16):
        rng = np.random.default_rng(seed)
        batches = {}
        for stream, (split, size) in method.streams.items():
            is_target = split.startswith("target")
            batches[stream] = synthetic_lm_batch(
                rng,
                size,
                max_length,
                num_domains=method.num_domains,
                first_id=100_000 if is_target else 0,
                domain=method.target_domain_id if is_target else None,
            )
        return jax.tree.map(jax.numpy.asarray, batches)

    return make


@pytest.fixture(scope="session")
def ridge():
    """The convex bilevel ridge problem of ``bilevel_ridge.Ridge`` (numpy float64, read-only)."""
    from bilevel_ridge import Ridge

    return Ridge()
