"""One check of the whole config up front (``adaptive_data.validation``), and the message
of a TFDS dataset that is not found. Fast: nothing is trained, no corpus is prepared."""

import math
import re

import pytest
from tensorflow_datasets.core import constants as tfds_constants

from adaptive_data import config_args, diagnose, methods, run_setup
from adaptive_data.data import embedded_corpus, sources
from adaptive_data.validation import ConfigError, rules, validate_config, violations

from conftest import REPO_ROOT

PAPER = config_args.load_config_module(REPO_ROOT / "configs" / "paper" / "c4.py")
# What methods that start from, or score with, other runs need (any path: not read here),
# and the reserved shard of the pool that rho's reference trains on.
WORKDIRS = {
    "finetune.init_from": "/runs/base",
    "cds.generic_from": "/runs/base",
    "cds.target_from": "/runs/base_ft",
    "rho.reference_from": "/runs/base_reserved_ft",
    "data.reserved_fraction": 0.2,
}


def _config(arg="runlocal", **overrides):
    config = config_args.load_config("configs/default.py", arg)
    return config_args.override(config, overrides)


def _leaf_keys(node, prefix=""):
    for key, value in node.items():
        if hasattr(value, "items"):
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield prefix + key


# (dotted key, bad value, the range the message must give)
BAD_VALUES = [
    ("method", "nope", "one of ('align_filter', 'anograd'"),
    ("seed", -1, "an int >= 0"),
    ("data.generic", "hf:c4", "a data spec: 'embedded', 'tfds:NAME[/CONFIG][:VERSION]'"),
    ("data.target", "tfds:", "a data spec: 'embedded'"),
    ("data.task", "klingon", f"one of {tuple(sorted(embedded_corpus.TASKS))}"),
    ("data.pool_target_share", 1.0, "a number in [0, 1) or None"),
    ("data.max_target_train", 0, "an int >= 1"),
    ("data.text_key", "", "a non-empty string"),
    ("data.generic_valid_split", "", "a non-empty string (a TFDS split name)"),
    ("data.file_eval_fraction", 0.5, "a number in (0, 0.5)"),
    ("data.file_eval_fraction", 0.0, "a number in (0, 0.5)"),
    ("data.num_threads", -1, "an int >= 0"),
    ("model.size", "huge", "one of ('tiny', 'small', 'paper')"),
    ("model.num_layers", 0, "an int >= 1"),
    ("model.width", 66, "a multiple of config.model.num_heads"),
    ("model.mlp_dim", 0, "an int >= 1"),
    ("model.num_heads", 0, "an int >= 1"),
    ("model.max_length", -64, "an int >= 1"),
    ("model.dropout_rate", 1.0, "a number in [0, 1)"),
    ("model.dtype", "float16", "one of ('float32', 'bfloat16')"),
    ("train.steps", -5, "an int >= 1"),
    ("train.batch_size", 0, "an int >= 1"),
    ("train.target_batch_size", 0, "an int >= 1"),
    ("train.learning_rate", -1e-3, "a number > 0"),
    ("train.learning_rate", math.nan, "a number > 0"),
    ("train.warmup_steps", -1, "an int >= 0"),
    ("train.end_lr_fraction", 1.5, "a number in [0, 1]"),
    ("train.weight_decay", -0.01, "a number >= 0"),
    ("train.b1", 1.0, "a number in [0, 1)"),
    ("train.b2", -0.1, "a number in [0, 1)"),
    ("train.grad_clip", -1.0, "a number >= 0 (0: no clipping)"),
    ("train.eval_every", 0, "an int >= 1"),
    ("train.log_every", 0, "an int >= 1"),
    ("eval.batch_size", 0, "an int >= 1"),
    ("eval.max_examples", -1, "an int >= 1"),
    ("mixing.generic_weight", 1.1, "a number in [0, 1]"),
    ("select.downsampling", 0, "an int >= 1"),
    ("select.strategy", "best", "one of ('top', 'sample', "),
    ("select.temperature", 0.0, "a number > 0"),
    ("select.warmup_steps", -1, "an int >= 0"),
    ("align_filter.method", "fast", "one of ('vmap', 'jvp', 'weights')"),
    ("align_filter.chunk_size", 0, "an int >= 1 or None"),
    ("align_filter.param_filter", "attn(", "a valid regular expression"),
    ("align_filter.normalize", True, "False unless config.align_filter.method='vmap'"),
    ("weighting.embed_dim", 0, "an int >= 1"),
    ("weighting.conv_features", (8, 0), "a non-empty tuple of ints >= 1"),
    ("weighting.kernel_size", 0, "an int >= 1"),
    ("weighting.activation", "tanh", "one of ('relu', 'gelu')"),
    ("outer.optimizer", "rmsprop", "one of ('adam', 'sgd')"),
    ("outer.learning_rate", 0.0, "a number > 0"),
    ("outer.every", 0, "an int >= 1"),
    ("anograd.normalization", "l2", "one of ('norm', 'hessian')"),
    ("anograd.param_filter", "[", "a valid regular expression"),
    ("soba.outer_batch", "all", "one of ('uniform', 'selected', 'big')"),
    ("soba.hessian_weights", "diag", "one of ('uniform', 'weighted')"),
    ("soba.v_optimizer", "adagrad", "one of ('adam', 'sgd')"),
    ("soba.v_learning_rate", -1.0, "a number > 0 or None"),
    ("soba.hessian_free_curvature", "one", "one of ('zero', 'identity')"),
    ("soba.hessian_reg", 2.0, "a number in [0, 1]"),
    ("dds.eta", -0.1, "a number >= 0"),
    ("dds.lookahead_batch", "all", "one of ('uniform', 'selected')"),
    ("mixture.update_rule", "sgd", "one of ('eg', 'hypergradient')"),
    ("mixture.step_size", 0.0, "a number > 0"),
    ("mixture.smoothing", 1.0, "a number in [0, 1)"),
    ("mixture.objective", "soba", "one of ('anograd', 'dds')"),
    ("dsir.num_buckets", 0, "an int >= 1"),
    ("dsir.smoothing", 0.0, "a number > 0"),
    ("diagnose.step", -1, "an int >= 0 or None"),
    ("mesh.fsdp", 0, "an int >= 1"),
    ("checkpoint.every", 0, "an int >= 1"),
    ("checkpoint.keep", 0, "an int >= 1"),
]


@pytest.mark.parametrize("key,value,must_be", BAD_VALUES)
def test_a_bad_value_is_refused_with_its_key_value_and_range(key, value, must_be):
    config = _config(**{key: value})
    with pytest.raises(ConfigError) as e:
        validate_config(config)
    message = str(e.value)
    assert f"config.{key}={_held(config, key)!r}: must be {must_be}" in message
    assert len(violations(config)) == 1, message  # the other defaults are fine
    assert message.rstrip().endswith(
        "Fix them with --config.<key>=... overrides or in the config file."
    )


def _held(config, dotted):
    """The value as the config holds it (e.g. an int given for a float field)."""
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize(
    "method,key",
    [
        ("finetune", "finetune.init_from"),
        ("cds", "cds.generic_from"),
        ("cds", "cds.target_from"),
        ("rho", "rho.reference_from"),
    ],
)
def test_methods_that_need_other_runs_name_the_missing_workdir(method, key):
    with pytest.raises(ConfigError, match=re.escape(f"config.{key}='': must be the workdir of")):
        validate_config(_config(f"method={method},runlocal"))
    validate_config(_config(f"method={method},runlocal", **WORKDIRS))


def test_every_key_of_the_default_config_has_a_rule():
    keys = set(_leaf_keys(_config("method=base")))
    ruled = {rule.key for rule in rules()}
    assert keys <= ruled, sorted(keys - ruled)
    assert ruled <= keys, sorted(ruled - keys)  # no rule for a key that is gone


@pytest.mark.parametrize("method", sorted(methods.METHODS))
@pytest.mark.parametrize("size", ["runlocal", "size=small", "size=paper"])
def test_default_configs_of_every_method_pass(method, size):
    validate_config(_config(f"method={method},{size}", **WORKDIRS))


@pytest.mark.parametrize("method", sorted(methods.METHODS))
@pytest.mark.parametrize("arg", ["target=file:/data/reuters.jsonl", "runlocal"])
def test_paper_configs_pass(method, arg):
    config = PAPER.get_config(f"method={method},{arg}")
    validate_config(config_args.override(config, WORKDIRS))


def test_all_bad_values_are_reported_in_one_error():
    bad = {
        "train.steps": -5,
        "select.temperature": 0.0,
        "model.dtype": "fp8",
        "mixing.generic_weight": -0.5,
        "anograd.param_filter": "(",
    }
    with pytest.raises(ConfigError) as e:
        validate_config(_config(**bad))
    lines = str(e.value).splitlines()
    assert lines[0] == "Invalid config (5 bad values):"
    assert len(lines) == 1 + len(bad) + 1
    for key, value in bad.items():
        assert sum(line.startswith(f"config.{key}={value!r}: must be ") for line in lines) == 1
    assert "--config.<key>=..." in lines[-1]


def test_keys_a_config_lacks_are_skipped_and_so_are_rules_reading_bad_keys():
    import ml_collections

    config = ml_collections.ConfigDict({"method": "base", "train": {"steps": 10}})
    validate_config(config)  # no model, data, ... blocks: nothing to check there
    config.train.steps = 0
    assert violations(config) == ["config.train.steps=0: must be an int >= 1"]
    # num_heads is bad: width is not also blamed for not being a multiple of it.
    assert violations(_config(**{"model.num_heads": 0})) == [
        "config.model.num_heads=0: must be an int >= 1"
    ]
    # align_filter.normalize is fine with vmap.
    validate_config(_config(**{"align_filter.normalize": True, "align_filter.method": "vmap"}))


def test_run_setup_refuses_a_bad_config():
    config = _config("method=anograd,runlocal", **{"select.temperature": -1.0, "outer.every": 0})
    with pytest.raises(ConfigError) as e:
        run_setup.build(config, domains=("generic", "target"), target_domain="target")
    assert "config.select.temperature=-1.0: must be a number > 0" in str(e.value)
    assert "config.outer.every=0: must be an int >= 1" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_methods_build_names_the_registered_methods_for_an_unknown_one():
    config = _config("method=anograd,runlocal")
    config.method = "nope"
    with pytest.raises(KeyError, match="not registered; registered: .*'anograd'"):
        methods.build(config, model=None, tx=None, domains=("generic",), target_domain=None)


def test_diagnose_refuses_a_bad_config_before_reading_the_workdir(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("config.select.downsampling=0")):
        diagnose.diagnose(_config(**{"select.downsampling": 0}), str(tmp_path / "none"))


# ------------------------------------------------------------------ TFDS not found


def _data(tmp_path, **overrides):
    generic = tmp_path / "generic.txt"
    generic.write_text("".join(f"generic document {i}\n" for i in range(50)))
    data = _config().data
    data.update({"generic": f"file:{generic}", "target": f"file:{generic}", **overrides})
    return data


@pytest.mark.parametrize("role", ["generic", "target"])
def test_tfds_dataset_not_found_in_the_configured_dir(tmp_path, role):
    empty = tmp_path / "tfds_empty"
    empty.mkdir()
    data = _data(tmp_path, **{role: "tfds:no_such_ds", "tfds_data_dir": str(empty)})
    with pytest.raises(sources.DataError) as e:
        sources.load_corpus(data)
    message = str(e.value)
    assert "Unknown TFDS dataset 'no_such_ds'" in message
    assert f"config.data.{role}='tfds:no_such_ds'" in message
    assert f"config.data.tfds_data_dir={str(empty)!r}" in message
    assert "set config.data.tfds_data_dir" in message
    assert "Available datasets" not in message  # not TFDS's list of every dataset


def test_tfds_dataset_not_found_in_the_default_dir(tmp_path):
    with pytest.raises(sources.DataError) as e:
        sources.load_corpus(_data(tmp_path, target="tfds:no_such_ds", tfds_data_dir=None))
    message = str(e.value)
    assert "Unknown TFDS dataset 'no_such_ds' (from config.data.target='tfds:no_such_ds')" in (
        message
    )
    assert repr(str(tfds_constants.DATA_DIR)) in message
    assert "config.data.tfds_data_dir is not set" in message
    assert "set config.data.tfds_data_dir" in message
