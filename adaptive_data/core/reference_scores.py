"""Scores of a big batch by fixed reference LMs trained in other runs (docs/algorithms.md,
"rho" and "cds").

Both are differences of per-example losses l(x; theta) = ``loss_fn(theta, batch)``
(float[B]); a driver keeps the b largest scores of B (strategy ``top``):

- RHO-LOSS (Mindermann et al. 2022): the reducible loss
  ``l(x; theta) - l(x; theta_ref)``, theta the model being trained and theta_ref a model
  trained on target_train: examples the model has not learnt yet but that are learnable
  (low irreducible loss) score high.
- CDS, contrastive data selection (Moore and Lewis 2010; Wang et al. 2018):
  ``l(x; theta_generic) - l(x; theta_target)`` with two fixed models, one trained on
  generic data and the same one fine-tuned on target_train: the top b are the b lowest
  ``l_target - l_generic``, the most target-like examples.
"""

from typing import Any

import jax

from adaptive_data.core import derivatives

PyTree = Any


def reducible_loss(
    loss_fn: derivatives.LossFn, params: PyTree, reference_params: PyTree, batch: PyTree
) -> jax.Array:
    """RHO-LOSS scores ``l(x_i; params) - l(x_i; reference_params)``, float[B] (higher: keep)."""
    return loss_fn(params, batch) - loss_fn(reference_params, batch)


def contrastive_score(
    loss_fn: derivatives.LossFn, generic_params: PyTree, target_params: PyTree, batch: PyTree
) -> jax.Array:
    """CDS scores ``l(x_i; generic_params) - l(x_i; target_params)``, float[B] (higher: more
    target-like)."""
    return loss_fn(generic_params, batch) - loss_fn(target_params, batch)
