"""Online domain mixture weights alpha_K (docs/algorithms.md, "domain_mixture").

Generic examples carry a domain label d(x) in 0..K-1 (`batch["domain"]`, int[B]).
The outer variable is a mixture alpha_K, parameterised by logits phi_K with

    alpha = (1 - s) softmax(phi) + s / K        (s = smoothing, a floor s / K)

and generic batches are drawn from it. Two updates:

- "eg", exponentiated-gradient ascent on domain alignment (DoGE-like):
  a_k = <grad L_k(theta), g_s>, alpha_k <- alpha_k exp(step_size a_k),
  renormalise, then mix with the uniform distribution.
- "hypergradient": a bilevel method (ANOGRAD, DDS or SOBA from core/outer) with the
  weighting model w(x; phi) = alpha_{d(x)} / n_{d(x)} (n_k = count of domain k in
  the batch), so that sum_i w_i grad l_i = sum_k alpha_k grad L_k with L_k the
  batch's mean loss over domain k: the mixture gradient, whatever the batch's
  domain frequencies are. The method's own options are the caller's: ANOGRAD's
  `normalization` and DDS's virtual step `eta` are passed through unchanged.

Alignments a_k use linearity: one jvp of the loss vector along g_s gives the
per-example alignments a_i, and a_k is their segment mean; no per-domain
backward passes.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_data.core import derivatives
from adaptive_data.core.outer import base
from adaptive_data.core.outer.anograd import anograd
from adaptive_data.core.outer.dds import dds

PyTree = Any

UPDATES = ("eg", "hypergradient")
OBJECTIVES = ("anograd", "dds")


class MixtureState(NamedTuple):
    """State of the domain mixture method (`mixture`, `mixture_hypergradient`).

    Attributes:
      alpha_K: float[K] current mixture on the simplex (smoothing floor applied);
        the driver draws generic batches from it.
      inner_state: state of the hypergradient method (`PhiState`), or `()` for
        exponentiated gradient.
      count: int32[] number of updates done.
    """

    alpha_K: jax.Array
    inner_state: Any
    count: jax.Array


def domain_counts(domain_B: jax.Array, num_domains: int, dtype: Any = jnp.float32) -> jax.Array:
    """float[K] number of examples of each domain in the batch."""
    return jax.ops.segment_sum(jnp.ones(domain_B.shape, dtype), domain_B, num_domains)


def domain_alignment(
    loss_fn: derivatives.LossFn,
    theta: PyTree,
    batch: PyTree,
    domain_B: jax.Array,
    num_domains: int,
    target_grad: PyTree,
) -> tuple[jax.Array, jax.Array]:
    """Per-domain alignments a_k = <grad L_k(theta), g_s> and domain counts.

    Args:
      loss_fn: (theta, batch) -> float[B] per-example losses.
      theta: model parameters.
      batch: B generic examples.
      domain_B: int[B] domain labels in 0..K-1.
      num_domains: K (static).
      target_grad: g_s, a pytree shaped like theta.

    Returns:
      `(alignment_K, count_K)`: alignment_k is the mean of <grad l_i, g_s> over the
      batch's examples of domain k (= <grad L_k, g_s> by linearity), 0 for domains
      absent from the batch; count_K (float) their numbers of examples.
    """
    _, a_B = derivatives.loss_jvp(loss_fn, theta, batch, target_grad)
    count_K = domain_counts(domain_B, num_domains, a_B.dtype)
    sum_K = jax.ops.segment_sum(a_B, domain_B, num_domains)
    return sum_K / jnp.maximum(count_K, 1.0), count_K


def smooth(alpha_K: jax.Array, smoothing: float) -> jax.Array:
    """(1 - s) alpha + s / K: stays on the simplex, every entry >= s / K."""
    return (1.0 - smoothing) * alpha_K + smoothing / alpha_K.shape[0]


def mixture_alpha(logits_K: jax.Array, *, smoothing: float = 0.0) -> jax.Array:
    """alpha = (1 - s) softmax(logits) + s / K."""
    return smooth(jax.nn.softmax(logits_K), smoothing)


def exponentiated_gradient_update(
    alpha_K: jax.Array,
    alignment_K: jax.Array,
    present_K: jax.Array,
    *,
    step_size: float,
    smoothing: float,
) -> jax.Array:
    """One exponentiated-gradient ascent step on the simplex, with a floor.

    alpha_k <- alpha_k exp(step_size a_k) / Z, then (1 - s) alpha + s / K.
    Domains absent from the batch (present_k false) get a_k = 0: their weight only
    changes through the renormalisation Z and the smoothing.

    Args:
      alpha_K: float[K] current mixture (on the simplex).
      alignment_K: float[K] a_k = <grad L_k, g_s>.
      present_K: bool[K] (or counts) whether domain k occurs in the batch.
      step_size: EG step size (`mixture.step_size` in docs/algorithms.md).
      smoothing: s in [0, 1], mixing weight of the uniform distribution.

    Returns:
      float[K] new mixture on the simplex, every entry >= smoothing / K.
    """
    logits_K = _exponentiated_gradient_logits(alpha_K, alignment_K, present_K, step_size)
    return mixture_alpha(logits_K, smoothing=smoothing)


def _exponentiated_gradient_logits(
    alpha_K: jax.Array, alignment_K: jax.Array, present_K: jax.Array, step_size: float
) -> jax.Array:
    """log of alpha_k exp(step_size a_k) / Z, the EG step before smoothing."""
    a_K = jnp.where(present_K > 0, alignment_K, 0.0)
    log_alpha_K = jnp.log(alpha_K)  # log 0 = -inf: a zero weight stays zero
    return jax.nn.log_softmax(log_alpha_K + step_size * a_K)


def mixture_resampling_logits(
    alpha_K: jax.Array, pool_share_K: jax.Array, domain_B: jax.Array
) -> jax.Array:
    """log(alpha_{d_i} / p_{d_i}) per example: importance-resampling logits.

    Drawing examples of a pool batch (domain frequencies p_K) with probability
    proportional to exp(logit_i) draws them from the mixture alpha.

    Args:
      alpha_K: float[K] target mixture.
      pool_share_K: float[K] domain frequencies p_k > 0 in the pool.
      domain_B: int[B] domain labels of the pool batch.

    Returns:
      float[B] logits (-inf where alpha_{d_i} = 0).
    """
    return jnp.log(alpha_K)[domain_B] - jnp.log(pool_share_K)[domain_B]


def mixture_weight_fn(
    num_domains: int, *, smoothing: float = 0.0, domain_key: str = "domain"
) -> derivatives.WeightFn:
    """Weighting model of a mixture: w(x; logits) = alpha_{d(x)} / n_{d(x)}.

    Args:
      num_domains: K.
      smoothing: floor of alpha (see `mixture_alpha`).
      domain_key: key of the int[B] domain labels in the batch dict.

    Returns:
      `weight_fn(logits_K, batch) -> float[B]`, with n_k the count of domain k in
      the batch, so sum_i w_i l_i = sum_k alpha_k L_k (present domains only).
    """

    def weight_fn(logits_K: jax.Array, batch: PyTree) -> jax.Array:
        domain_B = batch[domain_key]
        alpha_K = mixture_alpha(logits_K, smoothing=smoothing)
        count_K = domain_counts(domain_B, num_domains, alpha_K.dtype)
        return alpha_K[domain_B] / count_K[domain_B]

    return weight_fn


def _alpha_metrics(alpha_K: jax.Array) -> base.Metrics:
    safe_K = jnp.where(alpha_K > 0, alpha_K, 1.0)
    metrics = {"mixture/alpha_entropy": -jnp.sum(alpha_K * jnp.log(safe_K))}
    for k in range(alpha_K.shape[0]):
        metrics[f"mixture/alpha/{k}"] = alpha_K[k]
    return metrics


def mixture_hypergradient(
    num_domains: int,
    make_method: Callable[[derivatives.WeightFn], base.OuterMethod],
    *,
    smoothing: float = 0.0,
    domain_key: str = "domain",
) -> base.OuterMethod:
    """Mixture updated by a bilevel method with w(x) = alpha_{d(x)} / n_{d(x)}.

    Args:
      num_domains: K.
      make_method: builds the bilevel method from the mixture's weight_fn, e.g.
        `lambda wf: anograd(loss_fn, wf, optax.adam(1e-2))` (or dds, soba).
      smoothing: floor s of alpha = (1 - s) softmax(phi) + s / K (also inside w).
      domain_key: key of the domain labels in the batch dict.

    Returns:
      An `OuterMethod` over phi = logits_K (float[K]) with state
      `MixtureState(alpha_K, inner_state, count)`; metrics are the inner method's
      plus `mixture/alpha/<k>` and `mixture/alpha_entropy`.
    """
    method = make_method(mixture_weight_fn(num_domains, smoothing=smoothing, domain_key=domain_key))

    def init(phi: jax.Array, theta: PyTree | None = None) -> MixtureState:
        return MixtureState(
            mixture_alpha(phi, smoothing=smoothing),
            method.init(phi, theta),
            jnp.zeros([], jnp.int32),
        )

    def update(phi, outer_state, theta, generic_batch, target_batch, key=None):
        phi, inner_state, metrics = method.update(
            phi, outer_state.inner_state, theta, generic_batch, target_batch, key
        )
        alpha_K = mixture_alpha(phi, smoothing=smoothing)
        metrics = {**metrics, **_alpha_metrics(alpha_K)}
        return phi, MixtureState(alpha_K, inner_state, outer_state.count + 1), metrics

    return base.OuterMethod(init, update)


def _exponentiated_gradient_method(
    loss_fn: derivatives.LossFn,
    num_domains: int,
    *,
    step_size: float,
    smoothing: float,
    domain_key: str,
) -> base.OuterMethod:
    def init(phi: jax.Array, theta: PyTree | None = None) -> MixtureState:
        del theta
        return MixtureState(mixture_alpha(phi, smoothing=smoothing), (), jnp.zeros([], jnp.int32))

    def update(phi, outer_state, theta, generic_batch, target_batch, key=None):
        del phi, key
        target_loss, g_s = derivatives.mean_loss_and_grad(loss_fn, theta, target_batch)
        alignment_K, count_K = domain_alignment(
            loss_fn, theta, generic_batch, generic_batch[domain_key], num_domains, g_s
        )
        alpha_K = outer_state.alpha_K
        present_K = count_K > 0
        mixture_alignment = jnp.sum(jnp.where(present_K, alpha_K * alignment_K, 0.0))
        # phi <- log of the EG step before smoothing, so that alpha = mixture_alpha(phi)
        # holds as in the hypergradient mode (same result as
        # `exponentiated_gradient_update(alpha_K, ...)`).
        new_phi = _exponentiated_gradient_logits(alpha_K, alignment_K, present_K, step_size)
        new_alpha_K = mixture_alpha(new_phi, smoothing=smoothing)
        metrics = {
            "outer/objective": -mixture_alignment,
            "outer/alignment": mixture_alignment,
            "outer/target_loss": target_loss,
            "outer/grad_norm": jnp.linalg.norm(jnp.where(present_K, alignment_K, 0.0)),
            **_alpha_metrics(new_alpha_K),
        }
        for k in range(num_domains):
            metrics[f"mixture/alignment/{k}"] = alignment_K[k]
        state = MixtureState(new_alpha_K, (), outer_state.count + 1)
        return new_phi, state, metrics

    return base.OuterMethod(init, update)


def mixture(
    loss_fn: derivatives.LossFn,
    num_domains: int,
    *,
    update: str = "eg",
    step_size: float = 1.0,
    smoothing: float = 1e-3,
    phi_tx: optax.GradientTransformation | None = None,
    objective: str = "anograd",
    eta: float = 0.0,
    eps: float = 1e-8,
    normalization: str = "norm",
    domain_key: str = "domain",
) -> base.OuterMethod:
    """Outer method over domain mixture weights (module docstring).

    Args:
      loss_fn: (theta, batch) -> float[B] per-example losses.
      num_domains: K.
      update: "eg" (exponentiated gradient on alignments) or "hypergradient".
      step_size: EG step size ("eg" only).
      smoothing: floor s: alpha = (1 - s) alpha + s / K after every update.
      phi_tx: optimiser of the logits ("hypergradient" only; default `optax.sgd(step_size)`).
      objective: "anograd" or "dds" ("hypergradient" only; for SOBA use
        `mixture_hypergradient` with `make_method`).
      eta: DDS virtual step ("dds" only; 0 = first-order limit, eta divided out).
      eps: ANOGRAD denominator stabiliser.
      normalization: ANOGRAD's normaliser, "norm" or "hessian" ("anograd" only).
      domain_key: key of the int[B] domain labels in the batch dict.

    Returns:
      An `OuterMethod` over phi = logits_K (float[K]; zeros = uniform, log of the
      pool shares = the natural distribution) with state
      `MixtureState(alpha_K, inner_state, count)`; read `state.alpha_K` to draw
      generic batches (`mixture_resampling_logits`). In both modes
      `state.alpha_K == mixture_alpha(phi, smoothing=smoothing)`; "eg" reads alpha
      from the state and returns phi = log of its step before smoothing.
      Metrics: `mixture/alpha/<k>`, `mixture/alpha_entropy`, `outer/objective`,
      `outer/grad_norm`, `outer/target_loss` (hypergradient: also the inner
      method's), and for "eg" `outer/alignment` (sum_k alpha_k a_k) and
      `mixture/alignment/<k>`.
    """
    if update not in UPDATES:
        raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must lie in [0, 1], got {smoothing}")
    if update == "eg":
        return _exponentiated_gradient_method(
            loss_fn,
            num_domains,
            step_size=step_size,
            smoothing=smoothing,
            domain_key=domain_key,
        )
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    tx = optax.sgd(step_size) if phi_tx is None else phi_tx
    if objective == "anograd":

        def make_method(weight_fn):
            return anograd(loss_fn, weight_fn, tx, normalization=normalization, eps=eps)
    else:

        def make_method(weight_fn):
            return dds(loss_fn, weight_fn, tx, eta=eta)

    return mixture_hypergradient(
        num_domains, make_method, smoothing=smoothing, domain_key=domain_key
    )
