"""A Llama-style language model registered from outside the package: the worked example of
docs/guide.md, "Your own model and tokenizer".

Pre-norm blocks with RMSNorm, causal multi-head attention with rotary position embeddings
(RoPE) on queries and keys, a gated MLP (SwiGLU), no biases, an untied output head; Flax
Linen. Importing this module registers the model ``rope_lm`` (``adaptive_data.models``);
name the module in ``extra_modules`` and the model in ``model`` (from the repository root,
or with this directory's parent on PYTHONPATH):

    python -m adaptive_data.data.train_tokenizer --vocab_size=512 --output=/tmp/sp512.model
    python -m adaptive_data.main --workdir=/tmp/rope_anograd \\
        --config=configs/default.py:model=rope_lm,method=anograd,extra_modules=examples.rope_lm \\
        --config.data.tokenizer=sentencepiece:/tmp/sp512.model

Shapes: B examples, L tokens, D = ``width``, H = ``num_heads``, K = D / H per head,
F = ``mlp_dim``, V the tokenizer's vocabulary (given to ``build``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P

from adaptive_data import models
from adaptive_data.config_rules import Rule, integer, number

NAME = "rope_lm"


def rotate(x_BxLxHxK: jax.Array, base: float) -> jax.Array:
    """Rotary position embedding: rotates the pairs (x_j, x_{j + K/2}) of position t by
    the angle t * base^(-2j / K), j < K/2, so that <rotate(q)_t, rotate(k)_s> depends on
    t - s only."""
    length, head_dim = x_BxLxHxK.shape[1], x_BxLxHxK.shape[-1]
    half = head_dim // 2
    inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) * 2.0 / head_dim)
    angles_1xLx1xJ = (jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :])[
        None, :, None, :
    ]
    cos, sin = jnp.cos(angles_1xLx1xJ), jnp.sin(angles_1xLx1xJ)
    x = x_BxLxHxK.astype(jnp.float32)
    first, second = x[..., :half], x[..., half:]
    rotated = jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)
    return rotated.astype(x_BxLxHxK.dtype)


class _Attention(nn.Module):
    num_heads: int
    rope_base: float
    dropout_rate: float

    @nn.compact
    def __call__(self, x_BxLxD, train: bool):
        width = x_BxLxD.shape[-1]
        head_dim = width // self.num_heads

        def project(name):
            return nn.DenseGeneral((self.num_heads, head_dim), use_bias=False, name=name)(x_BxLxD)

        q_BxLxHxK = rotate(project("query"), self.rope_base)
        k_BxLxHxK = rotate(project("key"), self.rope_base)
        v_BxLxHxK = project("value")
        logits_BxHxLxL = jnp.einsum("bqhk,bshk->bhqs", q_BxLxHxK, k_BxLxHxK) / jnp.sqrt(
            jnp.float32(head_dim)
        )
        length = x_BxLxD.shape[1]
        causal_1x1xLxL = jnp.tril(jnp.ones((length, length), bool))[None, None]
        logits_BxHxLxL = jnp.where(causal_1x1xLxL, logits_BxHxLxL, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits_BxHxLxL, axis=-1)
        weights = nn.Dropout(self.dropout_rate)(weights, deterministic=not train)
        out_BxLxHxK = jnp.einsum("bhqs,bshk->bqhk", weights, v_BxLxHxK)
        return nn.DenseGeneral(width, axis=(-2, -1), use_bias=False, name="out")(out_BxLxHxK)


class _Block(nn.Module):
    num_heads: int
    mlp_dim: int
    rope_base: float
    dropout_rate: float

    @nn.compact
    def __call__(self, x_BxLxD, train: bool):
        drop = nn.Dropout(self.dropout_rate)
        h = nn.RMSNorm(name="norm_attn")(x_BxLxD)
        h = _Attention(self.num_heads, self.rope_base, self.dropout_rate, name="attn")(h, train)
        x_BxLxD = x_BxLxD + drop(h, deterministic=not train)
        h = nn.RMSNorm(name="norm_mlp")(x_BxLxD)
        gate_BxLxF = nn.Dense(self.mlp_dim, use_bias=False, name="wi_gate")(h)
        up_BxLxF = nn.Dense(self.mlp_dim, use_bias=False, name="wi_up")(h)
        h = nn.Dense(x_BxLxD.shape[-1], use_bias=False, name="wo")(nn.silu(gate_BxLxF) * up_BxLxF)
        return x_BxLxD + drop(h, deterministic=not train)


class RopeLM(nn.Module):
    """Causal LM: int32[B, L] token ids -> float32[B, L, V] next-token logits."""

    vocab_size: int
    num_layers: int
    width: int
    num_heads: int
    mlp_dim: int
    rope_base: float = 10_000.0
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, tokens_BxL, *, train: bool = False):
        x_BxLxD = nn.Embed(
            self.vocab_size,
            self.width,
            embedding_init=nn.initializers.normal(stddev=0.02),
            name="embed",
        )(tokens_BxL)
        for i in range(self.num_layers):
            x_BxLxD = _Block(
                self.num_heads, self.mlp_dim, self.rope_base, self.dropout_rate, name=f"block_{i}"
            )(x_BxLxD, train)
        x_BxLxD = nn.RMSNorm(name="norm_final")(x_BxLxD)
        return nn.Dense(self.vocab_size, use_bias=False, name="head")(x_BxLxD).astype(jnp.float32)


def build(model_cfg, vocab_size: int) -> models.ModelFunctions:
    """The entry's ``init`` and ``apply`` for a ``config.model`` block and vocabulary V."""
    return models.linen_functions(
        RopeLM(
            vocab_size=vocab_size,
            num_layers=model_cfg.num_layers,
            width=model_cfg.width,
            num_heads=model_cfg.num_heads,
            mlp_dim=model_cfg.mlp_dim,
            rope_base=model_cfg.rope_base,
            dropout_rate=model_cfg.dropout_rate,
        )
    )


def defaults(arg) -> ml_collections.ConfigDict:
    """``config.model`` of ``rope_lm`` (besides ``name``): tiny with ``runlocal``."""
    block = ml_collections.ConfigDict()
    # Tokens per example (subword tokens: about 2 bytes each with a 512-piece vocabulary).
    block.max_length = 64 if arg.runlocal else 128
    # Blocks, model width D, attention heads H (D / H per head, even) and gated-MLP width F.
    block.num_layers = 2 if arg.runlocal else 4
    block.width = 64 if arg.runlocal else 128
    block.num_heads = 4
    block.mlp_dim = 128 if arg.runlocal else 384
    # RoPE base: position t of pair j turns by t * rope_base^(-2j / K).
    block.rope_base = 10_000.0
    # Dropout on attention weights and residual branches.
    block.dropout_rate = 0.0
    return block


def partition(path: str, shape: tuple[int, ...], fsdp: int):
    """FSDP layout of the gated MLP, whatever its size: the two input kernels [D, F] split
    along F and the output kernel [F, D] along F, so one device holds matching slices
    (in the parameters and in every optimiser moment of the same path). Every other leaf
    (None): the package's default rule by shape."""
    if fsdp == 1 or len(shape) != 2:
        return None
    if path.endswith(("wi_gate/kernel", "wi_up/kernel")) and shape[1] % fsdp == 0:
        return P(None, "fsdp")
    if path.endswith("wo/kernel") and shape[0] % fsdp == 0:
        return P("fsdp", None)
    return None


SPEC = models.register(
    models.ModelSpec(
        NAME,
        build,
        "pre-norm Llama-style LM: RMSNorm, rotary positions, SwiGLU MLP, untied head",
        defaults,
        rules=(
            Rule("model.num_layers", *integer(1)),
            Rule("model.width", *integer(2)),
            Rule("model.num_heads", *integer(1)),
            Rule("model.mlp_dim", *integer(1)),
            Rule("model.rope_base", *number(1, lo_open=True)),
            Rule("model.dropout_rate", *number(0, 1, hi_open=True)),
            Rule(
                "model.width",
                lambda v, config: int(v) % (2 * int(config.model.num_heads)) == 0,
                "a multiple of 2 * config.model.num_heads (RoPE turns pairs of each head's "
                "width / num_heads dimensions)",
                reads=("model.num_heads",),
            ),
        ),
        partition=partition,
    )
)
