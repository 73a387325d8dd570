"""``soba``: b of the big batch sampled by a weighting CNN w(x; phi); phi follows the SOBA
hypergradient, with v tracking -H^-1 grad L_s by its own optimiser
(``core/outer/soba.py``)."""

import ml_collections
import optax

from adaptive_data import train_state as ts
from adaptive_data.config_rules import Rule, boolean, number, one_of
from adaptive_data.core.outer.soba import HESSIAN_FREE_CURVATURES, HESSIAN_WEIGHTS, soba
from adaptive_data.methods.builders import OPTIMIZERS, weighting_method
from adaptive_data.methods.registry import MethodSpec, register
from adaptive_data.methods.types import OUTER_BATCHES


def _defaults(arg) -> ml_collections.ConfigDict:
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


def _outer(config, loss_fn, weight_fn, phi_tx):
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


SPEC = register(
    MethodSpec(
        "soba",
        weighting_method(_outer, lambda c: c.soba.outer_batch),
        "b sampled by a weighting CNN; phi follows the SOBA hypergradient, v ~ -H^-1 grad L_s",
        scorer="weighting_model",
        diagnosis="learned_weights",
        defaults=_defaults,
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
