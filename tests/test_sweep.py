"""experiments/sweep.py: expansion of a config file's sweep(add, arg) into runs, dry-run
command lines that the driver's flag parser reads back into the same configs, skipping
finished runs (and relaunching unfinished or failed ones), the results table, and one
small real sweep (slow)."""

import csv
import itertools
import json
import math
import shlex
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from adaptive_data import config_args, methods
from adaptive_data.methods import METHODS

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import sweep  # noqa: E402

TARGETS = ("python", "jargon", "russian")
LEARNING_RATES = (3e-4, 1e-3, 3e-3)
TEMPERATURES = (0.5, 1.0, 2.0)

# A sweep file of two runs on the tiny model (configs/default.py:runlocal).
TWO_RUNS = """
from adaptive_data import config_args


def get_config(arg=None):
    return config_args.load_config("configs/default.py", "runlocal")


def sweep(add, arg=None):
    add(method="base")
    add(method="mixing", **{"mixing.generic_weight": 0.5})
"""


def _sweep_file(tmp_path, text=TWO_RUNS, name="two_runs.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------- expansion


def test_methods_sweep_is_every_standalone_method_on_every_target():
    runs = sweep.expand("configs/default.py")
    standalone = set(methods.names(needs_other_runs=False))  # no other runs' workdirs
    assert len(runs) == len(standalone) * len(TARGETS)
    pairs = [(run["method"], run["data.task"]) for run in runs]
    assert len(set(pairs)) == len(pairs)
    assert set(pairs) == set(itertools.product(standalone, TARGETS))
    assert sweep.expand("configs/default.py:sweep=methods,runlocal") == runs
    names = [sweep.run_name(run) for run in runs]
    assert len(set(names)) == len(names)
    assert "method-anograd__data.task-python" in names


def test_anograd_grid_is_learning_rate_times_temperature():
    runs = sweep.expand("configs/default.py:sweep=anograd_grid")
    assert runs == [
        {
            "method": "anograd",
            "data.task": "python",
            "outer.learning_rate": lr,
            "select.temperature": temperature,
        }
        for lr, temperature in itertools.product(LEARNING_RATES, TEMPERATURES)
    ]
    # get_config accepts (and ignores) the sweep argument.
    config = config_args.load_config("configs/default.py:runlocal,sweep=anograd_grid")
    assert config.to_dict() == config_args.load_config("configs/default.py:runlocal").to_dict()


def test_unknown_sweep_name_raises_listing_the_valid_ones():
    with pytest.raises(ValueError, match="anograd_grid"):
        sweep.expand("configs/default.py:sweep=anograd_gird")


def test_unknown_key_or_duplicate_run_fails_before_anything_runs(tmp_path):
    typo = TWO_RUNS.replace('"mixing.generic_weight"', '"mixing.generic_wieght"')
    with pytest.raises(ValueError, match="mixing.generic_wieght"):
        sweep.plan(_sweep_file(tmp_path, typo), tmp_path / "root")
    twice = TWO_RUNS + '    add(method="base")\n'
    with pytest.raises(ValueError, match="same name 'method-base'"):
        sweep.plan(_sweep_file(tmp_path, twice, "twice.py"), tmp_path / "root")
    with pytest.raises(KeyError, match="train.stepz"):
        sweep.plan(_sweep_file(tmp_path), tmp_path / "root", ["train.stepz=3"])
    assert not (tmp_path / "root").exists()


# ------------------------------------------------------------------------- dry run


def _parse_driver_line(line):
    """The config the driver would build from one printed command line."""
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "adaptive_data.main"]
    argv = ["adaptive_data.main", *argv[3:]]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "", flag_values=values, lock_config=True, sys_argv=argv
    )
    flags.DEFINE_string("workdir", None, "", flag_values=values)
    values(argv)
    return values.config.to_dict(), values.workdir


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
@pytest.mark.parametrize(
    "spec, grid",
    [
        (
            "configs/default.py:runlocal,sweep=anograd_grid",
            [
                {
                    "method": "anograd",
                    "data.task": "python",
                    "outer.learning_rate": lr,
                    "select.temperature": temperature,
                }
                for lr, temperature in itertools.product(LEARNING_RATES, TEMPERATURES)
            ],
        ),
        (
            "configs/default.py",
            [
                {"method": method, "data.task": target}
                for target in TARGETS
                for method in methods.names(needs_other_runs=False)
            ],
        ),
    ],
)
def test_dry_run_lines_parse_back_into_the_same_configs(spec, grid, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)  # where the printed lines are meant to run
    root = tmp_path / "root"
    tfds = str(tmp_path / "tfds")
    code = sweep.main(
        [
            f"--config={spec}",
            f"--workdir={root}",
            "--dry_run",
            "--set",
            "train.steps=7",
            "--set=weighting.conv_features=(16,8)",
            f"--tfds_data_dir={tfds}",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(grid)
    workdirs = set()
    for line, overrides in zip(lines, grid):
        parsed, workdir = _parse_driver_line(line)
        expected = config_args.override(config_args.load_config(spec), overrides)
        config_args.override(
            expected,
            {
                "train.steps": 7,
                "weighting.conv_features": (16, 8),
                "data.tfds_data_dir": tfds,
            },
        )
        assert parsed == expected.to_dict()
        assert workdir.startswith(str(root) + "/")
        workdirs.add(workdir)
    assert len(workdirs) == len(grid)
    assert not root.exists()  # nothing ran


# ------------------------------------------------------------------------- running


def _write_rows(workdir, steps):
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "metrics.jsonl").open("w") as f:
        for step in steps:
            f.write(
                json.dumps(
                    {
                        "step": step,
                        "eval/target_bpb": 3.0 - 0.1 * step,
                        "eval/generic_bpb": 4.0 - 0.1 * step,
                        "eval/target_valid_bpb": {0: 3.5, 2: 2.5}.get(step, 2.8),
                    }
                )
                + "\n"
            )


def test_finished_run_is_skipped_and_unfinished_one_launched(tmp_path, monkeypatch, capsys):
    spec = _sweep_file(tmp_path)
    root = tmp_path / "root"
    base, mixing = "method-base", "method-mixing__mixing.generic_weight-0.5"
    _write_rows(root / base, [0, 2, 4])  # finished (train.steps=4)
    _write_rows(root / mixing, [0, 2])  # interrupted at step 2: resumed
    launched = []

    def fake_launch(run):
        launched.append(run.name)
        assert run.command[1:3] == ["-m", "adaptive_data.main"]
        assert "--config.train.steps=4" in run.command
        _write_rows(run.workdir, [0, 2, 4])
        return 0

    monkeypatch.setattr(sweep, "launch", fake_launch)
    args = [f"--config={spec}", f"--workdir={root}", "--set=train.steps=4"]
    assert sweep.main(args) == 0
    out = capsys.readouterr().out
    assert launched == [mixing]
    assert f"[1/2] {base}: skipped (finished)" in out
    assert f"[2/2] {mixing}: started" in out and f"[2/2] {mixing}: finished in" in out
    assert not (root / base / "sweep.log").exists()

    with (root / "sweep_results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["workdir"] for row in rows] == [base, mixing]
    # Columns: the varying keys, then workdir, status and the metrics.
    assert list(rows[0])[:3] == ["method", "mixing.generic_weight", "workdir"]
    assert [row["method"] for row in rows] == ["base", "mixing"]
    assert [row["mixing.generic_weight"] for row in rows] == ["0.9", "0.5"]
    for row in rows:
        assert row["status"] == "finished" and row["step"] == "4"
        assert float(row["eval/target_bpb"]) == pytest.approx(2.6)
        assert float(row["eval/target_valid_bpb"]) == 2.8
        assert float(row["best eval/target_valid_bpb"]) == 2.5
    assert "| method | mixing.generic_weight | workdir |" in (root / "sweep_results.md").read_text()

    # Everything finished: a second sweep launches nothing.
    launched.clear()
    assert sweep.main(args) == 0
    assert launched == []


def test_failed_run_does_not_stop_the_others_and_is_reported(tmp_path, monkeypatch, capsys):
    spec = _sweep_file(tmp_path)
    root = tmp_path / "root"
    launched = []

    def fake_launch(run):
        launched.append(run.name)
        if run.overrides["method"] == "base":
            return 1
        _write_rows(run.workdir, [0, 40])  # runlocal: train.steps=40
        return 0

    monkeypatch.setattr(sweep, "launch", fake_launch)
    assert sweep.main([f"--config={spec}", f"--workdir={root}", "--parallel=2"]) == 1
    out = capsys.readouterr().out
    assert sorted(launched) == ["method-base", "method-mixing__mixing.generic_weight-0.5"]
    assert "[1/2] method-base: FAILED (exit code 1" in out
    with (root / "sweep_results.csv").open() as f:
        rows = {row["workdir"]: row for row in csv.DictReader(f)}
    assert rows["method-base"]["status"] == "failed"
    assert rows["method-base"]["eval/target_bpb"] == ""
    assert rows["method-mixing__mixing.generic_weight-0.5"]["step"] == "40"

    # --collect_only launches nothing and rewrites the table.
    launched.clear()
    assert sweep.main([f"--config={spec}", f"--workdir={root}", "--collect_only"]) == 0
    assert launched == []


def test_only_keeps_the_runs_with_the_given_values(tmp_path):
    root = tmp_path / "root"
    only = ["method=base,anograd,l2rw", "data.task=python"]
    runs = sweep.plan("configs/default.py", root, only=only)
    assert [run.name for run in runs] == [
        f"method-{m}__data.task-python" for m in METHODS if m in ("base", "anograd", "l2rw")
    ]
    with pytest.raises(ValueError, match=r"sets method=\['anogradx'\]; its values are"):
        sweep.plan("configs/default.py", root, only=["method=base,anogradx"])
    with pytest.raises(ValueError, match="sets 'seed'"):
        sweep.plan("configs/default.py", root, only=["seed=1"])
    with pytest.raises(ValueError, match="expected KEY=V1"):
        sweep.plan("configs/default.py", root, only=["method"])
    with pytest.raises(ValueError, match="matches all of"):  # only mixing sets the weight
        sweep.plan(_sweep_file(tmp_path), root, only=["method=base", "mixing.generic_weight=0.5"])
    assert not root.exists()


def test_results_give_the_mean_selection_shares_after_the_warmup(tmp_path):
    spec = _sweep_file(tmp_path)  # runlocal: select.warmup_steps = 5, train.steps = 40
    runs = sweep.plan(spec, tmp_path / "root")
    logged = {  # step: (selected target share, pool target share); steps <= 5 are warm-up
        0: (0.9, 0.9),
        5: (0.8, 0.7),
        20: (0.3, 0.1),
        40: (0.6, 0.2),
    }
    for run in runs:
        run.workdir.mkdir(parents=True)
        with (run.workdir / "metrics.jsonl").open("w") as f:
            for step, (selected, pool) in logged.items():
                row = {"step": step, "eval/target_bpb": 2.0}
                if run.overrides["method"] == "mixing":
                    row.update({"select/target_share": selected, "select/pool_target_share": pool})
                f.write(json.dumps(row) + "\n")
    base, mixing = sweep.results(runs)
    assert base["mean select/target_share"] is None
    assert base["mean select/pool_target_share"] is None
    assert mixing["mean select/target_share"] == pytest.approx((0.3 + 0.6) / 2)
    assert mixing["mean select/pool_target_share"] == pytest.approx((0.1 + 0.2) / 2)


@pytest.mark.slow
def test_small_sweep_end_to_end(tmp_path, tfds_dir, capsys):
    spec = _sweep_file(tmp_path)
    root = tmp_path / "root"
    args = [
        f"--config={spec}",
        f"--workdir={root}",
        "--parallel=2",
        f"--tfds_data_dir={tfds_dir}",
        "--set=train.steps=4",
        "--set=train.eval_every=4",
        "--set=checkpoint.every=4",
    ]
    code = sweep.main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    with (root / "sweep_results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "finished" and row["step"] == "4"
        assert math.isfinite(float(row["eval/target_bpb"]))
        assert (root / row["workdir"] / "sweep.log").is_file()
    assert sweep.main(args) == 0
    assert capsys.readouterr().out.count("skipped (finished)") == 2
