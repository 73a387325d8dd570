"""The embedded multi-domain text corpus, its target tasks, and its TFDS builder.

The corpus ships inside the package (``adaptive_data/data/embedded/``: one ``<domain>.jsonl.xz``
per domain, ``manifest.json``, ``PROVENANCE.md``; made by ``scripts/build_embedded_corpus.py``
from pinned Debian packages), so everything here works offline and without TensorFlow.

A *task* names a target domain. Its splits, all pairwise disjoint by ``doc_id``:

* ``train``: the generic pool, i.e. every document of every other domain (less ``validation``),
  plus, when ``pool_target_share > 0``, target-domain documents making up that fraction of the
  split's text bytes;
* ``validation``: about ``validation_fraction`` (2%) of the pool's documents, generic held-out;
* ``target_train`` (at most ``max_target_train`` documents), ``target_valid`` and
  ``target_test``: drawn from the target domain; target documents placed in the pool are never
  in these.

Every assignment is a function of ``sha256`` of the ``doc_id`` (with a fixed salt), never of
Python's randomised ``hash`` or of file order, so two preparations give identical splits.
``target_test`` and ``target_valid`` do not depend on the knobs; ``target_train`` with a
smaller ``max_target_train`` is a prefix-subset of a larger one.

Public API::

    DOMAINS                      # sorted tuple of all domain names (domain -> index)
    SPLITS                       # the five split names
    TASKS                        # {name: Task}
    load_split(task, split, *, pool_target_share=None, max_target_train=1000, data_dir=None)
    task_info(task, *, pool_target_share=None, max_target_train=1000) -> dict
    split_doc_ids(task, *, pool_target_share=None, max_target_train=1000) -> {split: doc_ids}
    make_config(task, *, pool_target_share=None, max_target_train=1000) -> EmbeddedCorpusConfig
    AdaptiveDataEmbedded         # the tfds GeneratorBasedBuilder
    iter_documents(domain)       # raw records of one shipped domain file
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import lzma
import math
import operator
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from adaptive_data.data import prepared

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
MANIFEST_PATH = EMBEDDED_DIR / "manifest.json"

DOMAINS: tuple[str, ...] = (
    "computing",
    "dictionary",
    "fortunes",
    "jargon",
    "manpages",
    "python",
    "russian",
    "wordnet",
)

SPLITS: tuple[str, ...] = ("train", "validation", "target_train", "target_valid", "target_test")

# Major version of the dataset: bump when the split assignment below changes. The minor
# version is the corpus revision from manifest.json (bumped by the build script whenever the
# shipped text changes), so a prepared cache is never reused for different content.
SPLIT_ALGORITHM_VERSION = 1

DEFAULT_MAX_TARGET_TRAIN = 1000
# The pool's target byte share must land within this relative distance of the request.
SHARE_RELATIVE_TOLERANCE = 0.05


@dataclasses.dataclass(frozen=True)
class Task:
    """A target task: which domain is the target and how its splits are sized.

    ``target_domain=None`` makes a control drawn from the pool itself: the target splits are
    a held-out sample of the documents of ``control_domains`` (empty: every domain), in a
    hash order salted by the task's name, and the pool is every document not taken for
    them. With every domain the target is the pool's own mixture, so no selection of pool
    documents can fit it better than a uniform draw (a negative control); with some domains
    it is a part of the pool mixed at the pool's document proportions. ``pool_target_share``
    has no effect on a control (its domains are already in the pool).
    """

    name: str
    target_domain: str | None
    description: str
    default_pool_target_share: float
    control_domains: tuple[str, ...] = ()
    num_target_valid: int = 400
    num_target_test: int = 400
    validation_fraction: float = 0.02


TASKS: dict[str, Task] = {
    "python": Task(
        name="python",
        target_domain="python",
        description=(
            "Target: Python standard-library functions and classes. The target domain also "
            "sits in the generic pool at a small share of its bytes, for selection to find."
        ),
        default_pool_target_share=0.02,
    ),
    "jargon": Task(
        name="jargon",
        target_domain="jargon",
        description=(
            "Target: Jargon File entries. Absent from the pool, but related domains "
            "(FOLDOC computing dictionary, GCIDE, WordNet) are present."
        ),
        default_pool_target_share=0.0,
    ),
    "russian": Task(
        name="russian",
        target_domain="russian",
        description=(
            "Target: Russian fortunes (Cyrillic), unlike anything in the all-English/code "
            "pool. Absent from the pool."
        ),
        default_pool_target_share=0.0,
    ),
    "computing": Task(
        name="computing",
        target_domain="computing",
        description=(
            "Target: FOLDOC computing-dictionary entries. Absent from the pool by default; "
            "jargon and the man pages are related."
        ),
        default_pool_target_share=0.0,
    ),
    "dictionary": Task(
        name="dictionary",
        target_domain="dictionary",
        description=(
            "Target: GCIDE general-English dictionary entries. Absent from the pool by default; "
            "WordNet entries are close."
        ),
        default_pool_target_share=0.0,
    ),
    "fortunes": Task(
        name="fortunes",
        target_domain="fortunes",
        description=(
            "Target: English fortunes (quotes, jokes, short prose). Absent from the pool by "
            "default; at most about 0.06 of the pool's bytes can be made of them."
        ),
        default_pool_target_share=0.0,
    ),
    "manpages": Task(
        name="manpages",
        target_domain="manpages",
        description=(
            "Target: sections of Linux man pages (troff source). Absent from the pool by default."
        ),
        default_pool_target_share=0.0,
    ),
    "wordnet": Task(
        name="wordnet",
        target_domain="wordnet",
        description=(
            "Target: WordNet 3.0 entries. Absent from the pool by default; GCIDE dictionary "
            "entries are close. At most about 0.08 of the pool's bytes can be made of them."
        ),
        default_pool_target_share=0.0,
    ),
    "pool": Task(
        name="pool",
        target_domain=None,
        description=(
            "Negative control: the target is a held-out sample of the pool's own mixture of all "
            "eight domains, so selection cannot beat a uniform draw. pool_target_share has no "
            "effect."
        ),
        default_pool_target_share=0.0,
    ),
    **{
        name: Task(
            name=name,
            target_domain=None,
            description=(
                "Negative control: another held-out sample (its own hash salt) of the pool's "
                "own mixture of all eight domains. pool_target_share has no effect."
            ),
            default_pool_target_share=0.0,
        )
        for name in ("pool_b", "pool_c")
    },
    **{
        f"pool_{name}": Task(
            name=f"pool_{name}",
            target_domain=None,
            description=(
                f"Control drawn from the pool: the target is a held-out sample of the "
                f"{', '.join(domains)} documents mixed at their pool proportions; the pool "
                "holds every document of every domain not taken for the target splits. "
                "pool_target_share has no effect."
            ),
            default_pool_target_share=0.0,
            control_domains=domains,
        )
        for name, domains in (
            ("code", ("manpages", "python")),
            ("reference", ("dictionary", "wordnet")),
            ("prose", ("fortunes", "russian")),
            ("computing", ("computing", "jargon", "manpages")),
            ("english", ("dictionary", "fortunes", "wordnet")),
        )
    },
}


# ---------------------------------------------------------------------------------------------
# Shipped corpus
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def manifest() -> dict[str, Any]:
    """The shipped ``manifest.json`` (domains, counts, sha256, package versions)."""
    return json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))


def dataset_version() -> str:
    """``"<split algorithm>.<corpus revision>.0"``: moves with the split rule or the text."""
    return f"{SPLIT_ALGORITHM_VERSION}.{int(manifest()['corpus_revision'])}.0"


def iter_documents(domain: str) -> Iterator[dict[str, str]]:
    """Yields ``{"doc_id", "domain", "text"}`` for each document of one shipped domain."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; valid domains: {', '.join(DOMAINS)}")
    path = EMBEDDED_DIR / manifest()["domains"][domain]["file"]
    with lzma.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


@functools.lru_cache(maxsize=1)
def _corpus() -> dict[str, tuple[tuple[str, str, int], ...]]:
    """{domain: ((doc_id, text, utf8_bytes), ...)} for the whole corpus, sorted by doc_id."""
    out = {}
    for domain in DOMAINS:
        docs = []
        for rec in iter_documents(domain):
            if rec["domain"] != domain:
                raise ValueError(
                    f"record {rec['doc_id']!r} in the {domain} file says {rec['domain']!r}"
                )
            docs.append((rec["doc_id"], rec["text"], len(rec["text"].encode("utf-8"))))
        docs.sort()
        out[domain] = tuple(docs)
    return out


# ---------------------------------------------------------------------------------------------
# Split assignment
# ---------------------------------------------------------------------------------------------


def _digest(salt: str, doc_id: str) -> bytes:
    return hashlib.sha256(f"{salt}\x00{doc_id}".encode()).digest()


def _unit(salt: str, doc_id: str) -> float:
    """A deterministic pseudo-uniform number in [0, 1) for ``doc_id``."""
    return int.from_bytes(_digest(salt, doc_id)[:8], "big") / 2.0**64


def _resolve(
    task: str, pool_target_share: float | None, max_target_train: int
) -> tuple[Task, float, int]:
    """Validates the knobs; returns (task spec, share rounded to 1e-6, max_target_train)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(sorted(TASKS))}")
    spec = TASKS[task]
    share = spec.default_pool_target_share if pool_target_share is None else pool_target_share
    try:
        share = float(share)
    except (TypeError, ValueError):
        raise ValueError(f"pool_target_share must be a number, got {pool_target_share!r}") from None
    if not math.isfinite(share) or not 0.0 <= share < 1.0:
        raise ValueError(f"pool_target_share must be in [0, 1), got {pool_target_share!r}")
    share = round(share, 6)  # what the config name records; keeps names and contents in step
    try:
        mtt = operator.index(max_target_train)  # ints, numpy ints; not floats
    except TypeError:
        mtt = None
    if mtt is None or isinstance(max_target_train, bool) or mtt < 1:
        raise ValueError(f"max_target_train must be a positive int, got {max_target_train!r}")
    return spec, share, mtt


@dataclasses.dataclass(frozen=True)
class _Doc:
    doc_id: str
    domain: str
    text: str
    nbytes: int


@functools.lru_cache(maxsize=16)
def _plan(task: str, share: float, max_target_train: int) -> dict[str, tuple[_Doc, ...]]:
    """{split: docs sorted by doc_id}. Arguments must already be validated by ``_resolve``."""
    spec = TASKS[task]
    corpus = _corpus()
    target = spec.target_domain
    splits: dict[str, list[_Doc]] = {name: [] for name in SPLITS}

    def in_validation(doc_id: str) -> bool:
        return _unit("validation", doc_id) < spec.validation_fraction

    # Target documents in a fixed hash order: test, then valid, then train, then the rest
    # (pool candidates). A control (target None) draws them from its control domains.
    target_domains = (spec.control_domains or DOMAINS) if target is None else (target,)
    target_docs = sorted(
        (_Doc(i, domain, t, n) for domain in target_domains for i, t, n in corpus[domain]),
        key=lambda d: _digest(f"target/{target or spec.name}", d.doc_id),
    )
    n_test, n_valid = spec.num_target_test, spec.num_target_valid
    if len(target_docs) < n_test + n_valid + 1:
        raise ValueError(
            f"target domain {target!r} has {len(target_docs)} documents, fewer than the "
            f"{n_test + n_valid + 1} needed for target_test, target_valid and target_train"
        )
    splits["target_test"] = target_docs[:n_test]
    splits["target_valid"] = target_docs[n_test : n_test + n_valid]
    end_train = n_test + n_valid + max_target_train
    splits["target_train"] = target_docs[n_test + n_valid : end_train]
    candidates = target_docs[end_train:]

    # Generic pool: every other domain (for a control: every document not taken for the
    # target splits), split into train / validation by hash.
    if target is None:
        taken = {d.doc_id for d in target_docs[:end_train]}
        generic = [
            _Doc(doc_id, domain, text, nbytes)
            for domain in DOMAINS
            for doc_id, text, nbytes in corpus[domain]
            if doc_id not in taken
        ]
        candidates = []
    else:
        generic = [
            _Doc(doc_id, domain, text, nbytes)
            for domain in DOMAINS
            if domain != target
            for doc_id, text, nbytes in corpus[domain]
        ]
    for doc in generic:
        splits["validation" if in_validation(doc.doc_id) else "train"].append(doc)

    # Target docs in the pool: scan candidates in hash order (each goes to train or validation
    # by the same rule as generic docs) until the train split's target bytes reach `share` of
    # its bytes. A train-bound doc that would overshoot is taken only if that lands nearer the
    # goal, else skipped (smaller ones later fill the gap), so the share is met closely.
    if share > 0.0 and target is not None:
        generic_bytes = sum(d.nbytes for d in splits["train"])
        needed = share / (1.0 - share) * generic_bytes
        got = 0
        chosen: list[_Doc] = []
        for doc in candidates:
            if got >= needed:
                break
            if in_validation(doc.doc_id):
                chosen.append(doc)
            elif got + doc.nbytes <= needed or got + doc.nbytes - needed < needed - got:
                chosen.append(doc)
                got += doc.nbytes
        if abs(got - needed) > SHARE_RELATIVE_TOLERANCE * needed:
            available = sum(d.nbytes for d in candidates if not in_validation(d.doc_id))
            raise ValueError(
                f"pool_target_share={share} is impossible for task {task!r}: it needs about "
                f"{int(needed)} bytes of {target!r} documents in the train split (met within "
                f"{SHARE_RELATIVE_TOLERANCE:.0%}), but only {available} bytes "
                f"({len(candidates)} documents) of that domain remain after reserving "
                f"target_test ({n_test}), target_valid ({n_valid}) and target_train "
                f"({len(splits['target_train'])} docs, max_target_train={max_target_train}). "
                "Lower pool_target_share or max_target_train."
            )
        for doc in chosen:
            splits["validation" if in_validation(doc.doc_id) else "train"].append(doc)

    return {name: tuple(sorted(docs, key=lambda d: d.doc_id)) for name, docs in splits.items()}


def split_doc_ids(
    task: str,
    *,
    pool_target_share: float | None = None,
    max_target_train: int = DEFAULT_MAX_TARGET_TRAIN,
) -> dict[str, tuple[str, ...]]:
    """{split: sorted doc_ids} for a task, computed from the shipped files (no TFDS)."""
    spec, share, mtt = _resolve(task, pool_target_share, max_target_train)
    plan = _plan(spec.name, share, mtt)
    return {name: tuple(d.doc_id for d in plan[name]) for name in SPLITS}


def task_info(
    task: str,
    *,
    pool_target_share: float | None = None,
    max_target_train: int = DEFAULT_MAX_TARGET_TRAIN,
) -> dict[str, Any]:
    """Describes a task's splits without preparing anything (computed from the shipped files).

    Returns a dict with ``task``, ``target_domain``, ``domains`` (= ``DOMAINS``),
    ``pool_target_share`` (requested, after defaults), ``actual_pool_target_share`` (target
    bytes / train bytes), ``max_target_train``, ``config_name``, ``version``,
    ``split_num_docs`` and ``split_text_bytes`` ({split: int}), ``pool_domain_byte_shares``
    and ``pool_domain_num_docs`` ({domain: value} over the train split, every domain listed).
    """
    spec, share, mtt = _resolve(task, pool_target_share, max_target_train)
    plan = _plan(spec.name, share, mtt)
    train = plan["train"]
    train_bytes = sum(d.nbytes for d in train)
    by_domain = {d: 0 for d in DOMAINS}
    docs_by_domain = {d: 0 for d in DOMAINS}
    for doc in train:
        by_domain[doc.domain] += doc.nbytes
        docs_by_domain[doc.domain] += 1
    shares = {d: (b / train_bytes if train_bytes else 0.0) for d, b in by_domain.items()}
    # A control's target is drawn from its domains of the pool (all: the whole pool).
    if spec.target_domain is None:
        target_share = sum(shares[d] for d in spec.control_domains or DOMAINS)
    else:
        target_share = shares[spec.target_domain]
    return {
        "task": spec.name,
        "target_domain": spec.target_domain,
        "description": spec.description,
        "domains": DOMAINS,
        "pool_target_share": share,
        "actual_pool_target_share": target_share,
        "max_target_train": mtt,
        "config_name": config_name(spec.name, share, mtt),
        "version": dataset_version(),
        "split_num_docs": {name: len(plan[name]) for name in SPLITS},
        "split_text_bytes": {name: sum(d.nbytes for d in plan[name]) for name in SPLITS},
        "pool_domain_byte_shares": shares,
        "pool_domain_num_docs": docs_by_domain,
    }


# ---------------------------------------------------------------------------------------------
# TFDS builder
# ---------------------------------------------------------------------------------------------


def _format_share(share: float) -> str:
    text = f"{share:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def config_name(task: str, share: float, max_target_train: int) -> str:
    """E.g. ``python-share0.02-tt1000``; distinct settings get distinct names (and caches)."""
    return f"{task}-share{_format_share(share)}-tt{max_target_train}"


@dataclasses.dataclass(eq=False)
class EmbeddedCorpusConfig(tfds.core.BuilderConfig):
    """Builder config for one (task, pool_target_share, max_target_train). Use ``make_config``."""

    task: str = "python"
    pool_target_share: float = 0.02
    max_target_train: int = DEFAULT_MAX_TARGET_TRAIN


def _new_config(task: str, share: float, max_target_train: int) -> EmbeddedCorpusConfig:
    return EmbeddedCorpusConfig(
        name=config_name(task, share, max_target_train),
        description=(
            f"{TASKS[task].description} pool_target_share={_format_share(share)}, "
            f"max_target_train={max_target_train}."
        ),
        task=task,
        pool_target_share=share,
        max_target_train=max_target_train,
    )


class AdaptiveDataEmbedded(tfds.core.GeneratorBasedBuilder):
    """Multi-domain Debian text with target-task splits (TFDS name ``adaptive_data_embedded``)."""

    VERSION = tfds.core.Version(dataset_version())
    RELEASE_NOTES = {
        dataset_version(): f"Corpus content digest {manifest()['content_digest'][:16]}.",
    }
    BUILDER_CONFIGS = [
        _new_config(name, t.default_pool_target_share, DEFAULT_MAX_TARGET_TRAIN)
        for name, t in sorted(TASKS.items())
    ]
    DEFAULT_CONFIG_NAME = BUILDER_CONFIGS[sorted(TASKS).index("python")].name

    # TFDS 4.9.x's own ``code_path`` touches ``importlib_resources`` (a backport not installed
    # on Python >= 3.9) for any builder defined in a package module; this file is the answer.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo is built directly (not dataset_info_from_configs) so that a README.md
        # placed in this package by someone else is not picked up as the description.
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Real multi-domain text from Debian packages (dictionaries, fortunes, man "
                "pages, Python source, Russian fortunes), split for a target task. "
                "See adaptive_data/data/embedded/PROVENANCE.md."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "domain": tfds.features.Text(),
                    "doc_id": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
            homepage=None,
            metadata=tfds.core.MetadataDict(
                content_digest=manifest()["content_digest"],
                corpus_revision=manifest()["corpus_revision"],
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is in the package
        cfg = self.builder_config
        spec, share, mtt = _resolve(cfg.task, cfg.pool_target_share, cfg.max_target_train)
        plan = _plan(spec.name, share, mtt)
        return {name: self._generate_examples(plan[name]) for name in SPLITS}

    def _generate_examples(self, docs):
        for doc in docs:
            # TFDS maps "\\" to "/" in string keys before hashing them (FOLDOC has both "/"
            # and "\\" entries), so the key is a digest of the exact doc_id instead.
            key = hashlib.sha256(doc.doc_id.encode("utf-8")).hexdigest()
            yield key, {"text": doc.text, "domain": doc.domain, "doc_id": doc.doc_id}


def make_config(
    task: str,
    *,
    pool_target_share: float | None = None,
    max_target_train: int = DEFAULT_MAX_TARGET_TRAIN,
) -> EmbeddedCorpusConfig:
    """The builder config for these settings: the registered one for defaults, else a new one.

    TFDS accepts a config object made at run time (``AdaptiveDataEmbedded(config=cfg,
    data_dir=...)``), but refuses a new object that has the name of a registered config, so
    the registered instance is returned whenever the name matches.
    """
    spec, share, mtt = _resolve(task, pool_target_share, max_target_train)
    name = config_name(spec.name, share, mtt)
    for registered in AdaptiveDataEmbedded.BUILDER_CONFIGS:
        if registered.name == name:
            return registered
    return _new_config(spec.name, share, mtt)


def _is_prepared(builder: AdaptiveDataEmbedded) -> bool:
    return builder.data_path.exists() and builder.is_prepared()


def _variant_dir(config: EmbeddedCorpusConfig, data_dir: str | None) -> epath.Path:
    """``<data_dir>/adaptive_data_embedded/<config>/<version>``, where it is prepared."""
    root = data_dir or prepared.tfds_data_dirs(None)[0]
    return epath.Path(root) / AdaptiveDataEmbedded.name / config.name / dataset_version()


def _open_prepared(
    config: EmbeddedCorpusConfig, data_dir: str | None
) -> tuple[AdaptiveDataEmbedded | None, str | None]:
    """``(builder, None)`` if prepared and intact, ``(None, None)`` if not prepared,
    ``(None, why)`` if a prepared copy is there but damaged: unreadable or missing
    metadata, a missing or truncated split file (``prepared.prepared_damage``)."""
    variant = _variant_dir(config, data_dir)
    try:
        builder = _builder(config, data_dir)
    except Exception as error:  # TFDS reads the metadata of a prepared copy here
        if variant.exists():
            return None, f"its metadata cannot be read ({type(error).__name__}: {error})"
        raise
    if not _is_prepared(builder):
        if variant.exists() and any(variant.iterdir()):
            return None, "its metadata (dataset_info.json) is missing"
        return None, None
    damage = prepared.prepared_damage(builder, SPLITS)
    return (builder, None) if damage is None else (None, damage)


def _set_aside(variant: epath.Path) -> epath.Path:
    """Moves a damaged prepared copy to ``<data_dir>/.adaptive_data_damaged/`` (outside
    the TFDS tree, never deleted); returns where it went."""
    root = variant.parent.parent.parent
    name = f"{variant.parent.parent.name}-{variant.parent.name}-{variant.name}"
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    target = root / ".adaptive_data_damaged" / f"{name}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    variant.rename(target)
    return target


class _CustomConfigNotice(logging.Filter):
    """Drops TFDS's "Using custom data configuration" warning: every variant of the
    embedded corpus is a config made at run time by design (``make_config``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Using custom data configuration")


def _builder(config: EmbeddedCorpusConfig, data_dir: str | None) -> AdaptiveDataEmbedded:
    notice = _CustomConfigNotice()
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(notice)
    try:
        return AdaptiveDataEmbedded(config=config, data_dir=data_dir)
    finally:
        absl_logger.removeFilter(notice)


@contextlib.contextmanager
def _prepare_lock(variant: epath.Path) -> Iterator[None]:
    """An exclusive file lock per config and version (``variant``:
    ``<data_dir>/<name>/<config>/<version>``), so concurrent processes prepare (or repair)
    once. The lock lives in ``<data_dir>/.adaptive_data_locks/``, outside the TFDS tree.
    """
    root = os.fspath(variant.parent.parent.parent)
    if "://" in root:  # remote file systems: no flock; rely on TFDS's atomic rename
        yield
        return
    lock_dir = os.path.join(root, ".adaptive_data_locks")
    os.makedirs(lock_dir, exist_ok=True)
    lock_name = f"{variant.parent.parent.name}-{variant.parent.name}-{variant.name}.lock"
    with open(os.path.join(lock_dir, lock_name), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def get_builder(
    task: str,
    *,
    pool_target_share: float | None = None,
    max_target_train: int = DEFAULT_MAX_TARGET_TRAIN,
    data_dir: str | None = None,
) -> AdaptiveDataEmbedded:
    """The builder for these settings, prepared into ``data_dir`` if not already there.

    A prepared copy that is damaged (unreadable or missing metadata, a missing or
    truncated split file) is moved to ``<data_dir>/.adaptive_data_damaged/`` and the
    corpus is prepared again in its place, with a warning.
    """
    config = make_config(
        task, pool_target_share=pool_target_share, max_target_train=max_target_train
    )
    builder, damage = _open_prepared(config, data_dir)
    if builder is not None:
        return builder
    # Surface an impossible share as ValueError before TFDS starts writing anything.
    _plan(config.task, config.pool_target_share, config.max_target_train)
    variant = _variant_dir(config, data_dir)
    with _prepare_lock(variant):
        # Another process may have prepared (or repaired) it while we waited.
        builder, damage = _open_prepared(config, data_dir)
        if builder is not None:
            return builder
        if damage is not None:
            moved = _set_aside(variant)
            logging.getLogger(__name__).warning(
                "The prepared embedded corpus (task %s, split files and metadata in %s) is "
                "damaged: %s; moved it to %s and preparing it again in its place.",
                config.task,
                variant,
                damage,
                moved,
            )
        builder = _builder(config, data_dir)
        if not _is_prepared(builder):
            builder.download_and_prepare(
                file_format="array_record",
                download_config=tfds.download.DownloadConfig(
                    try_download_gcs=False,
                    compute_stats=tfds.download.ComputeStatsMode.SKIP,
                ),
            )
    return builder


def load_split(
    task: str,
    split: str,
    *,
    pool_target_share: float | None = None,
    max_target_train: int = DEFAULT_MAX_TARGET_TRAIN,
    data_dir: str | None = None,
):
    """Returns a random-access source (len(), __getitem__) of dicts
    {"text": bytes or str, "domain": bytes or str, "doc_id": bytes or str}, prepared on first use.

    ``data_dir`` defaults to TFDS's (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    ``pool_target_share=None`` takes the task's default (0.02 for ``python``, else 0.0).
    The result is ``builder.as_data_source()[split]`` (array_record), what Grain consumes.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    builder = get_builder(
        task,
        pool_target_share=pool_target_share,
        max_target_train=max_target_train,
        data_dir=data_dir,
    )
    return builder.as_data_source(split=split)


__all__ = [
    "AdaptiveDataEmbedded",
    "DOMAINS",
    "EmbeddedCorpusConfig",
    "SPLITS",
    "TASKS",
    "Task",
    "dataset_version",
    "get_builder",
    "iter_documents",
    "load_split",
    "make_config",
    "manifest",
    "split_doc_ids",
    "task_info",
]
