"""The mechanics of the method registry: ``MethodSpec``, ``register``, ``names``, ``build``.

A method is one module (``adaptive_data/methods/<name>.py`` for the package's own, any
importable module for a user's): it holds the method's constructor ``build(config,
context) -> Method``, its config block with defaults (``defaults(arg) -> ConfigDict``,
placed at ``config.<config_key>`` by ``configs/default.py``), the rules of that block
(``rules``, checked by ``adaptive_data.validation``), the other runs it needs
(``needs_runs``: dotted config key of a workdir -> what that run is) and its
``register(MethodSpec(...))``. This module names no method: ``adaptive_data.methods``
imports the package's method modules, which register themselves in the order of the
README's method table. Shared settings stay in ``configs/default.py``: selection
(``config.select``), the weighting model (``config.weighting``) and its optimiser
(``config.outer``), training (``config.train``), ...

Every list of methods (config validation, the configs, the benchmark, the sweep, fault
fuzzing, the bench scripts, the tests) derives from the registry: ``METHODS`` (name ->
spec, in registration order) and ``names(...)``. A user's own module adds a method with
``register(MethodSpec(...))``; ``config.extra_modules`` imports it before the config is
checked (docs/guide.md, "Add your own method"). The maths of each method is in
docs/algorithms.md and its ``adaptive_data/core`` module.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ml_collections
import optax

from adaptive_data.config_rules import Rule, method_is, one_of, workdir
from adaptive_data.methods.types import Method

# What scores the big batch (``MethodSpec.scorer``), from cheapest to dearest per example.
SCORERS = ("none", "domain", "ngram", "weighting_model", "lm_forward", "lm_gradient")
# Which verdict of the preflight test (``adaptive_data.diagnose``) speaks for a method
# (``MethodSpec.diagnosis``): "exact_scores", selection by the exact gradient alignment
# recomputed at every step; "learned_weights", selection by weights learned online from
# past alignments, which also needs the alignments to persist; "" the test does not speak
# for the method (its scores do not come from gradient alignment with the target).
DIAGNOSES = ("", "exact_scores", "learned_weights")


@dataclasses.dataclass(frozen=True)
class MethodContext:
    """What a constructor needs besides the config: the LM, its optimiser, the domains."""

    model: Any  # models.LanguageModel
    tx: optax.GradientTransformation
    num_domains: int
    target_domain_id: int | None


@dataclasses.dataclass(frozen=True)
class NeededRun:
    """Another run whose workdir a method reads (a value of ``MethodSpec.needs_runs``).

    What it declares is enough for a driver (``experiments/benchmark.py``,
    ``experiments/fault_fuzz.py``) to make the run without knowing the method:

    Attributes:
      description: what the run is, for error messages and docs.
      fine_tuned: False: a ``base`` run (generic data only); True: such a run fine-tuned
        on target_train (``finetune``, best checkpoint by target_valid).
      independent_seed: the base run must have another seed (parameter init and generic
        data order) than the run that reads it; False: the same seed (CDS's published
        protocol).
      reserved_shard: the base run trains on the reserved shard of the generic pool
        only (``data.generic_shard=reserved``), and the run that reads it draws from the
        rest (``data.reserved_fraction`` > 0, the same in both): its model never trained
        on a document the reading run can score (RHO-LOSS's irreducible-loss model). A
        rule added by the registry refuses a reading run without a reserved shard.
    """

    description: str
    fine_tuned: bool = False
    independent_seed: bool = False
    reserved_shard: bool = False


def _reserved_shard_rules(name: str) -> tuple[Rule, ...]:
    """A run of method ``name`` reads a model trained on the reserved shard: it must have
    one, and draw from the rest of the pool."""
    how = (
        f"(config.method={name!r} scores with a model trained on the reserved shard of "
        "generic_train: give its base run the same fraction and data.generic_shard="
        "'reserved')"
    )
    return (
        Rule(
            "data.reserved_fraction",
            lambda v, config: v > 0,
            f"> 0 {how}",
            method_is(name),
            ("method",),
        ),
        Rule(
            "data.generic_shard",
            lambda v, config: v == "rest",
            f"'rest' {how}",
            method_is(name),
            ("method",),
        ),
    )


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A registry entry: everything that belongs to one method.

    Attributes:
      name: ``config.method`` of the method (a Python identifier).
      build: ``build(config, context: MethodContext) -> Method``, reading the method's
        settings from the (already validated) config.
      summary: one line for the README's method table and ``--help`` texts.
      scorer: what scores the big batch, one of ``SCORERS`` ("none": no selection).
      defaults: ``defaults(arg) -> ml_collections.ConfigDict``, the method's config block
        with its defaults and a comment per key; ``arg`` holds get_config's parsed
        arguments (``runlocal``, ``init_from``, ...). None: the method has no settings.
      config_key: where the block goes, ``config.<config_key>`` ('' = ``name``).
      rules: ``config_rules.Rule``s of the block's keys (dotted from the config root),
        applied by ``adaptive_data.validation.validate_config`` to every config.
      needs_runs: dotted config key -> ``NeededRun``, the run whose workdir it holds
        (e.g. ``{"rho.reference_from": NeededRun("...", fine_tuned=True,
        independent_seed=True)}``): the key must be a non-empty path when
        ``config.method == name`` (a rule added by the registry), sweeps of independent
        runs leave the method out, and the benchmark makes the runs it declares.
      diagnosis: which verdict of the preflight test speaks for the method, one of
        ``DIAGNOSES`` ('' = none: the test measures gradient alignment with the target,
        which the method's scores do not rest on).
    """

    name: str
    build: Callable[[Any, MethodContext], Method]
    summary: str
    scorer: str = "none"
    defaults: Callable[[Any], ml_collections.ConfigDict] | None = None
    config_key: str = ""
    rules: tuple[Rule, ...] = ()
    needs_runs: Mapping[str, NeededRun] = dataclasses.field(default_factory=dict)
    diagnosis: str = ""

    @property
    def block(self) -> str:
        """The config block of the method's settings: ``config_key`` or ``name``."""
        return self.config_key or self.name

    @property
    def selects(self) -> bool:
        """Whether the method scores the big batch and draws b of it."""
        return self.scorer != "none"

    def all_rules(self) -> tuple[Rule, ...]:
        """``rules`` plus one workdir rule per key of ``needs_runs``, and the reserved
        shard's rules when a needed run trains on it."""
        workdirs = tuple(
            Rule(key, *workdir(self.name, need.description))
            for key, need in self.needs_runs.items()
        )
        reserved = any(need.reserved_shard for need in self.needs_runs.values())
        return self.rules + workdirs + (_reserved_shard_rules(self.name) if reserved else ())

    def __call__(self, config, context: MethodContext) -> Method:
        return self.build(config, context)


# The registry: name -> spec, in registration order.
METHODS: dict[str, MethodSpec] = {}


def _check_spec(spec) -> None:
    """Raises TypeError / ValueError saying what is wrong with a spec given to ``register``."""
    if not isinstance(spec, MethodSpec):
        raise TypeError(
            f"register() takes an adaptive_data.methods.MethodSpec, got {type(spec).__name__}."
        )
    problems = []
    if not (isinstance(spec.name, str) and spec.name.isidentifier()):
        problems.append(f"name={spec.name!r} must be a Python identifier (it is config.method)")
    if not callable(spec.build):
        problems.append("build must be callable: build(config, context) -> Method")
    if not (isinstance(spec.summary, str) and spec.summary.strip()):
        problems.append("summary must be a non-empty one-line string")
    if spec.scorer not in SCORERS:
        problems.append(f"scorer={spec.scorer!r} must be one of {SCORERS}")
    if spec.diagnosis not in DIAGNOSES:
        problems.append(f"diagnosis={spec.diagnosis!r} must be one of {DIAGNOSES}")
    if spec.defaults is not None and not callable(spec.defaults):
        problems.append("defaults must be None or callable: defaults(arg) -> ConfigDict")
    key = spec.config_key
    if not (isinstance(key, str) and (not key or key.isidentifier())):
        problems.append(f"config_key={spec.config_key!r} must be '' or a Python identifier")
    if not (isinstance(spec.rules, tuple) and all(isinstance(r, Rule) for r in spec.rules)):
        problems.append("rules must be a tuple of adaptive_data.config_rules.Rule")
    if not (
        isinstance(spec.needs_runs, Mapping)
        and all(
            isinstance(k, str) and "." in k and isinstance(v, NeededRun)
            for k, v in spec.needs_runs.items()
        )
    ):
        problems.append(
            "needs_runs must map dotted config keys (e.g. 'rho.reference_from') to "
            "adaptive_data.methods.NeededRun values"
        )
    if problems:
        raise ValueError(f"Malformed MethodSpec {spec.name!r}: " + "; ".join(problems) + ".")


def register(spec: MethodSpec) -> MethodSpec:
    """Adds ``spec`` to the registry under ``spec.name`` and returns it.

    Call it at the import of your own module and name that module in
    ``config.extra_modules`` (``--config=configs/default.py:method=mine,
    extra_modules=my_project.my_method``): the config imports it before checking
    ``config.method``.

    Raises:
      ValueError: a method of that name is already registered, or the spec is
        malformed (every problem is listed).
      TypeError: ``spec`` is not a ``MethodSpec``.
    """
    _check_spec(spec)
    if spec.name in METHODS:
        raise ValueError(
            f"A method named {spec.name!r} is already registered "
            f"({METHODS[spec.name].summary!r}); pick another name."
        )
    METHODS[spec.name] = spec
    return spec


def unregister(name: str) -> MethodSpec:
    """Removes the method ``name`` from the registry (e.g. a test's own method) and
    returns its spec; KeyError naming the registered methods if there is none."""
    if name not in METHODS:
        raise KeyError(f"No method {name!r} is registered; registered: {sorted(METHODS)}.")
    return METHODS.pop(name)


def names(
    *,
    needs_other_runs: bool | None = None,
    selecting: bool | None = None,
    scorer: str | None = None,
) -> tuple[str, ...]:
    """Registered method names in registration order, filtered when a flag is given.

    Args:
      needs_other_runs: True: only methods with ``needs_runs`` (they start from, or
        score with, other runs' workdirs: finetune, cds, rho); False: only the others,
        which run from scratch on their own. None: both.
      selecting: True: only methods that draw b of the big batch by scores (``scorer``
        not "none"); False: only the others. None: both.
      scorer: only methods whose big batch is scored by this (one of ``SCORERS``, e.g.
        "weighting_model": the methods with an outer update of a weighting model).
    """
    return tuple(
        name
        for name, spec in METHODS.items()
        if (needs_other_runs is None or bool(spec.needs_runs) == needs_other_runs)
        and (selecting is None or spec.selects == selecting)
        and (scorer is None or spec.scorer == scorer)
    )


def rules() -> tuple[Rule, ...]:
    """The rules the registry owns: ``config.method`` is a registered name, and every
    registered method's ``all_rules()``."""
    return (Rule("method", *one_of(sorted(METHODS))),) + tuple(
        rule for spec in METHODS.values() for rule in spec.all_rules()
    )


def config_blocks(arg) -> dict[str, ml_collections.ConfigDict]:
    """``config_key -> defaults(arg)`` of every registered method with settings, for
    ``configs/default.py``."""
    return {spec.block: spec.defaults(arg) for spec in METHODS.values() if spec.defaults}


def import_submodules(package_name: str, package_path: Iterable[str]) -> list[str]:
    """Imports every module of a package (each method module registers its method; one
    already imported is left as it is), in name order; returns their full names.

    ``package_path``: the package's ``__path__``.
    """
    names_ = sorted(info.name for info in pkgutil.iter_modules(package_path))
    for name in names_:
        importlib.import_module(f"{package_name}.{name}")
    return [f"{package_name}.{name}" for name in names_]


def import_extra_modules(module_names: Iterable[str]) -> None:
    """Imports each module of ``config.extra_modules`` (which registers its methods).

    Raises:
      ImportError: a module does not import, with its name and what to check.
    """
    for module_name in module_names:
        try:
            importlib.import_module(module_name)
        except ImportError as err:
            raise ImportError(
                f"config.extra_modules names {module_name!r}, which does not import ({err}); "
                "give a module importable from the current directory or PYTHONPATH "
                "(e.g. PYTHONPATH=/path/to/project)."
            ) from err


def build(config, *, model, tx, domains, target_domain) -> Method:
    """The ``Method`` of ``config.method`` for this LM, optimiser and domain vocabulary.

    The config must have passed ``adaptive_data.validation.validate_config`` (the
    constructors read their settings without checking them again; the training driver
    validates first).

    Raises:
      KeyError: ``config.method`` is not registered (the message lists the methods).
    """
    if config.method not in METHODS:
        raise KeyError(
            f"config.method={config.method!r} is not registered; registered: "
            f"{sorted(METHODS)} (a method of your own: name its module in "
            "config.extra_modules)."
        )
    context = MethodContext(
        model=model,
        tx=tx,
        num_domains=len(domains),
        target_domain_id=domains.index(target_domain) if target_domain in domains else None,
    )
    return METHODS[config.method](config, context)
