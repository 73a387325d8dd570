"""Byte-level tokenizer: 256 byte values plus BOS, EOS and PAD.

Every UTF-8 byte is its own token (ids 0..255), so any text round-trips exactly and no
vocabulary file is needed. A document of n bytes becomes the sequence
``[BOS, b_1, ..., b_n, EOS]``; a language-model example of length L predicts
``targets = seq[1:L+1]`` from ``inputs = seq[0:L]``.
"""

from __future__ import annotations

import numpy as np

BOS_ID = 256
EOS_ID = 257
PAD_ID = 258
VOCAB_SIZE = 259


def to_bytes(text: str | bytes) -> bytes:
    """Returns the UTF-8 bytes of ``text`` (bytes are passed through unchanged)."""
    if isinstance(text, bytes):
        return text
    if isinstance(text, np.bytes_):
        return bytes(text)
    return str(text).encode("utf-8", errors="replace")


def encode(text: str | bytes) -> np.ndarray:
    """Returns int32[n + 2]: BOS, the n UTF-8 bytes of ``text``, EOS."""
    data = np.frombuffer(to_bytes(text), dtype=np.uint8).astype(np.int32)
    return np.concatenate([[BOS_ID], data, [EOS_ID]]).astype(np.int32)


def decode(ids) -> str:
    """Inverse of ``encode``: drops BOS/EOS/PAD and decodes the bytes (invalid UTF-8 replaced)."""
    ids = np.asarray(ids)
    data = ids[(ids >= 0) & (ids < 256)].astype(np.uint8).tobytes()
    return data.decode("utf-8", errors="replace")


def lm_example(text: str | bytes, max_length: int) -> dict[str, np.ndarray]:
    """Returns one truncated, padded language-model example of length ``max_length``.

    Keys: ``inputs`` int32[L] (starts with BOS), ``targets`` int32[L] (inputs shifted by
    one), ``mask`` float32[L] (1 where ``targets`` is a real token, byte or EOS) and
    ``num_bytes`` int32 (how many target tokens are bytes, the denominator of bits/byte).
    """
    tokens = encode(text)[: max_length + 1]
    inputs = np.full(max_length, PAD_ID, dtype=np.int32)
    targets = np.full(max_length, PAD_ID, dtype=np.int32)
    inputs[: len(tokens) - 1] = tokens[:-1]
    targets[: len(tokens) - 1] = tokens[1:]
    mask = (targets != PAD_ID).astype(np.float32)
    num_bytes = np.int32(np.sum(targets < 256))
    return {"inputs": inputs, "targets": targets, "mask": mask, "num_bytes": num_bytes}
