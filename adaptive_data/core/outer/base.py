"""The optax-like interface shared by the outer (phi) updates, and ``PhiState``, the
state of the methods whose only variable is phi (``phi_gradient_method`` below; each
other method keeps its state next to its ``init``/``update``, as optax does).

An outer method is a pair of pure functions, like an `optax.GradientTransformation`:

    method = anograd(loss_fn, weight_fn, phi_tx)            # or soba, dds, mixture
    outer_state = method.init(phi, theta)                    # theta: only SOBA needs it
    phi, outer_state, metrics = method.update(
        phi, outer_state, theta, generic_batch, target_batch, key)

`generic_batch` holds b generic examples (a uniform sub-sample of the big batch B
unless a method's docstring says otherwise), `target_batch` a batch of S_train,
`key` a PRNG key (unused by the deterministic methods, kept for a uniform call).
`metrics` is a flat dict of scalars with slash names. States are NamedTuples of
arrays and optax states, so they checkpoint as plain pytrees.

Order within a training step (all from the state at the start of the step, so the
outer and inner updates can share one jitted step): with (theta_t, phi_t, state_t),
(1) score the big batch B with w(.; phi_t) and draw the inner batch of b;
(2) `phi_{t+1}, state_{t+1}, metrics = method.update(phi_t, state_t, theta_t,
generic_batch, target_batch, key)`, where generic_batch is the batch the method's
record names (`Method.outer_batch`: a uniform b of B for ANOGRAD and DDS, the inner
batch of (1) for SOBA, all of B for the mixture; docs/algorithms.md, "Which batch each
term uses"); (3) the inner step theta_t -> theta_{t+1} on the inner batch. With
`outer.every = N > 1` the driver calls `update` only on every N-th step.
"""

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax

from adaptive_data.core import derivatives

PyTree = Any
Metrics = dict[str, jax.Array]


class InitFn(Protocol):
    def __call__(self, phi: PyTree, theta: PyTree | None = None) -> Any:
        """Returns the initial outer state (theta only fixes shapes, for SOBA's v)."""


class UpdateFn(Protocol):
    def __call__(
        self,
        phi: PyTree,
        outer_state: Any,
        theta: PyTree,
        generic_batch: PyTree,
        target_batch: PyTree,
        key: jax.Array | None = None,
    ) -> tuple[PyTree, Any, Metrics]:
        """Returns (new_phi, new_outer_state, metrics)."""


class OuterMethod(NamedTuple):
    """An outer update of the weighting model phi, as a pair of pure functions.

    Attributes:
      init: `init(phi, theta=None) -> outer_state`.
      update: `update(phi, outer_state, theta, generic_batch, target_batch, key)
        -> (new_phi, new_outer_state, metrics)`.
    """

    init: InitFn
    update: UpdateFn


class PhiState(NamedTuple):
    """State of the methods whose only variable is phi (ANOGRAD, DDS).

    Attributes:
      phi_opt_state: state of `phi_tx`.
      count: int32[] number of updates done.
    """

    phi_opt_state: optax.OptState
    count: jax.Array


def apply_phi_update(
    phi_tx: optax.GradientTransformation,
    grad_phi: PyTree,
    phi_opt_state: optax.OptState,
    phi: PyTree,
) -> tuple[PyTree, optax.OptState]:
    """One `phi_tx` step on the (descent) gradient `grad_phi`: returns (phi, opt_state)."""
    updates, phi_opt_state = phi_tx.update(grad_phi, phi_opt_state, phi)
    return optax.apply_updates(phi, updates), phi_opt_state


def phi_gradient_method(gradient_fn, phi_tx: optax.GradientTransformation) -> OuterMethod:
    """The OuterMethod of a method whose only variable is phi (ANOGRAD, DDS).

    `gradient_fn(phi, theta, generic_batch, target_batch) -> (grad_phi, metrics)`;
    each update takes one `phi_tx` step on grad_phi. State: `PhiState`.
    """

    def init(phi: PyTree, theta: PyTree | None = None) -> PhiState:
        del theta
        return PhiState(phi_tx.init(phi), jnp.zeros([], jnp.int32))

    def update(phi, outer_state, theta, generic_batch, target_batch, key=None):
        del key
        grad_phi, metrics = gradient_fn(phi, theta, generic_batch, target_batch)
        phi, phi_opt_state = apply_phi_update(phi_tx, grad_phi, outer_state.phi_opt_state, phi)
        return phi, PhiState(phi_opt_state, outer_state.count + 1), metrics

    return OuterMethod(init, update)


def weight_metrics(w_B: jax.Array) -> Metrics:
    """Diagnostics of the weights on a batch: entropy and largest normalised weight.

    `outer/weight_entropy` is the entropy of w / sum w in nats (log b when uniform);
    `outer/weight_max` is b * max_i w_i / sum w (1 when uniform).
    """
    p_B = derivatives.normalize_weights(w_B)
    return {
        "outer/weight_entropy": derivatives.weight_entropy(w_B),
        "outer/weight_max": p_B.shape[0] * jnp.max(p_B),
    }
