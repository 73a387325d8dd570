"""Model FLOPs per token of the TransformerLM, and the hardware peak that MFU divides by."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from adaptive_data.data import tokenizer

from .timing import median, time_calls


def lm_flops_per_token(model_cfg, vocab_size: int = tokenizer.VOCAB_SIZE) -> dict[str, float]:
    """Training FLOPs per token of the TransformerLM (see experiments/README.md).

    Matmul weights N_mm = layers * (4 D^2 + 2 D F) + D V: per layer the Q, K, V and
    output projections (4 D^2) and the two MLP matrices (2 D F); plus the output
    projection onto the V byte logits (the shared embedding used as the LM head; the
    input lookup is a gather, no FLOPs). Biases, LayerNorm, GELU, softmax are ignored.
    Attention: per token and layer, QK^T and AV against L positions cost 2 * 2 L D in
    the forward pass (full L x L, as the implementation computes it before masking).
    Forward = 2 N_mm + 4 layers L D; training (forward + backward) = 3x forward:

        flops/token = 6 N_mm + 12 * layers * L * D.
    """
    layers, d, f, length = (
        model_cfg.num_layers,
        model_cfg.width,
        model_cfg.mlp_dim,
        model_cfg.max_length,
    )
    n_mm = layers * (4 * d * d + 2 * d * f) + d * vocab_size
    dense = 6.0 * n_mm
    attention = 12.0 * layers * length * d
    return {
        "n_matmul_params": float(n_mm),
        "dense": dense,
        "attention": attention,
        "total": dense + attention,
    }


# Dense (no sparsity) peak TFLOP/s per device kind and matmul dtype, from the vendors'
# data sheets (SXM parts). float32 matmuls on NVIDIA GPUs run as TF32 under JAX's
# default precision, so float32 maps to the TF32 tensor-core peak.
PEAK_TFLOPS = {
    "h200": {"bfloat16": 989.0, "float32": 494.0},
    "h100": {"bfloat16": 989.0, "float32": 494.0},
    "a100": {"bfloat16": 312.0, "float32": 156.0},
    "l4": {"bfloat16": 121.0, "float32": 60.0},
}


def spec_peak_tflops(device_kind: str, dtype: str) -> float | None:
    kind = device_kind.lower()
    for key, table in PEAK_TFLOPS.items():
        if key in kind:
            return table[dtype]
    return None


def measure_matmul_tflops(dtype: str, *, n: int | None = None, repeats: int = 5) -> float:
    """Measured rate (TFLOP/s) of an n x n x n ``jnp.dot`` in ``dtype`` on device 0."""
    if n is None:
        n = 1024 if jax.default_backend() == "cpu" else 8192
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.dtype(dtype))
    b = jax.random.normal(key_b, (n, n), jnp.dtype(dtype))
    dot = jax.jit(jnp.dot)
    times = time_calls(lambda: dot(a, b), warmup=2, repeats=repeats)
    return 2.0 * n**3 / median(times) / 1e12
