"""DSIR's word features (``dsir.features=words``) against the authors' ``data-selection``
package, and the byte-level variant (the default) beside them, on the embedded corpus.

For each task of the scarce benchmark preset (its pool shares and its 16 target_train
documents), on the first ``--pool_documents`` documents of generic_train:

* reference: ``data_selection.HashedNgramDSIR`` (version 1.0.3; ``pip install
  data-selection==1.0.3``, not a dependency of the project) fitted on those pool
  documents and the target_train documents, its log importance weights of the pool
  documents;
* words: ``core.dsir.word_log_weights_fn`` (what ``dsir.features=words`` scores with)
  on the same texts;
* bytes: the byte n-gram weights (``dsir.features=bytes``): target_train and the pool
  documents counted as the model sees them (the preset's ``max_length`` bytes), i.e.
  the limit of the online pool counts.

Reported: Spearman rank correlation with the reference, the largest absolute
difference of the log weights (words), and the share of target-domain documents in each
weighting's top quarter of the pool (the pool's own share beside them).

Usage::

    python experiments/dsir_reference_check.py [--pool_documents=6000]

Writes ``experiments/results/dsir_reference_check.md``. About a minute per task on one
CPU core.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

import jax.numpy as jnp
import numpy as np
import scipy.stats

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import benchmark_setup  # noqa: E402
from data_selection import HashedNgramDSIR  # noqa: E402

from adaptive_data import config_args  # noqa: E402
from adaptive_data.core import dsir  # noqa: E402
from adaptive_data.data import sources, tokenizer  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "dsir_reference_check.md"
PRESET = benchmark_setup.PRESETS["scarce"]


def _texts(source, n: int) -> tuple[list[str], list[str]]:
    records = [source[i] for i in range(min(n, len(source)))]
    texts = [r["text"].decode("utf-8", errors="replace") for r in records]
    domains = [
        r["domain"].decode() if isinstance(r["domain"], bytes) else r["domain"] for r in records
    ]
    return texts, domains


def reference_log_weights(pool: list[str], target: list[str], workdir: pathlib.Path):
    """The authors' package: log importance weights of ``pool`` (float[N])."""
    for name, texts in (("pool", pool), ("target", target)):
        with open(workdir / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    selector = HashedNgramDSIR(
        raw_datasets=[str(workdir / "pool.jsonl")],
        target_datasets=[str(workdir / "target.jsonl")],
        cache_dir=str(workdir / "cache"),
        num_proc=1,
        ngrams=2,
        num_buckets=dsir.WORD_BUCKETS,
    )
    selector.fit_importance_estimator(num_tokens_to_fit="auto")
    selector.compute_importance_weights()
    chunks = sorted(selector.log_importance_weights_dir.glob("*.npy"), key=lambda p: int(p.stem))
    return np.concatenate([np.load(p) for p in chunks])


def byte_log_weights(pool: list[str], target: list[str], max_length: int, num_buckets: int):
    def inputs(texts):
        return jnp.asarray(
            np.stack([tokenizer.BYTES.lm_example(t.encode(), max_length)["inputs"] for t in texts])
        )

    pool_BL = inputs(pool)
    counts = dsir.DsirCounts(
        dsir.total_ngram_counts(inputs(target), num_buckets),
        dsir.total_ngram_counts(pool_BL, num_buckets),
    )
    return np.asarray(dsir.dsir_log_weights(counts, pool_BL, smoothing=1.0))


def top_quarter_share(log_weights, is_target) -> float:
    top = np.argsort(-log_weights, kind="stable")[: len(log_weights) // 4]
    return float(np.mean(is_target[top]))


def check_task(task: str, pool_documents: int, workdir: pathlib.Path) -> dict:
    config = config_args.load_config(
        f"configs/default.py:method=dsir,target={task},size={PRESET.size}"
    )
    config.data.max_target_train = PRESET.max_target_train
    config.data.pool_target_share = PRESET.pool_target_shares[task]
    corpus = sources.load_corpus(config.data)
    pool, pool_domains = _texts(corpus.splits["generic_train"], pool_documents)
    target, _ = _texts(corpus.splits["target_train"], len(corpus.splits["target_train"]))
    reference = reference_log_weights(pool, target, workdir)
    log_weight = dsir.word_log_weights_fn(target, pool)
    words = np.array([log_weight(t) for t in pool])
    bytes_ = byte_log_weights(
        pool, target, int(config.model.max_length), int(config.dsir.num_buckets)
    )
    is_target = np.array([d == corpus.target_domain for d in pool_domains])
    return {
        "task": task,
        "pool": len(pool),
        "target": len(target),
        "max_length": int(config.model.max_length),
        "spearman_words": scipy.stats.spearmanr(words, reference).statistic,
        "max_abs_diff_words": float(np.max(np.abs(words - reference))),
        "spearman_bytes": scipy.stats.spearmanr(bytes_, reference).statistic,
        "pool_share": float(np.mean(is_target)),
        "top_reference": top_quarter_share(reference, is_target),
        "top_words": top_quarter_share(words, is_target),
        "top_bytes": top_quarter_share(bytes_, is_target),
    }


def report(rows: list[dict], pool_documents: int) -> str:
    lines = [
        "# DSIR: word features against the authors' package, byte features beside them",
        "",
        "Written by `python experiments/dsir_reference_check.py "
        f"--pool_documents={pool_documents}` (data-selection 1.0.3, `HashedNgramDSIR`, "
        f"{dsir.WORD_BUCKETS} buckets, unigrams + bigrams). Per task of the scarce preset: "
        "the first documents of generic_train as the pool, the task's target_train as "
        "the target; Spearman correlation of each weighting's log importance weights "
        "with the reference's over the pool documents; share of target-domain documents "
        "in each weighting's top quarter of the pool.",
        "",
        "| task | pool docs | target docs | Spearman words | max abs diff words | "
        "Spearman bytes | pool target share | top quarter: reference | words | bytes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['pool']} | {r['target']} | {r['spearman_words']:.6f} | "
            f"{r['max_abs_diff_words']:.2e} | {r['spearman_bytes']:.3f} | "
            f"{r['pool_share']:.1%} | {r['top_reference']:.1%} | {r['top_words']:.1%} | "
            f"{r['top_bytes']:.1%} |"
        )
    lines += [
        "",
        f"Bytes: the model's byte tokens of the first {rows[0]['max_length']} bytes of each "
        "document (the preset's `max_length`), 4096 buckets, additive smoothing 1; the pool "
        "counted over the same documents.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool_documents", type=int, default=6000)
    args = parser.parse_args(argv)
    rows = []
    for task in PRESET.targets:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(check_task(task, args.pool_documents, pathlib.Path(tmp)))
        print(json.dumps(rows[-1]))
    RESULTS.write_text(report(rows, args.pool_documents))
    print(f"Wrote {RESULTS}.")


if __name__ == "__main__":
    main()
