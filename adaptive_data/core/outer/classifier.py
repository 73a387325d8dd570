"""Classifier selection: a binary domain classifier trained online (docs/algorithms.md,
"classifier").

A classifier with logit z = c(x; phi) (the weighting model's architecture, mode
"logits") separates target_train examples (positives) from generic examples
(negatives). Each set's mean logistic loss is taken separately and the two are
averaged, so the sets weigh equally whatever their batch sizes:

    C(phi) = 1/2 mean_{x in target batch} softplus(-z(x)) + 1/2 mean_{x generic} softplus(z(x))

(softplus(-z) = -log sigmoid(z), the log loss of a positive; softplus(z) that of a
negative). A driver trains the model on the b examples of each big batch with the
largest logits, the most target-like ones (strategy `top`).

The model parameters theta play no part: the classifier sees only the data.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_data.core.outer import base

PyTree = Any
LogitFn = Callable[[PyTree, PyTree], jax.Array]  # (phi, batch) -> float[n] logits


def classifier_gradient(
    logit_fn: LogitFn,
    phi: PyTree,
    generic_batch: PyTree,
    target_batch: PyTree,
) -> tuple[PyTree, base.Metrics]:
    """Gradient with respect to phi of the balanced logistic loss C(phi) (module docstring).

    Args:
      logit_fn: (phi, batch) -> float[n] one logit per example, > 0 meaning "target".
      phi: classifier parameters.
      generic_batch: n_g generic examples, the negatives.
      target_batch: n_t target_train examples, the positives.

    Returns:
      `(dC/dphi, metrics)`: a pytree shaped like phi, and `outer/objective` (C),
      `classifier/accuracy` (balanced accuracy at threshold 0: the mean of the
      fraction of target logits > 0 and of generic logits <= 0),
      `classifier/target_logit`, `classifier/generic_logit` (mean logits) and
      `outer/grad_norm` (||dC/dphi||).
    """

    def loss_fn(p: PyTree) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        z_t = logit_fn(p, target_batch)
        z_g = logit_fn(p, generic_batch)
        loss = 0.5 * jnp.mean(jax.nn.softplus(-z_t)) + 0.5 * jnp.mean(jax.nn.softplus(z_g))
        return loss, (z_t, z_g)

    (loss, (z_t, z_g)), grad_phi = jax.value_and_grad(loss_fn, has_aux=True)(phi)
    true_positive_rate = jnp.mean((z_t > 0).astype(loss.dtype))
    true_negative_rate = jnp.mean((z_g <= 0).astype(loss.dtype))
    metrics = {
        "outer/objective": loss,
        "classifier/accuracy": 0.5 * (true_positive_rate + true_negative_rate),
        "classifier/target_logit": jnp.mean(z_t),
        "classifier/generic_logit": jnp.mean(z_g),
        "outer/grad_norm": optax.tree.norm(grad_phi),
    }
    return grad_phi, metrics


def classifier(logit_fn: LogitFn, phi_tx: optax.GradientTransformation) -> base.OuterMethod:
    """Classifier outer method: phi <- phi_tx step on dC/dphi (see `classifier_gradient`).

    Args:
      logit_fn: (phi, batch) -> float[n] logits (e.g. the weighting CNN, mode "logits").
      phi_tx: optimiser of phi (it receives the gradient; e.g. `optax.adam(1e-3)`).

    Returns:
      An `OuterMethod` with state `PhiState(phi_opt_state, count)`. `update` trains on
      (generic_batch negatives, target_batch positives); `theta` (in `init` and
      `update`) and `key` are unused.
    """

    def gradient_fn(phi, theta, generic_batch, target_batch):
        del theta
        return classifier_gradient(logit_fn, phi, generic_batch, target_batch)

    return base.phi_gradient_method(gradient_fn, phi_tx)
