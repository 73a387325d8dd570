"""Every data-selection method runs in the driver, logs its diagnostics, and resumes exactly.

A resume is simulated by deleting the last checkpoint of a finished run (as if it had
been killed after the previous one) and running the same config again: the metrics
must equal the uninterrupted run's.
"""

import os
import shutil

import pytest

from adaptive_data import train
from adaptive_data.methods import METHODS

from test_train import _config, _deterministic, _rows

pytestmark = pytest.mark.slow

SELECTING_METHODS = sorted(name for name, spec in METHODS.items() if spec.scorer != "none")
# Diagnostics each method must log, beyond COMMON_KEYS.
METHOD_KEYS = {
    "align_filter": {"select/score_selected"},
    "anograd": {"outer/objective", "outer/cosine", "select/ess_fraction"},
    "soba": {"soba/v_norm", "outer/objective"},
    "dds": {"outer/objective", "dds/step_norm"},
    "l2rw": {"select/score_selected"},
    "domain_mixture": {"mixture/alpha/python", "mixture/alignment/python"},
}
COMMON_KEYS = {
    "select/target_share",
    "select/pool_target_share",
    "select/domain_share/python",
    "select/active",
}


@pytest.mark.parametrize("method", SELECTING_METHODS)
def test_method_runs_logs_diagnostics_and_resumes_exactly(method, tfds_dir, tmp_path):
    workdir = str(tmp_path / method)
    config = _config(
        tfds_dir,
        f"method={method},runlocal",
        **{
            "train.steps": 12,
            "checkpoint.every": 6,
            "train.eval_every": 6,
            "train.log_every": 2,
            "select.warmup_steps": 2,
        },
    )
    train.train_and_evaluate(config, workdir)
    rows = _rows(workdir)
    last = rows[-1]
    assert METHOD_KEYS.get(method, set()) | COMMON_KEYS <= set(last), sorted(last)
    assert last["select/active"] == 1.0
    shares = [v for k, v in last.items() if k.startswith("select/domain_share/")]
    assert sum(shares) == pytest.approx(1.0)
    if method == "domain_mixture":
        alphas = [
            v
            for k, v in last.items()
            if k.startswith("mixture/alpha/") and k != "mixture/alpha_entropy"
        ]
        assert sum(alphas) == pytest.approx(1.0, abs=1e-5) and min(alphas) > 0

    shutil.rmtree(os.path.join(workdir, "checkpoints", "12"))
    train.train_and_evaluate(config, workdir)
    assert _deterministic(_rows(workdir)) == _deterministic(rows)


def test_unknown_strategy_and_bad_downsampling_are_refused(tfds_dir, tmp_path):
    config = _config(tfds_dir, "method=anograd,runlocal", **{"select.strategy": "best"})
    with pytest.raises(ValueError, match="config.select.strategy='best'"):
        train.train_and_evaluate(config, str(tmp_path / "a"))
    config = _config(tfds_dir, "method=anograd,runlocal", **{"select.downsampling": 0})
    with pytest.raises(ValueError, match="config.select.downsampling=0"):
        train.train_and_evaluate(config, str(tmp_path / "b"))


def test_rank_correlation_matches_scipy():
    import numpy as np
    from scipy import stats

    from adaptive_data import diagnose

    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = x + rng.normal(size=50)
    assert diagnose.rank_correlation(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
