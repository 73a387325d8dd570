"""adaptive_data.plot: PNG curves of fake runs (hand-made metrics.jsonl / config.json)."""

import json
import pathlib
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest

from adaptive_data import metrics, plot

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG"


def _rows(method: str, domain_shares: bool) -> list[dict]:
    rows = []
    gain = 0.2 if method == "anograd" else 0.0  # the runs' curves differ
    for step in range(10, 101, 10):
        row = {
            "step": step,
            "train/loss": 3.0 - (1 + gain) * step / 100,
            "select/target_share": step / 200,
        }
        if domain_shares:
            row.update(
                {
                    "select/domain_share/python": 0.2 + step / 250,
                    "select/domain_share/wiki": 0.5 - step / 500,
                    "select/domain_share/news": 0.3 - step / 500,
                    "select/pool_target_share": 0.2,
                }
            )
        if step % 50 == 0:
            row.update(
                {
                    "eval/target_bpb": 2.0 - (1 + gain) * step / 200,
                    "eval/generic_bpb": 1.8 + gain / 4,
                    "eval/target_valid_bpb": 2.1 - step / 200,
                }
            )
        rows.append(row)
    return rows


def _workdir(root: pathlib.Path, name: str, method: str, shares: bool) -> pathlib.Path:
    workdir = root / name
    workdir.mkdir()
    lines = "".join(json.dumps(row) + "\n" for row in _rows(method, shares))
    (workdir / "metrics.jsonl").write_text(lines)
    config = {"method": method, "seed": 0, "data": {"task": "python", "generic": "embedded"}}
    (workdir / "config.json").write_text(json.dumps(config, indent=2))
    return workdir


@pytest.fixture
def workdirs(tmp_path):
    return [
        _workdir(tmp_path, "run_base", "base", shares=False),
        _workdir(tmp_path, "run_anograd", "anograd", shares=True),
    ]


def _assert_png(path: pathlib.Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC), path


def test_run_label(workdirs, tmp_path):
    assert plot.run_label(workdirs[1]) == "anograd (python)"
    bare = tmp_path / "bare_run"
    bare.mkdir()
    assert plot.run_label(bare) == "bare_run"


def test_plot_runs_writes_pngs(workdirs, tmp_path):
    out = tmp_path / "plots"
    figures_before = plt.get_fignums()
    written = plot.plot_runs([str(w) for w in workdirs], out)
    names = sorted(p.name for p in written)
    assert names == sorted(
        [
            "train_loss.png",
            "eval_target_bpb.png",
            "eval_generic_bpb.png",
            "eval_target_valid_bpb.png",
            "select_target_share.png",
            "domain_shares_anograd_python.png",
        ]
    )
    for path in written:
        _assert_png(path)
    assert sorted(p.name for p in out.iterdir()) == names
    assert plt.get_fignums() == figures_before  # every figure closed


def test_plot_runs_explicit_keys(workdirs, tmp_path):
    written = plot.plot_runs(workdirs, tmp_path / "k", keys=["eval/target_bpb", "no/such"])
    assert [p.name for p in written] == ["eval_target_bpb.png", "domain_shares_anograd_python.png"]


def test_plot_metric_missing_key_writes_nothing(workdirs, tmp_path):
    runs = {plot.run_label(w): metrics.read_metrics(w) for w in workdirs}
    path = tmp_path / "out" / "missing.png"
    assert plot.plot_metric(runs, "eval/no_such_metric", path) is False
    assert not path.exists() and not path.parent.exists()
    assert plot.plot_domain_shares(runs["base (python)"], tmp_path / "shares.png") is False
    assert not (tmp_path / "shares.png").exists()


def test_plot_metric_custom_x(workdirs, tmp_path):
    runs = {plot.run_label(w): metrics.read_metrics(w) for w in workdirs}
    calls = []

    def flops_at(label, rows):
        calls.append((label, [r["step"] for r in rows]))
        return [1e12 * (2 if label.startswith("anograd") else 1) * r["step"] for r in rows]

    path = tmp_path / "flops.png"
    assert plot.plot_metric(
        runs,
        "eval/target_bpb",
        path,
        x_values=flops_at,
        xlabel="cumulative training FLOPs",
        title="equal compute",
        logx=True,
    )
    _assert_png(path)
    assert calls == [("base (python)", [50, 100]), ("anograd (python)", [50, 100])]

    with pytest.raises(ValueError, match="x_values"):
        plot.plot_metric(
            runs, "eval/target_bpb", tmp_path / "bad.png", x_values=lambda label, rows: [0.0]
        )
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.slow
def test_cli(workdirs, tmp_path):
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "adaptive_data.plot",
        *map(str, workdirs),
        "--out",
        str(out),
        "--keys",
        "train/loss,eval/target_bpb",
    ]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    printed = [pathlib.Path(line) for line in result.stdout.split()]
    assert sorted(p.name for p in printed) == sorted(
        ["train_loss.png", "eval_target_bpb.png", "domain_shares_anograd_python.png"]
    )
    for path in printed:
        _assert_png(path)


@pytest.mark.slow
def test_cli_missing_run(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "adaptive_data.plot",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path / "cli"),
    ]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "metrics.jsonl" in result.stderr and "Train first" in result.stderr


def test_cli_config_metrics(workdirs, tmp_path, capsys):
    config = tmp_path / "my_config.py"
    config.write_text(
        "def metrics(arg=None):\n"
        "    return ['eval/generic_bpb'] + (['train/loss'] if arg else [])\n"
    )
    out = tmp_path / "cfg"
    assert plot.main([*map(str, workdirs), "--out", str(out), "--config", f"{config}:x"]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(pathlib.Path(p).name for p in printed) == sorted(
        ["eval_generic_bpb.png", "train_loss.png", "domain_shares_anograd_python.png"]
    )
    # --keys wins over the config's metrics().
    assert (
        plot.main(
            [
                *map(str, workdirs),
                "--out",
                str(out),
                "--config",
                str(config),
                "--keys",
                "select/target_share",
            ]
        )
        == 0
    )
    assert "select_target_share.png" in capsys.readouterr().out


def test_same_labels_are_made_unique(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    runs = [
        _workdir(tmp_path, "run_base", "base", shares=False),
        _workdir(tmp_path, "s0", "anograd", shares=True),
        _workdir(tmp_path / "a", "s1", "anograd", shares=True),
        _workdir(tmp_path / "b", "s1", "anograd", shares=True),
    ]
    written = plot.plot_runs(runs, tmp_path / "out", keys=["train/loss"])
    assert [p.name for p in written] == [
        "train_loss.png",
        "domain_shares_anograd_python_s0.png",
        "domain_shares_anograd_python_s1.png",
        "domain_shares_anograd_python_s1_2.png",
    ]
