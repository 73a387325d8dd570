"""The dsir method with the authors' word features (``dsir.features=words``) on real
pipeline batches: every example of the big batch carries the log weight of its whole
document (not of the truncated input), computed by a naive reference here (regex words,
sha256 buckets, Counter counts), and the step scores the big batch by it."""

import hashlib
import math
import re
from collections import Counter

import jax
import numpy as np
import pytest

from adaptive_data import methods, run_setup, train
from adaptive_data.data import pipeline, sources

from conftest import tiny_config

BUCKETS = 64


def _grams(text: str) -> list[str]:
    tokens = re.findall(r"\w+|[^\w\s]+", text.lower())
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def _bucket(gram: str) -> int:
    return int(hashlib.sha256(gram.encode()).hexdigest(), 16) % BUCKETS


def _naive_log_weight(text, target_texts, pool_texts) -> float:
    target = Counter(_bucket(g) for t in target_texts for g in _grams(t))
    pool = Counter(_bucket(g) for t in pool_texts for g in _grams(t))
    n_t, n_g = sum(target.values()), sum(pool.values())
    return sum(
        math.log(target[j] / n_t + 1e-8) - math.log(pool[j] / n_g + 1e-8)
        for j in map(_bucket, _grams(text))
    )


def test_word_dsir_scores_each_example_by_its_whole_document(tmp_path):
    # The pool's documents share their first 16 bytes (the model's max_length) and differ
    # after them; the target is about the second kind. (Enough documents that no split of
    # a file spec, 10% each, is empty whatever the temporary path that salts them.)
    prefix = "shared opening. "
    assert len(prefix.encode()) == 16
    generic_texts = [
        prefix + ("steel beam bolts nuts " if i % 2 else "apple pie crust sugar ") + str(i)
        for i in range(300)
    ]
    target_texts = [f"apple pie crust sugar and more apple pie {i}" for i in range(200)]
    (tmp_path / "generic.txt").write_text("".join(t + "\n" for t in generic_texts))
    (tmp_path / "target.txt").write_text("".join(t + "\n" for t in target_texts))
    config = tiny_config(
        "method=dsir,runlocal",
        **{
            "data.generic": f"file:{tmp_path / 'generic.txt'}",
            "data.target": f"file:{tmp_path / 'target.txt'}",
            "data.num_threads": 1,
            "dsir.features": "words",
            "dsir.word_buckets": BUCKETS,
        },
    )
    corpus = sources.load_corpus(config.data)
    setup = run_setup.build(config, domains=corpus.domains, target_domain=corpus.target_domain)
    records = {
        name: [corpus.splits[name][i] for i in range(len(corpus.splits[name]))]
        for name in ("generic_train", "target_train")
    }
    split_texts = {name: [r["text"].decode() for r in rs] for name, rs in records.items()}
    by_id = {r["doc_id"]: r["text"].decode() for r in records["generic_train"]}
    streams = train.train_streams(corpus, setup.method, config, setup.model.tokenizer)
    big = next(streams["generic"])
    expected = [
        _naive_log_weight(by_id[doc_id], split_texts["target_train"], split_texts["generic_train"])
        for doc_id in big["doc_id"]
    ]
    np.testing.assert_allclose(big["document_score"], expected, rtol=1e-5, atol=1e-4)
    # Same first 16 bytes, different documents: the scores tell the two kinds apart.
    is_apple = np.array(["apple" in by_id[d] for d in big["doc_id"]])
    assert 0 < is_apple.sum() < len(is_apple)
    assert big["document_score"][is_apple].min() > big["document_score"][~is_apple].max()
    # The step samples b of B by those scores: the selected b lean to the target's kind.
    state = setup.initial_state()
    batches = {
        "generic": pipeline.device_view(big),
        "target": pipeline.device_view(next(streams["target"])),
    }
    _, metrics = jax.jit(
        lambda s, b: methods.train_step(s, b, method=setup.method, active=True, outer_update=False)
    )(state, batches)
    assert float(metrics["select/score_selected"]) > float(metrics["select/score_all"])
    assert float(metrics["select/score_all"]) == pytest.approx(
        float(np.mean(big["document_score"])), rel=1e-5
    )
