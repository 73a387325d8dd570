"""The same run on 1 device, 8 simulated CPU devices and 2 processes gives the same metrics.

Each run is a subprocess (the device count is fixed when jax starts). Tolerance: every
logged metric (losses, bits/byte, selection shares and scores, outer-update diagnostics)
agrees to rtol 1e-5 / atol 1e-6; only ``steps_per_sec`` differs. Differences come only
from the order of floating-point reductions across devices.
"""

import os
import socket
import subprocess

import pytest

from conftest import (
    REPO_ROOT,
    SHORT_RUN_FLAGS,
    assert_same_metrics,
    kill_after_checkpoint,
    main_command,
    metrics_rows,
    simulated_devices_env,
)

pytestmark = pytest.mark.slow


def _command(workdir, tfds_dir, method, *extra):
    return main_command(
        workdir, tfds_dir, *SHORT_RUN_FLAGS, *extra, arg=f"runlocal,method={method}"
    )


def _run(workdir, tfds_dir, method, devices, *extra):
    result = subprocess.run(
        _command(workdir, tfds_dir, method, *extra),
        cwd=REPO_ROOT,
        env=simulated_devices_env(devices),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def runs(tfds_dir, tmp_path_factory):
    """Workdirs of (method, devices) runs, made on first use."""
    made = {}

    def get(method, devices):
        if (method, devices) not in made:
            workdir = str(tmp_path_factory.mktemp(f"{method}_{devices}dev"))
            made[method, devices] = _run(workdir, tfds_dir, method, devices)
        return made[method, devices]

    return get


@pytest.mark.parametrize("method", ["base", "anograd", "align_filter"])
def test_eight_devices_match_one_device(runs, method):
    assert_same_metrics(runs(method, 1), runs(method, 8))
    if method != "base":
        rows = metrics_rows(runs(method, 8))
        assert any(r.get("select/active") == 1.0 for r in rows)


def test_fsdp_on_eight_devices_matches_one_device(runs, tfds_dir, tmp_path):
    """Parameters and optimiser state sharded over 4 devices (data axis 2)."""
    workdir = _run(str(tmp_path / "fsdp"), tfds_dir, "anograd", 8, "--config.mesh.fsdp=4")
    assert_same_metrics(runs("anograd", 1), workdir)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(runs, tfds_dir, tmp_path):
    workdir = str(tmp_path / "two_processes")
    port = _free_port()
    procs = [
        subprocess.Popen(
            _command(
                workdir,
                tfds_dir,
                "base",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ),
            cwd=REPO_ROOT,
            env=simulated_devices_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    # Each process saved its own data-iterator position.
    last = os.path.join(workdir, "checkpoints", "24", "generic")
    assert sorted(f for f in os.listdir(last) if f.startswith("process_")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]
    assert_same_metrics(runs("base", 1), workdir)


def test_sigkill_and_resume_on_eight_devices(runs, tfds_dir, tmp_path):
    workdir = str(tmp_path / "killed")
    kill_after_checkpoint(
        _command(workdir, tfds_dir, "anograd"),
        os.path.join(workdir, "checkpoints", "8"),
        env=simulated_devices_env(8),
    )
    assert metrics_rows(workdir)[-1]["step"] < 24
    _run(workdir, tfds_dir, "anograd", 8)
    assert_same_metrics(runs("anograd", 8), workdir)
