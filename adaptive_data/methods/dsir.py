"""``dsir``: importance resampling (Xie et al. 2023); b of the big batch drawn by
p_target(x) / p_generic(x) of a bag of hashed unigrams and bigrams (``core/dsir.py``), in
one of two forms of features (``config.dsir.features``):

- ``bytes`` (default): a byte-level variant, not the authors' form. The features are
  the model's byte tokens of each example's truncated input (``model.max_length``
  bytes) hashed into ``dsir.num_buckets`` buckets, with additive smoothing
  ``dsir.smoothing``; p_t counts target_train once before training, p_g counts every
  big batch online, on device. With few target documents it finds the target domain
  far better than words do (docs/algorithms.md, "dsir").
- ``words``: the authors' form, as their ``data-selection`` package computes it:
  lower-cased WordPunct words of the whole document text, unigrams and bigrams hashed
  into ``dsir.word_buckets`` (10,000) buckets, p_t over every target_train document and
  p_g over the generic_train pool (up to the authors' budget of 100,000 n-grams per
  bucket), both counted on the host once per run start, before training; each
  document's log weight is computed on the host as it is read
  (``Method.document_scorer``). Checked against ``data-selection`` 1.0.3 by
  ``experiments/dsir_reference_check.py``.
"""

import dataclasses

import ml_collections

from adaptive_data.config_rules import Rule, integer, number, one_of
from adaptive_data.core import dsir
from adaptive_data.methods.builders import selecting_method
from adaptive_data.methods.registry import MethodSpec, register
from adaptive_data.methods.types import OuterState

FEATURES = ("bytes", "words")


def _defaults(arg) -> ml_collections.ConfigDict:
    del arg
    block = ml_collections.ConfigDict()
    # bytes (byte n-grams of the truncated input, on device: a byte-level variant) |
    # words (the authors' form: word n-grams of the whole document, on the host).
    block.features = "bytes"
    # Hash buckets of the byte unigrams + bigrams, and the additive smoothing of the
    # target and generic feature distributions (features=bytes).
    block.num_buckets = 4096
    block.smoothing = 1.0
    # Hash buckets of the word unigrams + bigrams (features=words; the authors' 10,000).
    block.word_buckets = dsir.WORD_BUCKETS
    return block


def _text(record) -> str:
    text = record["text"]
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)


def _word_document_scorer(num_buckets: int):
    """``Method.document_scorer`` of the word features: counts target_train and the
    pool once, then scores each document by its whole text (cached by document id, so
    a document read again in a later epoch is not tokenised again)."""

    def document_scorer(splits):
        def texts(split):
            source = splits[split]
            return (_text(source[i]) for i in range(len(source)))

        log_weight = dsir.word_log_weights_fn(
            texts("target_train"), texts("generic_train"), num_buckets
        )
        cache: dict[str, float] = {}

        def score_document(record) -> float:
            doc_id = record["doc_id"]
            if doc_id not in cache:
                cache[doc_id] = log_weight(_text(record))
            return cache[doc_id]

        return score_document

    return document_scorer


def _build_words(config, context):
    def score(params, method_state, big, target, key):
        del params, method_state, target, key
        return big["document_score"]  # float32[B] log w of each whole document

    method = selecting_method(config, context, "dsir", score=score, strategy="sample")
    return dataclasses.replace(
        method, document_scorer=_word_document_scorer(int(config.dsir.word_buckets))
    )


def _build_bytes(config, context):
    d = config.dsir
    num_buckets, smoothing = int(d.num_buckets), float(d.smoothing)
    pad_id = context.model.tokenizer.pad_id
    outer = dsir.dsir(num_buckets, smoothing=smoothing, pad_id=pad_id)

    def init_state(key, params) -> OuterState:
        del key
        counts = dsir.zero_counts(num_buckets)
        return OuterState(counts, outer.init(counts, params))

    def load_state(method_state: OuterState, target_train) -> OuterState:
        # p_t: every target_train example counted once, before training.
        target_M = dsir.count_ngrams(target_train(), num_buckets, pad_id=pad_id)
        return method_state._replace(phi=method_state.phi._replace(target_M=target_M))

    def score(params, method_state: OuterState, big, target, key):
        del params, target, key
        return dsir.dsir_log_weights(
            method_state.phi, big["inputs"], smoothing=smoothing, pad_id=pad_id
        )

    method = selecting_method(
        config,
        context,
        "dsir",
        score=score,
        strategy="sample",
        outer=outer,
        outer_batch="big",
        init_state=init_state,
    )
    return dataclasses.replace(method, load_state=load_state)


def _build(config, context):
    build = _build_words if config.dsir.features == "words" else _build_bytes
    return build(config, context)


SPEC = register(
    MethodSpec(
        "dsir",
        _build,
        "importance resampling on hashed uni+bigram features (byte n-grams of the input, "
        "or the authors' word n-grams of the document): b of B drawn by "
        "p_target(x) / p_generic(x), target_train counted once up front",
        scorer="ngram",
        defaults=_defaults,
        rules=(
            Rule("dsir.features", *one_of(FEATURES)),
            Rule("dsir.num_buckets", *integer(1)),
            Rule("dsir.smoothing", *number(0, lo_open=True)),
            Rule("dsir.word_buckets", *integer(1)),
        ),
    )
)
