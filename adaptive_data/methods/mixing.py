"""``mixing``: the LM descends gw * L_generic + (1 - gw) * L_target, generic data and
target_train mixed in one of two ways (``config.mixing.batch``):

- ``separate`` (default; the authors' implementation): a generic batch of b and a
  target_train batch of ``train.target_batch_size``, their mean losses weighted gw and
  1 - gw. A step computes both batches: (b + target_batch_size) / b times base's FLOPs
  (2.0x at the default sizes).
- ``mixed``: one batch of b, n_t = round((1 - gw) b) of its examples from target_train
  and b - n_t generic, every example weighted 1/b; its loss is
  ((b - n_t) / b) L_generic + (n_t / b) L_target, gw up to the rounding. A step costs
  base's FLOPs: the compute-fair mixing.
"""

import ml_collections

from adaptive_data.config_rules import Rule, number, one_of
from adaptive_data.methods.builders import supervised_method
from adaptive_data.methods.registry import MethodSpec, register

BATCHES = ("separate", "mixed")


def _defaults(arg) -> ml_collections.ConfigDict:
    del arg
    block = ml_collections.ConfigDict()
    # gw in gw * L_generic + (1 - gw) * L_target.
    block.generic_weight = 0.9
    # separate (a generic batch of b and a target_train batch, the authors') | mixed
    # (one batch of b, round((1 - gw) b) of it from target_train: base's FLOPs).
    block.batch = "separate"
    return block


def mixed_batch_target_size(batch_size: int, generic_weight: float) -> int:
    """n_t = round((1 - gw) b): the target_train examples of a mixed batch of b."""
    return round((1.0 - generic_weight) * batch_size)


def _mixed_batch_holds_both(generic_weight, config) -> bool:
    b = int(config.train.batch_size)
    return 0 < mixed_batch_target_size(b, float(generic_weight)) < b


def _build(config, context):
    gw = float(config.mixing.generic_weight)
    b = int(config.train.batch_size)
    if config.mixing.batch == "mixed":
        n_target = mixed_batch_target_size(b, gw)
        streams = {
            "generic": ("generic_train", b - n_target),
            "target": ("target_train", n_target),
        }
        loss_weights = {"generic": (b - n_target) / b, "target": n_target / b}
    else:
        streams = {
            "generic": ("generic_train", b),
            "target": ("target_train", int(config.train.target_batch_size)),
        }
        loss_weights = {"generic": gw, "target": 1.0 - gw}
    return supervised_method(config, context, "mixing", streams, loss_weights)


SPEC = register(
    MethodSpec(
        "mixing",
        _build,
        "gradients of gw L_generic + (1 - gw) L_target (separate batches, or one mixed "
        "batch of b at base's FLOPs)",
        defaults=_defaults,
        rules=(
            Rule("mixing.generic_weight", *number(0, 1)),
            Rule("mixing.batch", *one_of(BATCHES)),
            Rule(
                "mixing.generic_weight",
                _mixed_batch_holds_both,
                "such that a mixed batch holds both kinds: 0 < round((1 - gw) * "
                "train.batch_size) < train.batch_size (mixing.batch='mixed')",
                when=lambda config: config.mixing.batch == "mixed",
                reads=("mixing.batch", "train.batch_size"),
            ),
        ),
    )
)
