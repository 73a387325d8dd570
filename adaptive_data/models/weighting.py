"""The weighting model w(x; phi): a small token CNN giving one logit per example.

Which output each method uses (see `example_weights`):
- ANOGRAD, SOBA, DDS (outer updates, docs/algorithms.md, "The weighting model"): mode
  "positive", weights softmax(logits_B) * B * softplus(scale) > 0, whose batch mean is
  softplus(scale).
- The sampler that draws b of B (docs/algorithms.md, section 3): mode "logits" (raw logits fed
  to `core.selection.select` as scores, p = softmax(logits / temperature)), or
  equivalently mode "probability" for the probabilities themselves.
- The classifier-selection baseline: mode "logits" (a binary classifier's logit).
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

PyTree = Any

MODES = ("probability", "positive", "logits")

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
}
# The values of ``config.weighting.activation``.
ACTIVATIONS = tuple(_ACTIVATIONS)

# softplus(_SCALE_INIT) = 1, so the initial "positive" weights have mean 1.
_SCALE_INIT = math.log(math.e - 1.0)


class WeightingModel(nn.Module):
    """Token CNN: embed -> [conv1d -> activation] * n -> masked mean -> dense -> logit.

    Attributes:
      vocab_size: number of token ids V (the tokenizer's: 259 for bytes).
      pad_id: the padding token, masked out when no mask is given.
      embed_dim: embedding width E.
      conv_features: output widths of the 1-D convolutions, one per layer.
      kernel_size: convolution width (SAME padding).
      activation: "relu" or "gelu".

    Params: the layers, plus a scalar "scale" (unconstrained; softplus(scale) is
    the weight scale of mode "positive", initialised to softplus(scale) = 1).
    """

    vocab_size: int
    pad_id: int
    embed_dim: int = 64
    conv_features: Sequence[int] = (128, 128)
    kernel_size: int = 5
    activation: str = "relu"

    @nn.compact
    def __call__(self, inputs: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Logits of a batch.

        Args:
          inputs: int32[B, L] token ids.
          mask: optional float/bool[B, L], 1 on real tokens (default inputs != pad_id).

        Returns:
          float32[B] logits. Padded positions do not influence them: features are
          zeroed there before every convolution and excluded from the mean.
        """
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; valid: {tuple(_ACTIVATIONS)}"
            )
        act = _ACTIVATIONS[self.activation]
        if mask is None:
            mask = inputs != self.pad_id
        mask_BL1 = mask.astype(jnp.float32)[..., None]
        # Learned weight scale, read by `example_weights` (not used in the logits).
        self.param("scale", nn.initializers.constant(_SCALE_INIT), (), jnp.float32)

        x_BLE = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(inputs)
        for i, features in enumerate(self.conv_features):
            x_BLE = nn.Conv(features, (self.kernel_size,), padding="SAME", name=f"conv_{i}")(
                x_BLE * mask_BL1
            )
            x_BLE = act(x_BLE)
        counts_B1 = jnp.maximum(jnp.sum(mask_BL1, axis=1), 1.0)
        pooled_BE = jnp.sum(x_BLE * mask_BL1, axis=1) / counts_B1
        # No bias: every use of the logits is a softmax over the batch, which a shared
        # offset cannot change (a bias would get a zero gradient, and optimiser noise).
        return nn.Dense(1, use_bias=False, name="logit")(pooled_BE)[:, 0]


def from_config(weighting_cfg, tokenizer) -> WeightingModel:
    """The weighting model of a ``config.weighting`` block over the vocabulary of
    ``tokenizer`` (an ``adaptive_data.data.tokenizer.Tokenizer``: V and the PAD id)."""
    return WeightingModel(
        vocab_size=tokenizer.vocab_size,
        pad_id=tokenizer.pad_id,
        embed_dim=weighting_cfg.embed_dim,
        conv_features=tuple(weighting_cfg.conv_features),
        kernel_size=weighting_cfg.kernel_size,
        activation=weighting_cfg.activation,
    )


def example_weights(logits_B: jax.Array, mode: str, scale: jax.Array | None = None) -> jax.Array:
    """Per-example weights from the weighting model's logits.

    Args:
      logits_B: float32[B] logits of the examples of one batch.
      mode: "probability": softmax(logits_B) (sums to 1), for sampling;
        "positive": softmax(logits_B) * B * softplus(scale) (> 0, batch mean
        softplus(scale)), for ANOGRAD / SOBA / DDS;
        "logits": logits_B unchanged.
      scale: the raw (unconstrained) "scale" param of `WeightingModel`
        (`params["scale"]`); None means softplus(scale) = 1. Only used by "positive".

    Returns:
      float32[B] weights.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {MODES}")
    logits_B = logits_B.astype(jnp.float32)
    if mode == "logits":
        return logits_B
    probs_B = jax.nn.softmax(logits_B)
    if mode == "probability":
        return probs_B
    factor = 1.0 if scale is None else jax.nn.softplus(scale)
    return probs_B * (logits_B.shape[0] * factor)


def init_weighting_params(
    key: jax.Array, model: WeightingModel, example_inputs: jax.Array
) -> PyTree:
    """The model's "params" collection (a dict), for `model.apply({"params": p}, x)`."""
    return model.init(key, example_inputs)["params"]


def weighting_forward(
    model: WeightingModel,
    params: PyTree,
    inputs: jax.Array,
    *,
    mode: str,
    mask: jax.Array | None = None,
) -> jax.Array:
    """`example_weights(model(inputs), mode, params["scale"])`: float32[B]."""
    logits_B = model.apply({"params": params}, inputs, mask)
    return example_weights(logits_B, mode, params["scale"])
