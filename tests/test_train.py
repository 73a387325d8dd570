"""End-to-end runs of the training driver on the embedded corpus (tiny model, CPU).

Covers: base lowers generic and target bits/byte; a run killed with SIGKILL between two
checkpoints and restarted ends with exactly the metrics of an uninterrupted run; resume
refused on a changed model config but allowed on harmless changes; fine-tuning keeps
the best checkpoint by target_valid; a NaN loss stops the run and keeps the checkpoint.
"""

import math
import os

import numpy as np
import pytest

from adaptive_data import checkpoint as ckpt
from adaptive_data import train

from conftest import (
    RESUME_FLAGS,
    deterministic_rows,
    kill_after_checkpoint,
    main_command,
    metrics_rows,
    run_config,
    run_resume_flags,
)

pytestmark = pytest.mark.slow


def test_base_lowers_generic_and_target_bpb(uninterrupted_run):
    rows = [r for r in metrics_rows(uninterrupted_run) if "eval/target_bpb" in r]
    first, last = rows[0], rows[-1]
    assert first["step"] == 0 and last["step"] == 160
    # A random byte model is ~8 bits/byte; 160 tiny-model steps must learn byte statistics.
    assert first["eval/target_bpb"] > 7.5 and first["eval/generic_bpb"] > 7.5
    assert last["eval/target_bpb"] < first["eval/target_bpb"] - 2.0
    assert last["eval/generic_bpb"] < first["eval/generic_bpb"] - 2.0
    keys = {"step", "train/loss", "eval/generic_bpb", "eval/target_bpb", "steps_per_sec"}
    assert keys <= set(last)
    assert os.path.exists(os.path.join(uninterrupted_run, "config.json"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(uninterrupted_run))


def test_sigkill_and_resume_gives_identical_metrics(uninterrupted_run, tfds_dir, tmp_path):
    workdir = str(tmp_path / "killed")
    kill_after_checkpoint(
        main_command(workdir, tfds_dir, *RESUME_FLAGS), os.path.join(workdir, "checkpoints", "40")
    )
    killed_rows = metrics_rows(workdir)
    assert killed_rows[-1]["step"] < 160
    run_resume_flags(workdir, tfds_dir)
    assert deterministic_rows(metrics_rows(workdir)) == deterministic_rows(
        metrics_rows(uninterrupted_run)
    )


def test_resume_refused_on_changed_model_but_allowed_on_harmless_change(
    uninterrupted_run, tfds_dir, tmp_path
):
    import shutil

    workdir = str(tmp_path / "copy")
    shutil.copytree(uninterrupted_run, workdir)
    changed = run_config(tfds_dir, **{"model.width": 32, "train.steps": 160})
    with pytest.raises(ckpt.ConfigMismatchError, match=r"model.width: 64 -> 32"):
        train.train_and_evaluate(changed, workdir)
    longer = run_config(
        tfds_dir,
        **{
            "train.steps": 165,
            "checkpoint.every": 40,
            "train.eval_every": 40,
            "train.log_every": 5,
        },
    )
    result = train.train_and_evaluate(longer, workdir)
    assert result["step"] == 165
    steps = [r["step"] for r in metrics_rows(workdir)]
    assert steps == sorted(steps) and steps.count(160) == 1


def test_finetune_keeps_best_checkpoint_by_target_valid(uninterrupted_run, tfds_dir, tmp_path):
    workdir = str(tmp_path / "finetune")
    config = run_config(
        tfds_dir,
        "method=finetune,runlocal",
        **{
            "finetune.init_from": uninterrupted_run,
            "train.steps": 30,
            "train.eval_every": 10,
            "checkpoint.every": 10,
        },
    )
    result = train.train_and_evaluate(config, workdir)
    rows = [r for r in metrics_rows(workdir) if "eval/target_valid_bpb" in r]
    base_rows = [r for r in metrics_rows(uninterrupted_run) if "eval/target_bpb" in r]
    # Starts from the pretrained model, not from scratch.
    assert rows[0]["eval/target_bpb"] == pytest.approx(base_rows[-1]["eval/target_bpb"], rel=1e-5)
    best = min(rows, key=lambda r: r["eval/target_valid_bpb"])
    assert result["eval/best_target_valid_bpb"] == pytest.approx(best["eval/target_valid_bpb"])
    assert os.listdir(os.path.join(workdir, "best")) == [str(best["step"])]
    # Fine-tuning on the target lowers the target loss below the pretrained model's.
    assert best["eval/target_valid_bpb"] < rows[0]["eval/target_valid_bpb"]


def test_finetune_refuses_parameters_of_another_model(uninterrupted_run, tfds_dir, tmp_path):
    config = run_config(
        tfds_dir,
        "method=finetune,runlocal",
        **{"finetune.init_from": uninterrupted_run, "model.width": 32},
    )
    with pytest.raises(ckpt.ConfigMismatchError, match="do not fit config.model"):
        train.train_and_evaluate(config, str(tmp_path / "ft"))


def test_nan_loss_stops_run_and_keeps_last_good_checkpoint(tfds_dir, tmp_path):
    workdir = str(tmp_path / "nan")
    config = run_config(
        tfds_dir,
        **{
            "train.learning_rate": 1e9,
            "train.grad_clip": 0.0,
            "train.warmup_steps": 20,
            "train.steps": 20,
            "checkpoint.every": 1,
            "train.weight_decay": 0.0,
        },
    )
    message = r"Non-finite (train|eval)/\S+ = \S+ at step (\d+)"
    with pytest.raises(FloatingPointError, match=message) as e:
        train.train_and_evaluate(config, workdir)
    bad_step = int(str(e.value).split(" at step ")[1].split(".")[0])
    saved = ckpt.Checkpointer(tmp_path / "nan" / "checkpoints", keep=2).latest_step()
    assert saved is not None and saved < bad_step
    params = ckpt.restore_params(workdir)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in __import__("jax").tree.leaves(params))
    assert math.isfinite(metrics_rows(workdir)[0]["eval/target_bpb"])
