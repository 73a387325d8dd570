"""One check of the whole config before anything runs: ``validate_config(config)``.

Every key of ``configs/default.py`` with a constrained value has a ``Rule`` in ``RULES``
(key, predicate, the allowed values in words), and the constraints between keys are
``Rule``s with a ``when`` condition. ``validate_config`` applies them all and raises one
``ConfigError`` listing every bad key, one line each::

    config.train.steps=-5: must be an int >= 1
    config.select.temperature=0.0: must be a number > 0

Keys a config does not have are skipped (a user config may leave blocks out), and so
is a rule that reads another key which is itself missing or bad. Enumerations come from
the constants of the code that reads them (``METHODS``, ``selection.STRATEGIES``, ...).
What only the run can tell (devices, files, checkpoints, datasets) is checked where it
is used.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from adaptive_data.core import alignment, mixture, selection
from adaptive_data.core.outer.anograd import NORMALIZATIONS
from adaptive_data.core.outer.soba import HESSIAN_FREE_CURVATURES, HESSIAN_WEIGHTS
from adaptive_data.data import embedded_corpus, sources
from adaptive_data.methods.registry import DDS_LOOKAHEAD_BATCHES, METHODS, OPTIMIZERS
from adaptive_data.methods.types import OUTER_BATCHES
from adaptive_data.models import transformer, weighting


class ConfigError(ValueError):
    """Config values out of range: one line per bad key, and how to fix them."""


_MISSING = object()


@dataclasses.dataclass(frozen=True)
class Rule:
    """``config.<key>`` must satisfy ``ok(value, config)``, described by ``must_be``.

    ``when(config)``: the rule applies only if this holds (constraints between keys);
    ``reads``: the other keys ``ok`` and ``when`` read (the rule is skipped when one of
    them is missing or itself bad).
    """

    key: str
    ok: Callable[[Any, Any], bool]
    must_be: str
    when: Callable[[Any], bool] | None = None
    reads: tuple[str, ...] = ()


# ------------------------------------------------------------------ value predicates


def _is_int(v) -> bool:
    if isinstance(v, bool):
        return False
    try:
        operator.index(v)
    except TypeError:
        return False
    return True


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _bound_text(lo, hi, lo_open, hi_open) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _within(v, lo, hi, lo_open, hi_open) -> bool:
    above = v > lo if lo_open else v >= lo
    below = hi is None or (v < hi if hi_open else v <= hi)
    return above and below


def integer(lo: int, *, optional: bool = False, note: str = ""):
    """``(ok, must_be)`` of an int >= ``lo`` (or None when ``optional``)."""
    text = f"an int >= {lo}" + (" or None" if optional else "") + note

    def ok(v, config):
        del config
        return (optional and v is None) or (_is_int(v) and int(v) >= lo)

    return ok, text


def number(lo, hi=None, *, lo_open=False, hi_open=False, optional=False, note: str = ""):
    """``(ok, must_be)`` of a finite number within the bounds (or None when ``optional``)."""
    text = f"a number {_bound_text(lo, hi, lo_open, hi_open)}"
    text += (" or None" if optional else "") + note

    def ok(v, config):
        del config
        if optional and v is None:
            return True
        return _is_number(v) and _within(float(v), lo, hi, lo_open, hi_open)

    return ok, text


def one_of(choices: Sequence[Any], *, optional: bool = False, note: str = ""):
    """``(ok, must_be)`` of a value of ``choices`` (or None when ``optional``)."""
    choices = tuple(choices)
    text = f"one of {choices}" + (" or None" if optional else "") + note

    def ok(v, config):
        del config
        return (optional and v is None) or (isinstance(v, str) and v in choices)

    return ok, text


def boolean():
    return (lambda v, config: isinstance(v, bool)), "True or False"


def text(*, optional: bool = False, note: str = ""):
    """``(ok, must_be)`` of a non-empty string (or None when ``optional``)."""

    def ok(v, config):
        del config
        return (optional and v is None) or (isinstance(v, str) and bool(v))

    return ok, "a non-empty string" + (" or None" if optional else "") + note


def regex(note: str = ""):
    """``(ok, must_be)`` of a string that compiles as a regular expression."""

    def ok(v, config):
        del config
        if not isinstance(v, str):
            return False
        try:
            re.compile(v)
        except re.error:
            return False
        return True

    return ok, "a valid regular expression" + note


def positive_ints():
    def ok(v, config):
        del config
        return (
            isinstance(v, (tuple, list))
            and len(v) > 0
            and all(_is_int(x) and int(x) >= 1 for x in v)
        )

    return ok, "a non-empty tuple of ints >= 1"


def data_spec():
    return (
        lambda v, config: sources.is_valid_spec(v),
        "a data spec: " + ", ".join(repr(f) for f in sources.SPEC_FORMS),
    )


def _method_is(name: str) -> Callable[[Any], bool]:
    return lambda config: config.get("method") == name


def _workdir(name: str, what: str) -> tuple:
    """A workdir key that ``method=name`` needs: ``(ok, must_be, when, reads)``."""
    return (
        lambda v, config: isinstance(v, str) and bool(v),
        f"the workdir of {what} when config.method={name!r}",
        _method_is(name),
        ("method",),
    )


# ------------------------------------------------------------------ the rules

_SPLIT = text(note=" (a TFDS split name)")

RULES: tuple[Rule, ...] = (
    Rule("method", *one_of(sorted(METHODS))),
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
    Rule("data.target_domain", *text(optional=True)),
    Rule("data.num_threads", *integer(0, note=" (0: read in the calling thread)")),
    # model
    Rule("model.size", *one_of(tuple(transformer.SIZES))),
    Rule("model.num_layers", *integer(1)),
    Rule("model.width", *integer(1)),
    Rule("model.mlp_dim", *integer(1)),
    Rule("model.num_heads", *integer(1)),
    Rule("model.max_length", *integer(1)),
    Rule("model.dropout_rate", *number(0, 1, hi_open=True)),
    Rule("model.dtype", *one_of(transformer.DTYPES)),
    Rule(
        "model.width",
        lambda v, config: int(v) % int(config.model.num_heads) == 0,
        "a multiple of config.model.num_heads (each head gets width / num_heads)",
        reads=("model.num_heads",),
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
    # methods
    Rule("mixing.generic_weight", *number(0, 1)),
    Rule(
        "finetune.init_from",
        *_workdir("finetune", "a pretrained run (e.g. a base run) to start from"),
    ),
    Rule("select.downsampling", *integer(1)),
    Rule("select.strategy", *one_of(selection.STRATEGIES, optional=True)),
    Rule("select.temperature", *number(0, lo_open=True)),
    Rule("select.warmup_steps", *integer(0)),
    Rule("align_filter.method", *one_of(alignment.METHODS)),
    Rule("align_filter.chunk_size", *integer(1, optional=True, note=" (None: all at once)")),
    Rule("align_filter.param_filter", *regex(" ('' = all parameters)")),
    Rule("align_filter.normalize", *boolean()),
    Rule(
        "align_filter.normalize",
        lambda v, config: not v or config.align_filter.method == "vmap",
        "False unless config.align_filter.method='vmap' (the cosine needs per-example "
        "gradient norms, which only vmap computes)",
        reads=("align_filter.method",),
    ),
    Rule("weighting.embed_dim", *integer(1)),
    Rule("weighting.conv_features", *positive_ints()),
    Rule("weighting.kernel_size", *integer(1)),
    Rule("weighting.activation", *one_of(weighting.ACTIVATIONS)),
    Rule("outer.optimizer", *one_of(OPTIMIZERS)),
    Rule("outer.learning_rate", *number(0, lo_open=True)),
    Rule("outer.every", *integer(1)),
    Rule("anograd.normalization", *one_of(NORMALIZATIONS)),
    Rule("anograd.param_filter", *regex(" ('' = all parameters)")),
    Rule("soba.outer_batch", *one_of(OUTER_BATCHES)),
    Rule("soba.hessian_weights", *one_of(HESSIAN_WEIGHTS)),
    Rule("soba.v_optimizer", *one_of(OPTIMIZERS)),
    Rule(
        "soba.v_learning_rate",
        *number(0, lo_open=True, optional=True, note=" (None: the model's schedule)"),
    ),
    Rule("soba.hessian_free", *boolean()),
    Rule("soba.hessian_free_curvature", *one_of(HESSIAN_FREE_CURVATURES)),
    Rule("soba.hessian_reg", *number(0, 1)),
    Rule("dds.eta", *number(0, note=" (0: the eta -> 0 limit)")),
    Rule("dds.lookahead_batch", *one_of(DDS_LOOKAHEAD_BATCHES)),
    Rule("mixture.update_rule", *one_of(mixture.UPDATES)),
    Rule("mixture.step_size", *number(0, lo_open=True)),
    Rule("mixture.smoothing", *number(0, 1, hi_open=True)),
    Rule("mixture.objective", *one_of(mixture.OBJECTIVES)),
    Rule("dsir.num_buckets", *integer(1)),
    Rule("dsir.smoothing", *number(0, lo_open=True)),
    Rule(
        "cds.generic_from",
        *_workdir("cds", "a base run (generic data; experiments/benchmark.py makes it)"),
    ),
    Rule(
        "cds.target_from",
        *_workdir(
            "cds",
            "a run trained on target_train (e.g. method=finetune from a base run; "
            "experiments/benchmark.py makes it)",
        ),
    ),
    Rule(
        "rho.reference_from",
        *_workdir(
            "rho",
            "a run trained on target_train (e.g. method=finetune from a base run; "
            "experiments/benchmark.py makes it)",
        ),
    ),
    # run
    Rule("diagnose.step", *integer(0, optional=True, note=" (None: the earliest after warm-up)")),
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


def violations(config, rules: Sequence[Rule] = RULES) -> list[str]:
    """The lines of ``ConfigError`` for ``config``: one per bad key, in rule order."""
    bad: dict[str, str] = {}
    for rule in rules:
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
    """Raises ``ConfigError`` listing every value of ``config`` that ``RULES`` refuses."""
    lines = violations(config)
    if lines:
        raise ConfigError(
            f"Invalid config ({len(lines)} bad value{'s' if len(lines) > 1 else ''}):\n"
            + "\n".join(lines)
            + "\nFix them with --config.<key>=... overrides or in the config file."
        )
