"""Decoder-only byte-level Transformer LM (Flax Linen), the default model entry.

Pre-LayerNorm blocks, causal multi-head self-attention, GELU MLP, learned positional
embeddings, input/output embeddings shared (logits = h @ E^T), dropout. Registered as
``transformer`` (``config.model.name``, the default), with the size presets of
``config.model.size``. The loss every method builds on, ``make_loss_fn`` (re-exported
from ``adaptive_data.models.lm``, where it is defined for any model entry), takes the
built ``LanguageModel``.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from adaptive_data.config_rules import Rule, integer, number, one_of
from adaptive_data.models import lm
from adaptive_data.models.lm import make_loss_fn as make_loss_fn  # the methods' name for it
from adaptive_data.models.registry import ModelSpec, register

# Size presets of ``config.model.size`` (``defaults`` fills the model fields from them):
# "tiny" for tests, "small" runs on a laptop CPU, "paper" is the paper's byte LM.
SIZES = {
    "tiny": dict(num_layers=2, width=64, mlp_dim=256, num_heads=4, max_length=64),
    "small": dict(num_layers=4, width=128, mlp_dim=512, num_heads=4, max_length=128),
    "paper": dict(num_layers=12, width=256, mlp_dim=1024, num_heads=8, max_length=256),
}
# Activation dtypes of ``config.model.dtype`` (parameters stay float32).
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Sizes of the LM. ``vocab_size``=V (the tokenizer's), ``num_layers``, ``width``=D,
    ``mlp_dim``=F, ``num_heads``=H."""

    vocab_size: int
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
    def __call__(self, inputs_BxL, *, train: bool = False):
        cfg = self.config
        deterministic = not train
        dtype = jnp.dtype(cfg.dtype)
        length = inputs_BxL.shape[1]
        if length > cfg.max_length:
            raise ValueError(
                f"Sequence length {length} exceeds model.max_length={cfg.max_length}; "
                "raise config.model.max_length."
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


def from_config(model_cfg, vocab_size: int) -> TransformerLM:
    """The LM of a ``config.model`` block (num_layers, width, mlp_dim, num_heads, ...)."""
    return TransformerLM(
        TransformerConfig(
            vocab_size=vocab_size,
            num_layers=model_cfg.num_layers,
            width=model_cfg.width,
            mlp_dim=model_cfg.mlp_dim,
            num_heads=model_cfg.num_heads,
            max_length=model_cfg.max_length,
            dropout_rate=model_cfg.dropout_rate,
            dtype=model_cfg.dtype,
        )
    )


def defaults(arg) -> ml_collections.ConfigDict:
    """The block of ``config.model``: the sizes of preset ``arg.size`` ("tiny" when
    ``arg.runlocal``), dropout and the activation dtype."""
    size = "tiny" if arg.runlocal else arg.size
    if size not in SIZES:
        raise ValueError(f"Unknown size={size!r}; choose one of {sorted(SIZES)}.")
    block = ml_collections.ConfigDict()
    # Size preset: tiny | small | paper (the fields below are filled from it).
    block.size = size
    for key, value in SIZES[size].items():
        block[key] = value
    # Dropout on embeddings, attention weights and residual branches.
    block.dropout_rate = 0.1
    # Activation dtype: float32 (CPU) or bfloat16 (GPU/TPU).
    block.dtype = "float32"
    return block


register(
    ModelSpec(
        "transformer",
        lambda model_cfg, vocab_size: lm.linen_functions(from_config(model_cfg, vocab_size)),
        "byte-level decoder-only Transformer of the paper: pre-LayerNorm, learned positions, "
        "GELU MLP, tied embeddings",
        defaults,
        rules=(
            Rule("model.size", *one_of(tuple(SIZES))),
            Rule("model.num_layers", *integer(1)),
            Rule("model.width", *integer(1)),
            Rule("model.mlp_dim", *integer(1)),
            Rule("model.num_heads", *integer(1)),
            Rule("model.dropout_rate", *number(0, 1, hi_open=True)),
            Rule("model.dtype", *one_of(DTYPES)),
            Rule(
                "model.width",
                lambda v, config: int(v) % int(config.model.num_heads) == 0,
                "a multiple of config.model.num_heads (each head gets width / num_heads)",
                reads=("model.num_heads",),
            ),
        ),
    )
)
