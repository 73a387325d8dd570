"""The registry of training methods: one ``MethodSpec`` per method, everything about it.

A method's registry entry is the one place that names it. It declares the method's
name, its constructor ``build(config, context) -> Method``, a one-line summary (the
README's method table), what scores the big batch (``scorer``), its config block with
defaults (``defaults(arg) -> ConfigDict``, placed at ``config.<config_key>`` by
``configs/default.py``), the rules of that block (``rules``, checked by
``adaptive_data.validation``) and the other runs it needs (``needs_runs``: dotted config
key of a workdir -> what that run is). Shared settings stay in ``configs/default.py``:
selection (``config.select``), the weighting model (``config.weighting``) and its
optimiser (``config.outer``), training (``config.train``), ...

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
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from adaptive_data import checkpoint as ckpt
from adaptive_data import train_state as ts
from adaptive_data.config_rules import (
    Rule,
    boolean,
    integer,
    number,
    one_of,
    regex,
    workdir,
)
from adaptive_data.core import alignment, dsir, mixture, reference_scores
from adaptive_data.core.outer.anograd import NORMALIZATIONS, anograd
from adaptive_data.core.outer.base import OuterMethod
from adaptive_data.core.outer.classifier import classifier
from adaptive_data.core.outer.dds import dds
from adaptive_data.core.outer.l2rw import l2rw_weights
from adaptive_data.core.outer.soba import HESSIAN_FREE_CURVATURES, HESSIAN_WEIGHTS, soba
from adaptive_data.methods.types import OUTER_BATCHES, Method, OuterState, ReferenceModels
from adaptive_data.models import transformer, weighting

# What scores the big batch (``MethodSpec.scorer``), from cheapest to dearest per example.
SCORERS = ("none", "domain", "ngram", "weighting_model", "lm_forward", "lm_gradient")
# Optimisers of ``config.outer.optimizer`` and ``config.soba.v_optimizer``.
OPTIMIZERS = ("adam", "sgd")
# Generic batches of DDS's look-ahead (``config.dds.lookahead_batch``).
DDS_LOOKAHEAD_BATCHES = ("uniform", "selected")


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
        data order) than the run that reads it, so its model never trained on the
        generic examples that run scores in the same order (RHO-LOSS's irreducible-loss
        model); False: the same seed (CDS's published protocol).
    """

    description: str
    fine_tuned: bool = False
    independent_seed: bool = False


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
    """

    name: str
    build: Callable[[Any, MethodContext], Method]
    summary: str
    scorer: str = "none"
    defaults: Callable[[Any], ml_collections.ConfigDict] | None = None
    config_key: str = ""
    rules: tuple[Rule, ...] = ()
    needs_runs: Mapping[str, NeededRun] = dataclasses.field(default_factory=dict)

    @property
    def block(self) -> str:
        """The config block of the method's settings: ``config_key`` or ``name``."""
        return self.config_key or self.name

    @property
    def selects(self) -> bool:
        """Whether the method scores the big batch and draws b of it."""
        return self.scorer != "none"

    def all_rules(self) -> tuple[Rule, ...]:
        """``rules`` plus one workdir rule per key of ``needs_runs``."""
        return self.rules + tuple(
            Rule(key, *workdir(self.name, need.description))
            for key, need in self.needs_runs.items()
        )

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


# ------------------------------------------------------------------------- helpers


def _optimizer(name: str, learning_rate) -> optax.GradientTransformation:
    """The optimiser ``name`` (one of ``OPTIMIZERS``: adam | sgd) at ``learning_rate``."""
    return optax.adam(learning_rate) if name == "adam" else optax.sgd(learning_rate)


def _common(config, context: MethodContext, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "batch_size": int(config.train.batch_size),
        "loss_fn": transformer.make_loss_fn(context.model, deterministic=False),
        "tx": context.tx,
        "learning_rate": ts.learning_rate_schedule(config.train),
        "num_domains": context.num_domains,
        "target_domain_id": context.target_domain_id,
        "keep_best": bool(config.checkpoint.keep_best),
    }


def _supervised(
    config, context: MethodContext, name: str, streams, loss_weights, **fields
) -> Method:
    common = _common(config, context, name)
    common["keep_best"] |= fields.pop("keep_best", False)
    return Method(streams=streams, loss_weights=loss_weights, **common, **fields)


def selecting_method(
    config,
    context: MethodContext,
    name: str,
    *,
    score,
    strategy: str,
    outer: OuterMethod | None = None,
    outer_batch: str = "uniform",
    init_state=None,
) -> Method:
    """A method that draws b of a big batch of k * b by ``score``.

    ``strategy`` is the method's default way of drawing (``config.select.strategy``
    overrides it).
    """
    k = int(config.select.downsampling)
    if config.select.strategy:
        strategy = config.select.strategy
    b = int(config.train.batch_size)
    fields = {} if init_state is None else {"init_state": init_state}
    return Method(
        streams={
            "generic": ("generic_train", k * b),
            "target": ("target_train", int(config.train.target_batch_size)),
        },
        loss_weights={"generic": 1.0},
        score=score,
        strategy=strategy,
        temperature=float(config.select.temperature),
        outer=outer,
        outer_batch=outer_batch,
        selection_warmup_steps=int(config.select.warmup_steps),
        outer_every=int(config.outer.every),
        **fields,
        **_common(config, context, name),
    )


def weighting_method(
    make_outer: Callable[..., OuterMethod],
    outer_batch: Callable[[Any], str] = lambda config: "uniform",
    *,
    weight_mode: str = "positive",
    strategy: str = "sample",
):
    """Constructor of a method whose b examples are drawn by a weighting model's logits.

    The byte-CNN ``w(x; phi)`` (``config.weighting``) scores the big batch; b examples
    are drawn by ``strategy`` (default: p = softmax(logits / temperature) without
    replacement); phi takes the outer update ``make_outer(config, loss_fn, weight_fn,
    phi_tx)`` (an ``OuterMethod``) on the generic batch ``outer_batch(config)``, with
    ``weight_fn(phi, batch)`` the model's output of ``weight_mode`` (positive weights,
    or raw logits) and the optimiser of ``config.outer``.
    """

    def build(config, context: MethodContext) -> Method:
        wmodel = weighting.from_config(config.weighting, context.model.tokenizer)

        def weight_fn(phi, batch):
            return weighting.weighting_forward(wmodel, phi, batch["inputs"], mode=weight_mode)

        phi_tx = _optimizer(config.outer.optimizer, float(config.outer.learning_rate))
        outer = make_outer(config, transformer.make_loss_fn(context.model), weight_fn, phi_tx)

        def init_state(key, params) -> OuterState:
            dummy = jnp.zeros((1, config.model.max_length), jnp.int32)
            phi = weighting.init_weighting_params(key, wmodel, dummy)
            return OuterState(phi, outer.init(phi, params))

        def score(params, method_state: OuterState, big, target, key):
            del params, target, key
            return weighting.weighting_forward(
                wmodel, method_state.phi, big["inputs"], mode="logits"
            )

        return selecting_method(
            config,
            context,
            config.method,
            score=score,
            strategy=strategy,
            outer=outer,
            outer_batch=outer_batch(config),
            init_state=init_state,
        )

    return build


# ------------------------------------------------------------------------- methods


def _base(config, context):
    return _supervised(
        config,
        context,
        "base",
        {"generic": ("generic_train", int(config.train.batch_size))},
        {"generic": 1.0},
    )


def _mixing(config, context):
    gw = float(config.mixing.generic_weight)
    return _supervised(
        config,
        context,
        "mixing",
        {
            "generic": ("generic_train", int(config.train.batch_size)),
            "target": ("target_train", int(config.train.target_batch_size)),
        },
        {"generic": gw, "target": 1.0 - gw},
    )


def _finetune(config, context):
    return _supervised(
        config,
        context,
        "finetune",
        {"target": ("target_train", int(config.train.batch_size))},
        {"target": 1.0},
        init_from=str(config.finetune.init_from),
        keep_best=True,
    )


def _align_filter(config, context):
    loss_fn = transformer.make_loss_fn(context.model)
    f = config.align_filter
    method = f.method

    def score(params, method_state, big, target, key):
        del method_state, key
        target_grad = alignment.mean_gradient(loss_fn, params, target)
        return alignment.per_example_alignment(
            loss_fn,
            params,
            big,
            target_grad,
            method=method,
            chunk_size=f.chunk_size,
            param_filter=f.param_filter or None,
            normalize=f.normalize,
        )

    return selecting_method(config, context, "align_filter", score=score, strategy="top")


def _l2rw(config, context):
    loss_fn = transformer.make_loss_fn(context.model)

    def score(params, method_state, big, target, key):
        del method_state, key
        # eta only scales u_i = eta <grad l_i, g_s> and cancels in the normalisation.
        return l2rw_weights(loss_fn, params, big, target, eta=1.0)

    return selecting_method(config, context, "l2rw", score=score, strategy="positive_weighted")


def _anograd_outer(config, loss_fn, weight_fn, phi_tx):
    a = config.anograd
    return anograd(
        loss_fn,
        weight_fn,
        phi_tx,
        normalization=a.normalization,
        param_filter=a.param_filter or None,
    )


def _soba_outer(config, loss_fn, weight_fn, phi_tx):
    s = config.soba
    v_learning_rate = (
        ts.learning_rate_schedule(config.train)
        if s.v_learning_rate is None
        else float(s.v_learning_rate)
    )
    if s.v_optimizer == "adam":
        v_tx = optax.adam(v_learning_rate, b1=0.9, b2=0.98, eps=1e-9)
    else:
        v_tx = optax.sgd(v_learning_rate)
    return soba(
        loss_fn,
        weight_fn,
        phi_tx,
        v_tx,
        hessian_free=bool(s.hessian_free),
        hessian_free_curvature=s.hessian_free_curvature,
        hessian_reg=float(s.hessian_reg),
        hessian_weights=s.hessian_weights,
    )


def _dds_outer(config, loss_fn, weight_fn, phi_tx):
    return dds(loss_fn, weight_fn, phi_tx, eta=float(config.dds.eta))


def _domain_mixture(config, context):
    m = config.mixture
    loss_fn = transformer.make_loss_fn(context.model)
    update = m.update_rule
    phi_tx = (
        _optimizer(config.outer.optimizer, float(m.step_size))
        if update == "hypergradient"
        else None
    )
    outer = mixture.mixture(
        loss_fn,
        context.num_domains,
        update=update,
        step_size=float(m.step_size),
        smoothing=float(m.smoothing),
        phi_tx=phi_tx,
        objective=m.objective,
        eta=float(config.dds.eta),
        normalization=config.anograd.normalization,
    )
    num_domains = context.num_domains

    def init_state(key, params) -> OuterState:
        del key
        phi = jnp.zeros((num_domains,), jnp.float32)
        return OuterState(phi, outer.init(phi, params))

    def score(params, method_state: OuterState, big, target, key):
        del params, target, key
        counts_K = mixture.domain_counts(big["domain"], num_domains)
        share_K = jnp.maximum(counts_K, 1.0) / big["domain"].shape[0]
        return mixture.mixture_resampling_logits(method_state.outer.alpha_K, share_K, big["domain"])

    def realised_shares(big, indices_b, method_state: OuterState):
        # Resampling b of B without replacement gives domain k at most n_k(B) of b.
        del method_state
        b = indices_b.shape[0]
        return {
            "mixture/realised_share": mixture.domain_counts(big["domain"][indices_b], num_domains)
            / b,
            "mixture/share_cap": jnp.minimum(
                mixture.domain_counts(big["domain"], num_domains) / b, 1.0
            ),
        }

    method = selecting_method(
        config,
        context,
        "domain_mixture",
        score=score,
        strategy="sample",
        outer=outer,
        outer_batch="big",
        init_state=init_state,
    )
    return dataclasses.replace(method, selected_metrics=realised_shares)


def _classifier_outer(config, loss_fn, weight_fn, phi_tx):
    del config, loss_fn  # a classifier of the inputs alone: no LM involved
    return classifier(weight_fn, phi_tx)


def _dsir(config, context):
    d = config.dsir
    num_buckets, smoothing = int(d.num_buckets), float(d.smoothing)
    pad_id = context.model.tokenizer.pad_id
    outer = dsir.dsir(num_buckets, smoothing=smoothing, pad_id=pad_id)

    def init_state(key, params) -> OuterState:
        del key
        counts = dsir.zero_counts(num_buckets)
        return OuterState(counts, outer.init(counts, params))

    def load_state(method_state: OuterState, target_train) -> OuterState:
        # p_t: every target_train example counted once, before training.
        target_M = dsir.count_ngrams(target_train(), num_buckets, pad_id=pad_id)
        return method_state._replace(phi=method_state.phi._replace(target_M=target_M))

    def score(params, method_state: OuterState, big, target, key):
        del params, target, key
        return dsir.dsir_log_weights(
            method_state.phi, big["inputs"], smoothing=smoothing, pad_id=pad_id
        )

    method = selecting_method(
        config,
        context,
        "dsir",
        score=score,
        strategy="sample",
        outer=outer,
        outer_batch="big",
        init_state=init_state,
    )
    return dataclasses.replace(method, load_state=load_state)


def _reference_method(config, context, name: str, *, score_fn, workdirs: dict[str, str]):
    """A method scoring B with fixed LMs loaded from other runs (``ReferenceModels``).

    ``workdirs``: field of ``ReferenceModels`` -> dotted config key of its workdir;
    ``score_fn(loss_fn, params, references, big) -> float[B]``; top b are kept.
    """
    paths = {
        field: str(config[key.split(".")[0]][key.split(".")[1]]) for field, key in workdirs.items()
    }
    loss_fn = transformer.make_loss_fn(context.model)

    def init_state(key, params) -> ReferenceModels:
        del key
        return ReferenceModels(**{f: jax.tree.map(jnp.zeros_like, params) for f in paths})

    def load_state(references: ReferenceModels, target_train) -> ReferenceModels:
        del target_train
        return references._replace(
            **{
                f: ckpt.restore_pretrained_params(path, getattr(references, f), prefer_best=True)
                for f, path in paths.items()
            }
        )

    def score(params, references: ReferenceModels, big, target, key):
        del target, key
        return score_fn(loss_fn, params, references, big)

    method = selecting_method(
        config, context, name, score=score, strategy="top", init_state=init_state
    )
    return dataclasses.replace(method, load_state=load_state)


def _rho(config, context):
    def score_fn(loss_fn, params, references, big):
        return reference_scores.reducible_loss(loss_fn, params, references.target, big)

    return _reference_method(
        config, context, "rho", score_fn=score_fn, workdirs={"target": "rho.reference_from"}
    )


def _cds(config, context):
    def score_fn(loss_fn, params, references, big):
        del params
        return reference_scores.contrastive_score(
            loss_fn, references.generic, references.target, big
        )

    return _reference_method(
        config,
        context,
        "cds",
        score_fn=score_fn,
        workdirs={"generic": "cds.generic_from", "target": "cds.target_from"},
    )


# ------------------------------------------------------------------------- config blocks


def _block(**values) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(values)


def _mixing_defaults(arg):
    del arg
    # gw in gw * L_generic + (1 - gw) * L_target.
    return _block(generic_weight=0.9)


def _finetune_defaults(arg):
    # Workdir (or checkpoint directory) of a pretrained run to start from.
    return _block(init_from=arg.init_from)


def _align_filter_defaults(arg):
    del arg
    block = ml_collections.ConfigDict()
    # Alignment computation: jvp | vmap | weights.
    block.method = "jvp"
    # Examples per chunk of per-example work (None: all at once).
    block.chunk_size = ml_collections.config_dict.placeholder(int)
    # Regex on /-joined parameter paths restricting the alignment ("" = all).
    block.param_filter = ""
    # Cosine instead of dot product (needs align_filter.method=vmap).
    block.normalize = False
    return block


def _anograd_defaults(arg):
    del arg
    # Normaliser of <g_w, g_s>: norm (||g_w||) | hessian (sqrt(g_w^T H_s g_w), falling
    # back to the norm on a step where that curvature is <= 0); also the ANOGRAD
    # objective of mixture.update_rule=hypergradient.
    # param_filter: regex on /-joined LM parameter paths restricting g_w and g_s
    # ("" = all parameters).
    return _block(normalization="norm", param_filter="")


def _soba_defaults(arg):
    del arg
    block = ml_collections.ConfigDict()
    # Generic batch of the outer update: selected (the b the model trains on, the
    # authors' choice) | uniform (a uniform b of B).
    block.outer_batch = "selected"
    # Weights of the Hessian H_g in H_g v: uniform (mean loss) | weighted (by w).
    block.hessian_weights = "uniform"
    # Optimiser of v: adam (b1 0.9, b2 0.98, eps 1e-9) | sgd.
    block.v_optimizer = "adam"
    # Learning rate of v (None: the model's learning-rate schedule).
    block.v_learning_rate = ml_collections.config_dict.placeholder(float)
    # Hessian-free variant; its curvature term: zero (d_v = g_s) | identity (v + g_s).
    block.hessian_free = False
    block.hessian_free_curvature = "zero"
    # r in d_v = (1 - r) H_g v + r v + g_s.
    block.hessian_reg = 0.0
    return block


def _dds_defaults(arg):
    del arg
    # eta: virtual SGD step of the look-ahead (0: the eta -> 0 limit); also the DDS
    # objective of mixture.update_rule=hypergradient.
    # lookahead_batch: generic batch of the look-ahead: uniform (a uniform b of B,
    # weights normalised over it; the authors' choice) | selected (the b drawn by the
    # weights).
    return _block(eta=0.1, lookahead_batch="uniform")


def _mixture_defaults(arg):
    del arg
    block = ml_collections.ConfigDict()
    # domain_mixture: eg (exponentiated gradient) | hypergradient.
    block.update_rule = "eg"
    # EG step size (or learning rate of the logits for hypergradient).
    block.step_size = 1.0
    # Floor: alpha = (1 - s) alpha + s / K.
    block.smoothing = 0.05
    # Objective of the hypergradient variant: anograd (anograd.normalization) | dds
    # (dds.eta).
    block.objective = "anograd"
    return block


def _dsir_defaults(arg):
    del arg
    # Hash buckets of the unigram + bigram features, and the additive smoothing of the
    # target and generic feature distributions.
    return _block(num_buckets=4096, smoothing=1.0)


def _cds_defaults(arg):
    del arg
    # Workdirs of the two fixed scoring LMs (same model config): a base run, and that
    # model fine-tuned on target_train (its best checkpoint by target_valid is used).
    return _block(generic_from="", target_from="")


def _rho_defaults(arg):
    del arg
    # Workdir of the reference LM trained on target_train (best checkpoint if kept).
    return _block(reference_from="")


# A run trained on target_train, the reference models of cds and rho.
_TARGET_RUN = (
    "a run trained on target_train (e.g. method=finetune from a base run; "
    "experiments/benchmark.py makes it)"
)

# ------------------------------------------------------------------------- the registry

register(MethodSpec("base", _base, "generic data only"))
register(
    MethodSpec(
        "mixing",
        _mixing,
        "gradients of gw L_generic + (1 - gw) L_target",
        defaults=_mixing_defaults,
        rules=(Rule("mixing.generic_weight", *number(0, 1)),),
    )
)
register(
    MethodSpec(
        "finetune",
        _finetune,
        "target_train only, from a pretrained workdir, best checkpoint by target_valid",
        defaults=_finetune_defaults,
        needs_runs={
            "finetune.init_from": NeededRun("a pretrained run (e.g. a base run) to start from")
        },
    )
)
register(
    MethodSpec(
        "align_filter",
        _align_filter,
        "top b of B by exact alignment <grad l_i, g_s> (the oracle filter)",
        scorer="lm_gradient",
        defaults=_align_filter_defaults,
        rules=(
            Rule("align_filter.method", *one_of(alignment.METHODS)),
            Rule(
                "align_filter.chunk_size", *integer(1, optional=True, note=" (None: all at once)")
            ),
            Rule("align_filter.param_filter", *regex(" ('' = all parameters)")),
            Rule("align_filter.normalize", *boolean()),
            Rule(
                "align_filter.normalize",
                lambda v, config: not v or config.align_filter.method == "vmap",
                "False unless config.align_filter.method='vmap' (the cosine needs "
                "per-example gradient norms, which only vmap computes)",
                reads=("align_filter.method",),
            ),
        ),
    )
)
register(
    MethodSpec(
        "anograd",
        weighting_method(_anograd_outer),
        "b sampled by a weighting CNN; phi maximises <g_w, g_s> / ||g_w||",
        scorer="weighting_model",
        defaults=_anograd_defaults,
        rules=(
            Rule("anograd.normalization", *one_of(NORMALIZATIONS)),
            Rule("anograd.param_filter", *regex(" ('' = all parameters)")),
        ),
    )
)
register(
    MethodSpec(
        "soba",
        weighting_method(_soba_outer, lambda c: c.soba.outer_batch),
        "b sampled by a weighting CNN; phi follows the SOBA hypergradient, v ~ -H^-1 grad L_s",
        scorer="weighting_model",
        defaults=_soba_defaults,
        rules=(
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
        ),
    )
)
register(
    MethodSpec(
        "dds",
        weighting_method(_dds_outer, lambda c: c.dds.lookahead_batch),
        "b sampled by a weighting CNN; phi descends L_s after a virtual step "
        "theta - eta sum_i wbar_i grad l_i",
        scorer="weighting_model",
        defaults=_dds_defaults,
        rules=(
            Rule("dds.eta", *number(0, note=" (0: the eta -> 0 limit)")),
            Rule("dds.lookahead_batch", *one_of(DDS_LOOKAHEAD_BATCHES)),
        ),
    )
)
register(
    MethodSpec(
        "l2rw",
        _l2rw,
        "learning to reweight: b largest max(0, <grad l_i, g_s>), trained with "
        "those weights renormalised",
        scorer="lm_gradient",
    )
)
register(
    MethodSpec(
        "domain_mixture",
        _domain_mixture,
        "domain mixture alpha (EG on domain alignment, or a hypergradient); b resampled "
        "from B to follow alpha, so a domain gets at most its count in B",
        scorer="domain",
        defaults=_mixture_defaults,
        config_key="mixture",
        rules=(
            Rule("mixture.update_rule", *one_of(mixture.UPDATES)),
            Rule("mixture.step_size", *number(0, lo_open=True)),
            Rule("mixture.smoothing", *number(0, 1, hi_open=True)),
            Rule("mixture.objective", *one_of(mixture.OBJECTIVES)),
        ),
    )
)
register(
    MethodSpec(
        "classifier",
        weighting_method(
            _classifier_outer, lambda config: "big", weight_mode="logits", strategy="top"
        ),
        "top b of B by the logit of a target-vs-generic classifier (the weighting CNN) "
        "trained online",
        scorer="weighting_model",
    )
)
register(
    MethodSpec(
        "cds",
        _cds,
        "contrastive data selection: b of B with the lowest l_finetuned - l_generic "
        "(two fixed LMs from a base run and its fine-tuned copy)",
        scorer="lm_forward",
        defaults=_cds_defaults,
        needs_runs={
            "cds.generic_from": NeededRun(
                "a base run (generic data; experiments/benchmark.py makes it)"
            ),
            "cds.target_from": NeededRun(_TARGET_RUN, fine_tuned=True),
        },
    )
)
register(
    MethodSpec(
        "dsir",
        _dsir,
        "importance resampling on hashed uni+bigram features: b of B drawn by "
        "p_target(x) / p_generic(x), target_train counted once up front, generic online",
        scorer="ngram",
        defaults=_dsir_defaults,
        rules=(
            Rule("dsir.num_buckets", *integer(1)),
            Rule("dsir.smoothing", *number(0, lo_open=True)),
        ),
    )
)
register(
    MethodSpec(
        "rho",
        _rho,
        "RHO-LOSS: top b of B by reducible loss l(x; theta) - l(x; theta_ref), "
        "theta_ref trained on target_train",
        scorer="lm_forward",
        defaults=_rho_defaults,
        # The irreducible-loss model never trains on the scored run's generic stream.
        needs_runs={
            "rho.reference_from": NeededRun(
                _TARGET_RUN + "; from a base run of another seed than the rho run",
                fine_tuned=True,
                independent_seed=True,
            )
        },
    )
)


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
