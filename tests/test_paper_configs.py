"""configs/paper/c4.py: the paper's sizes, and a few real steps with `runlocal`."""

import pytest

from adaptive_data import config_args, train
from adaptive_data.methods import METHODS

from conftest import REPO_ROOT

PAPER = config_args.load_config_module(REPO_ROOT / "configs" / "paper" / "c4.py")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_paper_config_has_the_paper_sizes(method):
    config = PAPER.get_config(f"method={method},target=file:/data/reuters.jsonl")
    m = config.model
    assert (m.num_layers, m.width, m.mlp_dim, m.num_heads, m.max_length) == (12, 256, 1024, 8, 256)
    assert config.train.batch_size == 128 and config.data.generic == "tfds:c4/en:3.1.0"
    assert config.data.target == "file:/data/reuters.jsonl"
    assert config.select.downsampling * config.train.batch_size <= 8192


def test_paper_config_needs_a_target():
    with pytest.raises(ValueError, match="needs a target sample"):
        PAPER.get_config("method=anograd")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["base", "anograd", "soba"])
def test_paper_config_runs_a_few_steps_with_runlocal(method, tfds_dir, tmp_path):
    config = PAPER.get_config(f"method={method},runlocal")
    config.data.tfds_data_dir = tfds_dir
    config.train.steps = 3
    config.select.warmup_steps = 1
    result = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert result["step"] == 3 and result["eval/target_bpb"] < 8.5
