"""The ``Method`` record (one immutable value per training method) and its typed state.

A method is data, not code paths: ``methods.step.train_step`` runs any ``Method``. What
differs between methods is in the record's fields (see docs/algorithms.md, "Which batch
each term uses"):

- which input streams it reads (``streams``) and how the model's loss weighs them
  (``loss_weights``);
- whether and how it scores the big generic batch (``score``), and how b examples are
  drawn from the scores (``strategy``, ``temperature``);
- its outer update, if any (``outer``: an ``OuterMethod`` of ``core.outer``), and which
  generic batch that update sees (``outer_batch``);
- how its extra state is initialised (``init_state``) and its schedule (selection
  warm-up, outer update every ``outer_every`` steps);
- where its parameters start (``init_from``: a pretrained workdir, for fine-tuning) and
  whether the best parameters by target_valid are kept (``keep_best``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import optax

from adaptive_data.core.outer.base import OuterMethod

PyTree = Any

# Generic batch of the outer update: the first b of the (shuffled) big batch, i.e. a
# uniform sub-sample; the b drawn by the scores (the model's batch); or all of B.
OUTER_BATCHES = ("uniform", "selected", "big")


class ReferenceModels(NamedTuple):
    """Fixed LM parameters a method scores with (RHO-LOSS, CDS), loaded on a fresh start.

    Attributes:
      target: parameters of a model trained on target_train.
      generic: parameters of a model trained on generic data (CDS), or None.
    """

    target: PyTree
    generic: PyTree = None


class OuterState(NamedTuple):
    """State of a method with an outer update.

    Attributes:
      phi: the outer variable (weighting-model parameters, or mixture logits float[K]).
      outer: the outer method's own state (e.g. ``core.outer.PhiState``,
        ``core.outer.SobaState``, ``core.mixture.MixtureState``).
    """

    phi: PyTree
    outer: Any


def no_state(key, params) -> None:
    """``init_state`` of methods without extra state."""
    del key, params


@dataclasses.dataclass(frozen=True)
class Method:
    """Everything ``train_step`` needs to know about one training method.

    Attributes:
      name: the registered name (``config.method``).
      streams: stream name -> (corpus split, global batch size). ``generic`` is the
        generic stream (B = k * b examples for selecting methods), ``target`` a
        ``target_train`` stream.
      batch_size: b, the number of generic examples the model trains on per step.
      loss_weights: stream -> weight of that stream's mean loss in the model's loss
        (for selecting methods ``{"generic": 1.0}``, applied to the selected b).
      loss_fn: ``(params, batch, dropout_key) -> float[n]`` per-example training loss.
      tx: the model's optimiser.
      learning_rate: the model's learning-rate schedule (reported as ``train/lr``).
      score: ``(params, method_state, big, target, key) -> float[B]`` scores of the big
        batch, or None for methods that do not select.
      strategy: how b of B are drawn from the scores (``core.selection.STRATEGIES``).
      temperature: sampling temperature of the sampling strategies.
      outer: the outer update (``core.outer.base.OuterMethod``) or None.
      outer_batch: generic batch of the outer update, one of ``OUTER_BATCHES``.
      init_state: ``(key, params) -> method_state`` (``OuterState`` when ``outer``);
        pure, so ``jax.eval_shape`` gives the state's layout.
      load_state: ``(method_state, target_train) -> method_state`` run on the host
        once, on a fresh start (not on resume: the checkpoint has it), to fill the state
        from files or data: reference models from other runs' workdirs (rho, cds), the
        n-gram counts of target_train (dsir). ``target_train()`` returns an iterable of
        host batches (dicts with int[n, L] ``inputs``) covering every target_train
        example once (padding rows are all-pad). None: nothing to load.
      document_scorer: ``(splits) -> score_document`` run on the host once per run
        start, before the input streams are built: given the corpus splits (split ->
        random-access source of records ``{"text", "domain", "doc_id"}``), it returns
        ``score_document(record) -> float``, which the pipeline puts in every example
        as float32 ``document_score`` (for a score of the whole document text, which
        the truncated ``inputs`` do not hold: dsir's word features). None: no such
        field.
      selected_metrics: ``(big, indices_b, method_state) -> metrics`` of the method's
        own about the selected b (e.g. domain_mixture's realised domain shares),
        logged on active steps; None: none.
      selection_warmup_steps: before this step, b uniform examples and no outer update.
      outer_every: the outer update runs on every ``outer_every``-th step after warm-up.
      outer_stop_after: no outer update from this step on (phi frozen: scoring only);
        0: never stop.
      outer_batch_fraction: the outer update sees a random ``ceil(fraction * n)`` of
        the n examples of its generic batch and of its target batch (1.0: all).
      init_from: workdir whose parameters a fresh run starts from ('' = random init).
      keep_best: keep the parameters with the best ``eval/target_valid_bpb``.
      num_domains: K, for the per-domain share of the selected examples.
      target_domain_id: the target's domain id in the generic pool, or None.
    """

    name: str
    streams: Mapping[str, tuple[str, int]]
    batch_size: int
    loss_weights: Mapping[str, float]
    loss_fn: Callable[..., Any]
    tx: optax.GradientTransformation
    learning_rate: optax.Schedule
    score: Callable[..., Any] | None = None
    strategy: str = "top"
    temperature: float = 1.0
    outer: OuterMethod | None = None
    outer_batch: str = "uniform"
    init_state: Callable[[Any, PyTree], Any] = no_state
    load_state: Callable[[Any, Callable[[], Any]], Any] | None = None
    document_scorer: Callable[[Mapping[str, Any]], Callable[[Any], float]] | None = None
    selected_metrics: Callable[..., dict[str, Any]] | None = None
    selection_warmup_steps: int = 0
    outer_every: int = 1
    outer_stop_after: int = 0
    outer_batch_fraction: float = 1.0
    init_from: str = ""
    keep_best: bool = False
    num_domains: int = 1
    target_domain_id: int | None = None

    def __post_init__(self):
        if not 0.0 < self.outer_batch_fraction <= 1.0:
            raise ValueError(
                f"{self.name}: outer_batch_fraction={self.outer_batch_fraction} must be in (0, 1]."
            )
        if self.outer_batch not in OUTER_BATCHES:
            raise ValueError(
                f"{self.name}: outer_batch={self.outer_batch!r} must be one of {OUTER_BATCHES}."
            )
        unknown = set(self.loss_weights) - set(self.streams)
        if unknown:
            raise ValueError(
                f"{self.name}: loss weights of streams {sorted(unknown)} that "
                f"it does not read ({sorted(self.streams)})."
            )

    @property
    def selects(self) -> bool:
        """Whether the method draws b of a big batch by scores."""
        return self.score is not None

    def flags(self, step: int) -> dict[str, bool]:
        """Static flags of model update ``step`` (0-based): ``active`` (scores select the
        batch) after the selection warm-up, ``outer_update`` every ``outer_every`` steps
        after it and before ``outer_stop_after`` (when set). A host-side schedule, so no
        compiled step pays for a conditional: a step without the outer update does not
        compute it."""
        active = self.selects and step >= self.selection_warmup_steps
        outer_update = (
            self.outer is not None
            and step >= self.selection_warmup_steps
            and step % self.outer_every == 0
            and (self.outer_stop_after == 0 or step < self.outer_stop_after)
        )
        return {"active": active, "outer_update": outer_update}
