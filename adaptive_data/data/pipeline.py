"""Grain input pipelines: tokenisation, truncation to max_length, shuffling, batching.

Training streams are infinite, seeded and sharded by process: each process reads only
its contiguous block of every global batch of one shuffled order (reshuffled every
epoch), so a step's global batch does not depend on the number of processes. Their
iterator state (a position) is saved in checkpoints, so a resumed run sees exactly the
batches it would have seen. Evaluation batches are a fixed, padded prefix of a split.

A batch is a dict of numpy arrays with leading dimension = batch size:
``inputs``/``targets`` int32[B, L], ``mask`` float32[B, L], ``num_bytes`` int32[B],
``domain`` int32[B] (index into ``Corpus.domains``), ``doc_id`` (str[B], host only),
and ``document_score`` float32[B] when a training stream is given a ``score_document``
(``Method.document_scorer``). Examples are laid out by a ``data.tokenizer.Tokenizer``
(``config.data.tokenizer``): BOS, the text's tokens, EOS, then PAD, whatever the tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grain
import numpy as np

from adaptive_data.data.tokenizer import Tokenizer

HOST_ONLY_KEYS = ("doc_id",)


class _Encode(grain.transforms.Map):
    """Record ``{"text", "domain", "doc_id"}`` -> one truncated LM example."""

    def __init__(
        self,
        domains: tuple[str, ...],
        max_length: int,
        tokenizer: Tokenizer,
        score_document: Callable[[Any], float] | None = None,
    ):
        self._domain_ids = {name: i for i, name in enumerate(domains)}
        self._max_length = max_length
        self._tokenizer = tokenizer
        self._score_document = score_document

    def map(self, record):
        example = self._tokenizer.lm_example(record["text"], self._max_length)
        domain = record["domain"]
        if domain not in self._domain_ids:
            raise ValueError(
                f"Document {record['doc_id']!r} has domain {domain!r}, which is not "
                f"in the corpus domains {sorted(self._domain_ids)}."
            )
        example["domain"] = np.int32(self._domain_ids[domain])
        example["doc_id"] = np.asarray(record["doc_id"], dtype=object)
        if self._score_document is not None:
            example["document_score"] = np.float32(self._score_document(record))
        return example


def train_stream(
    source,
    *,
    domains,
    max_length: int,
    tokenizer: Tokenizer,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 2,
    score_document: Callable[[Any], float] | None = None,
):
    """Returns an infinite grain IterDataset of this process's batches.

    The global batch of step t is elements ``[t * G, (t + 1) * G)`` of one seeded
    shuffled stream (G = ``global_batch_size``, reshuffled every epoch); process p of P
    reads only its contiguous block ``[t * G + p * G / P, t * G + (p + 1) * G / P)``, so
    the global batch and its order do not depend on the number of processes.
    ``score_document(record) -> float``: each example's ``document_score`` (None: none).
    """
    if global_batch_size % process_count:
        raise ValueError(
            f"Global batch size {global_batch_size} is not divisible by the "
            f"number of processes {process_count}."
        )
    ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
    ds = ds.map(_Encode(domains, max_length, tokenizer, score_document))
    ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
    ds = ds[process_index::process_count]
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4))


def eval_batches(
    source, *, domains, max_length: int, tokenizer: Tokenizer, batch_size: int, max_examples: int
) -> list[dict[str, np.ndarray]]:
    """The first ``max_examples`` documents of ``source`` as a list of full batches.

    The last batch is padded with all-padding examples (mask 0, num_bytes 0), which add
    nothing to summed losses. Deterministic: no shuffling.
    """
    n = min(len(source), max_examples)
    encode = _Encode(domains, max_length, tokenizer)
    examples = [encode.map(source[i]) for i in range(n)]
    pad = (-n) % batch_size
    if pad:
        blank = {k: np.zeros_like(v) for k, v in examples[0].items()}
        blank["inputs"] = np.full_like(examples[0]["inputs"], tokenizer.pad_id)
        blank["targets"] = np.full_like(examples[0]["targets"], tokenizer.pad_id)
        blank["doc_id"] = np.asarray("", dtype=object)
        examples += [blank] * pad
    return [
        {k: np.stack([e[k] for e in examples[i : i + batch_size]]) for k in examples[0]}
        for i in range(0, len(examples), batch_size)
    ]


def device_view(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drops the host-only fields (document ids) before a batch goes to the devices."""
    return {k: v for k, v in batch.items() if k not in HOST_ONLY_KEYS}
