"""The worked example end to end: examples/rope_lm.py (a model registered from outside the
package) over a SentencePiece tokenizer trained on the embedded corpus, through
``python -m adaptive_data.main`` with ``method=base`` and ``method=anograd``; 8 simulated
devices with its own FSDP rule agree with 1 device; a SIGKILLed run resumes to the same
metrics; continued pretraining starts from its parameters saved in each supported form.
Tiny sizes (runlocal): each run takes seconds of training."""

import json
import math
import os
import pathlib
import subprocess

import flax.serialization
import orbax.checkpoint as ocp
import pytest

from adaptive_data import checkpoint as ckpt
from adaptive_data import train

from conftest import (
    REPO_ROOT,
    SHORT_RUN_FLAGS,
    assert_same_metrics,
    kill_after_checkpoint,
    main_command,
    metrics_rows,
    run_config,
    simulated_devices_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("example_model_only_here")]


def _command(workdir, tfds_dir, tokenizer_spec, method, *extra):
    arg = f"runlocal,method={method},model=rope_lm,extra_modules=examples.rope_lm"
    return main_command(
        workdir,
        tfds_dir,
        *SHORT_RUN_FLAGS,
        f"--config.data.tokenizer={tokenizer_spec}",
        *extra,
        arg=arg,
    )


def _run(workdir, command, devices=1):
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=simulated_devices_env(devices),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def sentencepiece(subword_tokenizers):
    return subword_tokenizers["sentencepiece"]


@pytest.fixture(scope="module")
def anograd_one_device(tfds_dir, sentencepiece, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("rope_anograd_1dev"))
    return _run(workdir, _command(workdir, tfds_dir, sentencepiece, "anograd"))


@pytest.mark.parametrize("method", ["base", "anograd"])
def test_the_example_model_trains_through_the_driver(
    method, tfds_dir, sentencepiece, anograd_one_device, tmp_path
):
    if method == "anograd":
        workdir = anograd_one_device
    else:
        workdir = _run(str(tmp_path), _command(str(tmp_path), tfds_dir, sentencepiece, method))
    saved = json.loads((pathlib.Path(workdir) / "config.json").read_text())
    assert saved["model"]["name"] == "rope_lm" and saved["data"]["tokenizer"] == sentencepiece
    rows = metrics_rows(workdir)
    evals = [r for r in rows if "eval/target_bpb" in r]
    assert [r["step"] for r in evals] == [0, 8, 16, 24]
    # Bits per byte: about log2(515) / (bytes per token) at the start, and it falls.
    assert all(math.isfinite(r["eval/target_bpb"]) for r in evals)
    assert 2.0 < evals[0]["eval/generic_bpb"] < 9.0
    assert evals[-1]["eval/generic_bpb"] < evals[0]["eval/generic_bpb"]
    if method == "anograd":
        assert any(r.get("select/active") == 1.0 for r in rows)
        assert any("outer/objective" in r for r in rows)


def test_eight_devices_with_the_models_fsdp_rule_match_one_device(
    tfds_dir, sentencepiece, anograd_one_device, tmp_path
):
    """Data over 4 devices, parameters over 2 (the gated MLP by examples/rope_lm's rule)."""
    workdir = str(tmp_path)
    command = _command(workdir, tfds_dir, sentencepiece, "anograd", "--config.mesh.fsdp=2")
    assert_same_metrics(anograd_one_device, _run(workdir, command, devices=8))


def test_sigkill_and_resume_reaches_the_same_metrics(
    tfds_dir, sentencepiece, anograd_one_device, tmp_path
):
    workdir = str(tmp_path)
    command = _command(workdir, tfds_dir, sentencepiece, "anograd")
    kill_after_checkpoint(
        command, os.path.join(workdir, "checkpoints", "8"), env=simulated_devices_env(1)
    )
    assert metrics_rows(workdir)[-1]["step"] < 24
    assert_same_metrics(anograd_one_device, _run(workdir, command))


@pytest.mark.parametrize("form", ["workdir", "orbax", "msgpack"])
def test_continued_pretraining_starts_from_the_parameters_on_disk(
    form, tfds_dir, sentencepiece, anograd_one_device, tmp_path
):
    """``model.init_from`` in each of its three forms: a fresh ``base`` run's step-0
    evaluation equals the last evaluation of the run whose parameters it loaded."""
    params = ckpt.restore_params(anograd_one_device)
    source = {
        "workdir": lambda: anograd_one_device,
        "orbax": lambda: _save_orbax(params, tmp_path / "orbax_params"),
        "msgpack": lambda: _save_msgpack(params, tmp_path / "params.msgpack"),
    }[form]()
    config = run_config(
        tfds_dir,
        "runlocal,method=base,model=rope_lm,extra_modules=examples.rope_lm",
        **{
            "data.tokenizer": sentencepiece,
            "model.init_from": source,
            "train.steps": 2,
            "train.eval_every": 2,
        },
    )
    train.train_and_evaluate(config, str(tmp_path / "continued"))
    first = metrics_rows(str(tmp_path / "continued"))[0]
    last = [r for r in metrics_rows(anograd_one_device) if "eval/target_bpb" in r][-1]
    assert first["step"] == 0
    for key in ("eval/generic_bpb", "eval/target_valid_bpb", "eval/target_bpb"):
        assert first[key] == pytest.approx(last[key], rel=1e-5), key


def _save_orbax(params, path):
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, params)
    checkpointer.wait_until_finished()
    return str(path)


def _save_msgpack(params, path):
    path.write_bytes(flax.serialization.to_bytes(params))
    return str(path)
