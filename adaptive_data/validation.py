"""One check of the whole config before anything runs: ``validate_config(config)``.

Every key of ``configs/default.py`` with a constrained value has a ``Rule``
(``adaptive_data.config_rules``: key, predicate, the allowed values in words), and the
constraints between keys are ``Rule``s with a ``when`` condition. ``rules()`` composes
the rules of the shared blocks (``GENERIC_RULES``, here) with the registry's: each
registered method declares the rules of its own block and of the workdirs it needs
(``MethodSpec.rules``, ``MethodSpec.needs_runs``). ``validate_config`` applies them
all and raises one ``ConfigError`` listing every bad key, one line each::

    config.train.steps=-5: must be an int >= 1
    config.select.temperature=0.0: must be a number > 0

Keys a config does not have are skipped (a user config may leave blocks out), and so
is a rule that reads another key which is itself missing or bad. Enumerations come from
the constants of the code that reads them (the registry, ``selection.STRATEGIES``, ...).
What only the run can tell (devices, files, checkpoints, datasets) is checked where it
is used."""

from __future__ import annotations

from collections.abc import Sequence

from adaptive_data import models
from adaptive_data.config_rules import (
    Rule,
    boolean,
    integer,
    module_names,
    number,
    one_of,
    positive_ints,
    text,
)
from adaptive_data.core import selection
from adaptive_data.data import embedded_corpus, sources, tokenizer
from adaptive_data.methods import builders, registry
from adaptive_data.models import weighting


class ConfigError(ValueError):
    """Config values out of range: one line per bad key, and how to fix them."""


_MISSING = object()


_MISSING = object()


def data_spec():
    """``(ok, must_be)`` of a data spec (``sources.SPEC_FORMS``)."""
    return (
        lambda v, config: sources.is_valid_spec(v),
        "a data spec: " + ", ".join(repr(f) for f in sources.SPEC_FORMS),
    )


# ------------------------------------------------------------------ the rules

_SPLIT = text(note=" (a TFDS split name)")

GENERIC_RULES: tuple[Rule, ...] = (
    Rule("extra_modules", *module_names()),
    Rule("seed", *integer(0)),
    # data
    Rule("data.generic", *data_spec()),
    Rule("data.target", *data_spec()),
    Rule("data.task", *one_of(sorted(embedded_corpus.TASKS))),
    Rule(
        "data.pool_target_share",
        *number(0, 1, hi_open=True, optional=True, note=" (None: the task's default)"),
    ),
    Rule("data.max_target_train", *integer(1)),
    Rule("data.text_key", *text()),
    Rule(
        "data.tfds_data_dir",
        lambda v, config: v is None or isinstance(v, str),
        "a directory or None (None: TFDS_DATA_DIR, else ~/tensorflow_datasets)",
    ),
    Rule("data.generic_train_split", *_SPLIT),
    Rule("data.generic_valid_split", *_SPLIT),
    Rule("data.target_train_split", *_SPLIT),
    Rule("data.target_valid_split", *_SPLIT),
    Rule("data.target_test_split", *_SPLIT),
    Rule(
        "data.file_eval_fraction",
        *number(
            0,
            0.5,
            lo_open=True,
            hi_open=True,
            note=" (each evaluation split of a file: spec gets this fraction; a target "
            "file has two)",
        ),
    ),
    Rule("data.reserved_fraction", *number(0, 1, hi_open=True, note=" (0: no reserved shard)")),
    Rule("data.generic_shard", *one_of(sources.GENERIC_SHARDS)),
    Rule(
        "data.generic_shard",
        lambda v, config: v == "rest" or config.data.reserved_fraction > 0,
        "'rest' unless config.data.reserved_fraction > 0 (there is no reserved shard)",
        reads=("data.reserved_fraction",),
    ),
    Rule("data.target_domain", *text(optional=True)),
    Rule("data.num_threads", *integer(0, note=" (0: read in the calling thread)")),
    Rule(
        "data.tokenizer",
        lambda v, config: tokenizer.is_valid_spec(v),
        "a tokenizer: "
        + ", ".join(repr(f) for f in tokenizer.SPEC_FORMS)
        + " (train a file with python -m adaptive_data.data.train_tokenizer)",
    ),
    # train
    Rule("train.steps", *integer(1)),
    Rule("train.batch_size", *integer(1)),
    Rule("train.target_batch_size", *integer(1)),
    Rule("train.learning_rate", *number(0, lo_open=True)),
    # Warm-up may outlast train.steps: the schedule then never reaches its peak.
    Rule("train.warmup_steps", *integer(0)),
    Rule("train.end_lr_fraction", *number(0, 1)),
    Rule("train.weight_decay", *number(0)),
    Rule("train.b1", *number(0, 1, hi_open=True)),
    Rule("train.b2", *number(0, 1, hi_open=True)),
    Rule("train.grad_clip", *number(0, note=" (0: no clipping)")),
    Rule("train.eval_every", *integer(1)),
    Rule("train.log_every", *integer(1)),
    # eval
    Rule("eval.batch_size", *integer(1)),
    Rule("eval.max_examples", *integer(1)),
    # selection and the weighting model (shared by the methods)
    Rule("select.downsampling", *integer(1)),
    Rule("select.strategy", *one_of(selection.STRATEGIES, optional=True)),
    Rule("select.temperature", *number(0, lo_open=True)),
    Rule("select.warmup_steps", *integer(0)),
    Rule("weighting.embed_dim", *integer(1)),
    Rule("weighting.conv_features", *positive_ints()),
    Rule("weighting.kernel_size", *integer(1)),
    Rule("weighting.activation", *one_of(weighting.ACTIVATIONS)),
    Rule("outer.optimizer", *one_of(builders.OPTIMIZERS)),
    Rule("outer.learning_rate", *number(0, lo_open=True)),
    Rule("outer.every", *integer(1)),
    Rule("outer.stop_after", *integer(1, optional=True, note=" (None: never stop)")),
    Rule("outer.batch_fraction", *number(0, 1, lo_open=True, optional=True)),
    # run
    Rule(
        "diagnose.step",
        *integer(0, optional=True, note=" (None: the latest within 15% of train.steps)"),
    ),
    Rule("mesh.fsdp", *integer(1, note=" (and divide the number of devices)")),
    Rule("checkpoint.every", *integer(1)),
    Rule("checkpoint.keep", *integer(1)),
    Rule("checkpoint.keep_best", *boolean()),
)


# ------------------------------------------------------------------ the check


def _lookup(config, dotted: str):
    node = config
    for part in dotted.split("."):
        try:
            if part not in node:
                return _MISSING
            node = node[part]
        except (TypeError, KeyError, AttributeError):
            return _MISSING
    return node


def rules() -> tuple[Rule, ...]:
    """Every rule: ``GENERIC_RULES`` (the shared blocks), the model registry's
    (``config.model``: its name and the named entry's keys) and the method registry's
    (``config.method`` and each registered method's block and needed runs), as
    registered now."""
    return GENERIC_RULES + models.rules() + registry.rules()


def violations(config, rules_: Sequence[Rule] | None = None) -> list[str]:
    """The lines of ``ConfigError`` for ``config``: one per bad key, in rule order."""
    bad: dict[str, str] = {}
    for rule in rules() if rules_ is None else rules_:
        if rule.key in bad:
            continue
        value = _lookup(config, rule.key)
        if value is _MISSING:
            continue
        if any(k in bad or _lookup(config, k) is _MISSING for k in rule.reads):
            continue
        try:
            if rule.when is not None and not rule.when(config):
                continue
            ok = rule.ok(value, config)
        except (TypeError, ValueError, AttributeError, KeyError, ZeroDivisionError):
            ok = False
        if not ok:
            bad[rule.key] = f"config.{rule.key}={value!r}: must be {rule.must_be}"
    return list(bad.values())


def validate_config(config) -> None:
    """Raises ``ConfigError`` listing every value of ``config`` that ``rules()`` refuses.

    First imports the modules of ``config.extra_modules`` (methods registered outside
    the package), so that a saved config, a sweep's or a benchmark's subprocess and a
    resume find the methods they name; ImportError if one does not import.
    """
    extra = _lookup(config, "extra_modules")
    if extra is not _MISSING and not violations(config, GENERIC_RULES[:1]):
        registry.import_extra_modules(extra)
    lines = violations(config)
    if lines:
        raise ConfigError(
            f"Invalid config ({len(lines)} bad value{'s' if len(lines) > 1 else ''}):\n"
            + "\n".join(lines)
            + "\nFix them with --config.<key>=... overrides or in the config file."
        )
