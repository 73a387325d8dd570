"""Synthetic data: byte-LM batches of random printable text with realistic padding.

The benchmarks need no dataset: costs depend on shapes, not on the text.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from adaptive_data import methods
from adaptive_data.data import tokenizer

# Synthetic corpus: two generic domains and the target (also present in the pool).
DOMAINS = ("generic_a", "generic_b", "target")


TARGET_DOMAIN = "target"


def synthetic_batch(
    rng: np.random.Generator,
    n: int,
    max_length: int,
    *,
    domain: int | None = None,
    target_share: float = 0.1,
) -> dict[str, np.ndarray]:
    """``n`` byte-LM examples of random printable text with realistic padding.

    Document lengths (bytes) are log-normal with median 0.6 * max_length (so about a
    fifth of the examples fill the window, the rest are padded; about 63% of the
    target positions are real tokens), clipped to
    [1, 4 * max_length]; layout as ``tokenizer.BYTES.lm_example`` (BOS, bytes, EOS, PAD).
    ``domain``: every example of this domain id; None: the synthetic pool (target with
    probability ``target_share``, else one of the generic domains).
    """
    lengths = np.exp(rng.normal(math.log(0.6 * max_length), 0.6, size=n))
    lengths = np.clip(lengths.astype(np.int64), 1, 4 * max_length)
    text = rng.integers(32, 127, size=(n, max_length + 1), dtype=np.int32)
    # seq = [BOS, bytes..., EOS, PAD...] (length max_length + 2); inputs = seq[:L],
    # targets = seq[1:L+1], and inputs end at the last byte (EOS is only a target).
    seq = np.full((n, max_length + 2), tokenizer.PAD_ID, np.int32)
    seq[:, 0] = tokenizer.BOS_ID
    positions = np.arange(1, max_length + 2)[None, :]
    seq[:, 1:] = np.where(positions <= lengths[:, None], text, tokenizer.PAD_ID)
    eos_at = lengths + 1
    rows = np.nonzero(eos_at < max_length + 2)[0]
    seq[rows, eos_at[rows]] = tokenizer.EOS_ID
    targets = seq[:, 1 : max_length + 1].copy()
    keep = np.arange(max_length)[None, :] <= lengths[:, None]
    inputs = np.where(keep, seq[:, :max_length], tokenizer.PAD_ID).astype(np.int32)
    mask = (targets != tokenizer.PAD_ID).astype(np.float32)
    num_bytes = np.sum(targets < 256, axis=1).astype(np.int32)
    if domain is None:
        target_id = DOMAINS.index(TARGET_DOMAIN)
        generic_ids = [i for i in range(len(DOMAINS)) if i != target_id]
        domains = np.where(
            rng.random(n) < target_share, target_id, rng.choice(generic_ids, size=n)
        ).astype(np.int32)
    else:
        domains = np.full((n,), domain, np.int32)
    return {
        "inputs": inputs,
        "targets": targets,
        "mask": mask,
        "num_bytes": num_bytes,
        "domain": domains,
    }


def method_batches(method: methods.Method, max_length: int, seed: int = 0):
    """Device batches for ``train_step``: one per stream, of the stream's batch size."""
    rng = np.random.default_rng(seed)
    out = {}
    for stream, (split, size) in method.streams.items():
        domain = DOMAINS.index(TARGET_DOMAIN) if split.startswith("target") else None
        out[stream] = jax.device_put(synthetic_batch(rng, size, max_length, domain=domain))
    return out
