"""Decoder-only byte-level Transformer LM (Flax Linen) and its per-example loss.

Pre-LayerNorm blocks, causal multi-head self-attention, GELU MLP, learned positional
embeddings, input/output embeddings shared (logits = h @ E^T), dropout. The loss every
method builds on is ``loss_fn(params, batch) -> [B]``: the mean next-token negative
log-likelihood (nats) over the non-padding target tokens of each example.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from adaptive_data.data import tokenizer

# Size presets of ``config.model.size`` (configs/default.py fills the model fields from
# them): "tiny" for tests, "small" runs on a laptop CPU, "paper" is the paper's byte LM.
SIZES = {
    "tiny": dict(num_layers=2, width=64, mlp_dim=256, num_heads=4, max_length=64),
    "small": dict(num_layers=4, width=128, mlp_dim=512, num_heads=4, max_length=128),
    "paper": dict(num_layers=12, width=256, mlp_dim=1024, num_heads=8, max_length=256),
}
# Activation dtypes of ``config.model.dtype`` (parameters stay float32).
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Sizes of the LM. ``num_layers``=L, ``width``=D, ``mlp_dim``=F, ``num_heads``=H."""

    vocab_size: int = tokenizer.VOCAB_SIZE
    num_layers: int = 4
    width: int = 128
    mlp_dim: int = 512
    num_heads: int = 4
    max_length: int = 128
    dropout_rate: float = 0.1
    dtype: str = "float32"  # activation dtype ("bfloat16" on accelerators); params stay f32


class _Block(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BxLxD, mask_Bx1xLxL, deterministic: bool):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        h = nn.LayerNorm(dtype=dtype, name="ln_attn")(x_BxLxD)
        h = nn.MultiHeadDotProductAttention(
            num_heads=cfg.num_heads,
            dtype=dtype,
            dropout_rate=cfg.dropout_rate,
            deterministic=deterministic,
            name="attn",
        )(h, h, mask=mask_Bx1xLxL)
        x_BxLxD = x_BxLxD + nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
        h = nn.LayerNorm(dtype=dtype, name="ln_mlp")(x_BxLxD)
        h = nn.Dense(cfg.mlp_dim, dtype=dtype, name="mlp_in")(h)
        h = nn.gelu(h)
        h = nn.Dense(cfg.width, dtype=dtype, name="mlp_out")(h)
        return x_BxLxD + nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)


class TransformerLM(nn.Module):
    """Causal LM: int32[B, L] token ids -> float32[B, L, V] next-token logits."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, inputs_BxL, *, deterministic: bool = True):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        length = inputs_BxL.shape[1]
        if length > cfg.max_length:
            raise ValueError(
                f"Sequence length {length} exceeds model.max_length={cfg.max_length}; "
                "raise config.model.max_length or lower config.data.max_length."
            )
        embed = nn.Embed(
            cfg.vocab_size,
            cfg.width,
            name="embed",
            embedding_init=nn.initializers.normal(stddev=0.02),
        )
        pos_embed = self.param(
            "pos_embed", nn.initializers.normal(stddev=0.02), (cfg.max_length, cfg.width)
        )
        x_BxLxD = embed(inputs_BxL) + pos_embed[None, :length]
        x_BxLxD = nn.Dropout(cfg.dropout_rate)(x_BxLxD, deterministic=deterministic)
        x_BxLxD = x_BxLxD.astype(dtype)
        mask_Bx1xLxL = nn.make_causal_mask(inputs_BxL)
        for i in range(cfg.num_layers):
            x_BxLxD = _Block(cfg, name=f"block_{i}")(x_BxLxD, mask_Bx1xLxL, deterministic)
        x_BxLxD = nn.LayerNorm(dtype=dtype, name="ln_final")(x_BxLxD)
        logits_BxLxV = embed.attend(x_BxLxD.astype(jnp.float32))
        return logits_BxLxV.astype(jnp.float32)


def from_config(model_cfg) -> TransformerLM:
    """The LM of a ``config.model`` block (num_layers, width, mlp_dim, num_heads, ...)."""
    return TransformerLM(
        TransformerConfig(
            num_layers=model_cfg.num_layers,
            width=model_cfg.width,
            mlp_dim=model_cfg.mlp_dim,
            num_heads=model_cfg.num_heads,
            max_length=model_cfg.max_length,
            dropout_rate=model_cfg.dropout_rate,
            dtype=model_cfg.dtype,
        )
    )


def token_nll(logits_BxLxV, targets_BxL):
    """Negative log-likelihood (nats) of each target token: float32[B, L]."""
    log_probs = jax.nn.log_softmax(logits_BxLxV, axis=-1)
    return -jnp.take_along_axis(log_probs, targets_BxL[..., None], axis=-1)[..., 0]


def make_loss_fn(model: TransformerLM, *, deterministic: bool = True) -> Callable:
    """Returns ``loss_fn(params, batch, dropout_key=None) -> float32[B]``.

    ``loss_i = sum_t mask_it * nll_it / max(1, sum_t mask_it)``: the mean next-token NLL
    over the non-padding targets of example i (an all-padding example has loss 0).
    ``batch`` needs ``inputs``, ``targets`` (int32[B, L]) and ``mask`` (float32[B, L]).
    With ``deterministic=False`` dropout is on and ``dropout_key`` is required.
    """

    def loss_fn(params, batch, dropout_key=None):
        rngs = None if deterministic else {"dropout": dropout_key}
        logits = model.apply(
            {"params": params}, batch["inputs"], deterministic=deterministic, rngs=rngs
        )
        nll_BxL = token_nll(logits, batch["targets"])
        mask_BxL = batch["mask"]
        return jnp.sum(nll_BxL * mask_BxL, axis=-1) / jnp.maximum(jnp.sum(mask_BxL, axis=-1), 1.0)

    return loss_fn


def make_eval_fn(model: TransformerLM) -> Callable:
    """Returns ``eval_fn(params, batch) -> (sum_nll, num_bytes)`` summed over the batch.

    Bits per byte over many batches is ``sum(sum_nll) / ln 2 / sum(num_bytes)``: the NLL
    of every predicted token (bytes and EOS) per UTF-8 byte of text.
    """

    def eval_fn(params, batch):
        logits = model.apply({"params": params}, batch["inputs"], deterministic=True)
        nll_BxL = token_nll(logits, batch["targets"])
        return jnp.sum(nll_BxL * batch["mask"]), jnp.sum(batch["num_bytes"])

    return eval_fn


def init_params(model: TransformerLM, key: jax.Array, max_length: int):
    """Initial parameters for inputs of shape [1, max_length]."""
    dummy = jnp.zeros((1, max_length), jnp.int32)
    return model.init({"params": key}, dummy, deterministic=True)["params"]
