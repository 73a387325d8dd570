"""Tests for the embedded Debian text corpus, its tasks, and its TFDS (array_record) builder.

Each task is prepared once per module into a temporary data_dir; one more preparation (task
``russian``, the smallest pool) goes into a second directory for the determinism check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from adaptive_data.data import embedded_corpus as ec

TASK_NAMES = ("python", "jargon", "russian")


def _str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_all(source) -> list[dict[str, str]]:
    records = source.__getitems__(list(range(len(source))))
    return [{k: _str(v) for k, v in rec.items()} for rec in records]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tfds_embedded")


@pytest.fixture(scope="module")
def prepared(data_dir) -> dict[str, dict[str, list[dict[str, str]]]]:
    """{task: {split: records in source order}} with the task defaults."""
    out = {}
    for task in TASK_NAMES:
        out[task] = {
            split: _read_all(ec.load_split(task, split, data_dir=str(data_dir)))
            for split in ec.SPLITS
        }
    return out


# ---------------------------------------------------------------------------------------------
# Shipped files
# ---------------------------------------------------------------------------------------------


def test_manifest_matches_shipped_files():
    manifest = ec.manifest()
    assert tuple(sorted(manifest["domains"])) == ec.DOMAINS
    assert list(ec.DOMAINS) == sorted(ec.DOMAINS)
    total = 0
    for domain, entry in manifest["domains"].items():
        path = ec.EMBEDDED_DIR / entry["file"]
        blob = path.read_bytes()
        total += len(blob)
        assert hashlib.sha256(blob).hexdigest() == entry["sha256"], domain
        assert len(blob) == entry["file_bytes"]
        docs = list(ec.iter_documents(domain))
        assert len(docs) == entry["num_docs"] > 0
        assert sum(len(d["text"].encode("utf-8")) for d in docs) == entry["text_bytes"]
        assert all(d["domain"] == domain and d["doc_id"].startswith(domain + "/") for d in docs)
        for pkg, version in entry["packages"].items():
            assert manifest["packages"][pkg] == version
    assert total <= 20 * 1024 * 1024
    assert len(ec.DOMAINS) >= 6
    assert len({e["source_package"] for e in manifest["domains"].values()}) >= 4
    provenance = (ec.EMBEDDED_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    for domain in ec.DOMAINS:
        assert f"| {domain} |" in provenance
    assert ec.dataset_version() == f"{ec.SPLIT_ALGORITHM_VERSION}.{manifest['corpus_revision']}.0"
    assert str(ec.AdaptiveDataEmbedded.VERSION) == ec.dataset_version()


def test_tasks_are_data():
    # One task per domain plus the controls drawn from the pool (target_domain None).
    controls = {"pool", "pool_b", "pool_c", "pool_code", "pool_reference", "pool_prose"}
    assert set(ec.TASKS) == set(ec.DOMAINS) | controls | {"pool_computing", "pool_english"}
    for name, task in ec.TASKS.items():
        assert task.name == name
        assert task.target_domain == (None if name.startswith("pool") else name)
        assert set(task.control_domains) <= set(ec.DOMAINS)
        with pytest.raises(dataclasses.FrozenInstanceError):
            task.name = "other"
    assert ec.TASKS["python"].default_pool_target_share == 0.02
    assert ec.TASKS["jargon"].default_pool_target_share == 0.0
    assert ec.TASKS["russian"].default_pool_target_share == 0.0


@pytest.mark.parametrize("task", sorted(set(ec.DOMAINS) - {"jargon"}))
def test_every_domain_task_accepts_zero_and_positive_pool_share(task):
    # 0.06 is feasible for every domain but jargon (too small: at most about 0.03).
    for share in (0.0, 0.06):
        info = ec.task_info(task, pool_target_share=share, max_target_train=32)
        assert info["actual_pool_target_share"] == pytest.approx(share, abs=0.06 * 0.05)
        assert info["split_num_docs"]["target_train"] == 32


def _assert_splits_partition_the_corpus(ids):
    """The five splits of a control are pairwise disjoint and hold every document."""
    sets = {split: set(doc_ids) for split, doc_ids in ids.items()}
    for i, a in enumerate(ec.SPLITS):
        for b in ec.SPLITS[i + 1 :]:
            assert not sets[a] & sets[b], (a, b)
    every_doc = sum(ec.manifest()["domains"][d]["num_docs"] for d in ec.DOMAINS)
    assert sum(len(v) for v in sets.values()) == every_doc


def test_negative_control_target_is_a_held_out_sample_of_the_pool():
    ids = ec.split_doc_ids("pool", max_target_train=32)
    _assert_splits_partition_the_corpus(ids)
    # Per-domain document fractions of target_test and of the pool agree (a uniform sample
    # of 400 documents: within 5 percentage points for every domain).
    for domain in ec.DOMAINS:
        in_test = sum(i.startswith(domain + "/") for i in ids["target_test"]) / 400
        in_pool = sum(i.startswith(domain + "/") for i in ids["train"]) / len(ids["train"])
        assert abs(in_test - in_pool) < 0.05, domain
    assert ec.split_doc_ids("pool", pool_target_share=0.1, max_target_train=32) == ids


def test_controls_with_another_salt_are_other_samples_of_the_pool():
    targets = {
        task: set(ec.split_doc_ids(task, max_target_train=32)["target_test"])
        for task in ("pool", "pool_b", "pool_c")
    }
    # Independent uniform samples of 400 of ~78,000 documents share about 2 of them.
    assert len(targets["pool"] & targets["pool_b"]) < 20
    assert len(targets["pool_b"] & targets["pool_c"]) < 20


@pytest.mark.parametrize("task", ["pool_code", "pool_computing"])
def test_a_subset_control_samples_its_domains_at_their_pool_proportions(task):
    """The target splits hold only the control's domains, in the proportions of the pool's
    documents of those domains; the pool is every other document of the corpus."""
    domains = ec.TASKS[task].control_domains
    ids = ec.split_doc_ids(task, max_target_train=32)
    _assert_splits_partition_the_corpus(ids)
    target = ids["target_test"] + ids["target_valid"] + ids["target_train"]
    assert all(doc_id.split("/")[0] in domains for doc_id in target)
    pool = [i for i in ids["train"] if i.split("/")[0] in domains]
    for domain in domains:
        in_target = sum(i.startswith(domain + "/") for i in ids["target_test"]) / 400
        in_pool = sum(i.startswith(domain + "/") for i in pool) / len(pool)
        assert abs(in_target - in_pool) < 0.07, domain
    info = ec.task_info(task, max_target_train=32)
    shares = info["pool_domain_byte_shares"]
    assert info["actual_pool_target_share"] == pytest.approx(sum(shares[d] for d in domains))
    assert 0 < info["actual_pool_target_share"] < 1


# ---------------------------------------------------------------------------------------------
# Prepared splits
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASK_NAMES)
def test_splits_disjoint_valid_and_sized(prepared, task):
    splits = prepared[task]
    target = ec.TASKS[task].target_domain
    ids = {}
    for split, records in splits.items():
        ids[split] = {r["doc_id"] for r in records}
        assert len(ids[split]) == len(records), f"duplicate doc_id in {split}"
        for r in records:
            assert r["text"].strip(), r["doc_id"]
            assert r["domain"] in ec.DOMAINS
            assert r["doc_id"].startswith(r["domain"] + "/")
    for i, a in enumerate(ec.SPLITS):
        for b in ec.SPLITS[i + 1 :]:
            assert not ids[a] & ids[b], (task, a, b)
    for split in ("target_train", "target_valid", "target_test"):
        assert {r["domain"] for r in splits[split]} == {target}
    assert 0 < len(splits["target_train"]) <= ec.DEFAULT_MAX_TARGET_TRAIN
    assert 300 <= len(splits["target_valid"]) <= 500
    assert 300 <= len(splits["target_test"]) <= 500
    assert len(splits["validation"]) >= 300
    assert len(splits["validation"]) < 0.05 * len(splits["train"])
    # Every other domain is in the pool.
    assert {r["domain"] for r in splits["train"]} >= set(ec.DOMAINS) - {target}
    # What task_info reports is what was prepared.
    info = ec.task_info(task)
    assert info["split_num_docs"] == {s: len(r) for s, r in splits.items()}
    assert info["domains"] == ec.DOMAINS and info["target_domain"] == target


@pytest.mark.parametrize("task,share", [("python", 0.02), ("jargon", 0.0), ("russian", 0.0)])
def test_pool_target_share(prepared, task, share):
    target = ec.TASKS[task].target_domain
    train = prepared[task]["train"]
    total = sum(len(r["text"].encode("utf-8")) for r in train)
    in_target = sum(len(r["text"].encode("utf-8")) for r in train if r["domain"] == target)
    measured = in_target / total
    if share == 0.0:
        assert in_target == 0
        assert not any(r["domain"] == target for r in prepared[task]["validation"])
    else:
        assert abs(measured - share) < 0.005
    info = ec.task_info(task)
    assert info["pool_target_share"] == share
    assert math.isclose(info["actual_pool_target_share"], measured, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(sum(info["pool_domain_byte_shares"].values()), 1.0)


def test_no_tensorflow(prepared):
    assert prepared  # preparation and reading happened in this process
    assert "tensorflow" not in sys.modules


def test_records_are_text_and_grain_ready(data_dir, prepared):
    source = ec.load_split("jargon", "target_test", data_dir=str(data_dir))  # reuses the cache
    assert len(source) == len(prepared["jargon"]["target_test"])
    record = source[0]
    assert set(record) == {"text", "domain", "doc_id"}
    assert all(isinstance(v, (bytes, str)) for v in record.values())


@pytest.mark.slow
def test_deterministic_across_data_dirs(tmp_path, prepared):
    # A second preparation, elsewhere, of the task with the smallest pool.
    task = "russian"
    for split in ec.SPLITS:
        source = ec.load_split(task, split, data_dir=str(tmp_path))
        assert [r["doc_id"] for r in _read_all(source)] == [
            r["doc_id"] for r in prepared[task][split]
        ], split
    # The plan is a pure function of the shipped files (the python task exercises the share).
    for name in TASK_NAMES:
        assert ec.split_doc_ids(name) == {
            s: tuple(sorted(r["doc_id"] for r in prepared[name][s])) for s in ec.SPLITS
        }


# ---------------------------------------------------------------------------------------------
# Knobs and errors (no preparation needed)
# ---------------------------------------------------------------------------------------------


def test_max_target_train_knob():
    small = ec.split_doc_ids("python", max_target_train=300)
    full = ec.split_doc_ids("python")
    assert len(small["target_train"]) == 300
    assert set(small["target_train"]) <= set(full["target_train"])
    assert small["target_test"] == full["target_test"]
    assert small["target_valid"] == full["target_valid"]
    info = ec.task_info("python", max_target_train=np.int64(300))
    assert info["split_num_docs"]["target_train"] == 300
    assert info["config_name"] == "python-share0.02-tt300"
    assert abs(info["actual_pool_target_share"] - 0.02) < 0.005
    # Target docs in the pool are never in a target split.
    pool = set(small["train"]) | set(small["validation"])
    for split in ("target_train", "target_valid", "target_test"):
        assert not pool & set(small[split])


@pytest.mark.parametrize("task,share", [("jargon", 0.005), ("russian", 0.03), ("python", 0.05)])
def test_share_knob_any_task(task, share):
    info = ec.task_info(task, pool_target_share=share)
    assert abs(info["actual_pool_target_share"] - share) < 0.005
    ids = ec.split_doc_ids(task, pool_target_share=share)
    target_ids = set(ids["target_train"]) | set(ids["target_valid"]) | set(ids["target_test"])
    assert not target_ids & (set(ids["train"]) | set(ids["validation"]))


def test_python_share_zero_removes_target_from_pool():
    info = ec.task_info("python", pool_target_share=0.0)
    assert info["pool_domain_num_docs"]["python"] == 0
    assert info["config_name"] == "python-share0-tt1000"


@pytest.mark.parametrize(
    "task,kwargs",
    [
        ("jargon", {"pool_target_share": 0.5}),
        ("python", {"pool_target_share": 0.5}),
        ("russian", {"pool_target_share": 0.9}),
        ("python", {"pool_target_share": -0.01}),
        ("python", {"pool_target_share": 1.0}),
        ("python", {"pool_target_share": float("nan")}),
        ("python", {"max_target_train": 0}),
        ("python", {"max_target_train": 2.5}),
    ],
)
def test_impossible_or_invalid_settings_raise(tmp_path, task, kwargs):
    with pytest.raises(ValueError):
        ec.task_info(task, **kwargs)
    with pytest.raises(ValueError):
        ec.load_split(task, "train", data_dir=str(tmp_path), **kwargs)
    assert not list(tmp_path.glob("adaptive_data_embedded/*/*/dataset_info.json"))


def test_impossible_share_message_is_clear():
    with pytest.raises(ValueError, match="impossible.*jargon"):
        ec.task_info("jargon", pool_target_share=0.5)


def test_unknown_task_or_split(tmp_path):
    with pytest.raises(ValueError, match="python") as err:
        ec.load_split("klingon", "train", data_dir=str(tmp_path))
    assert "jargon" in str(err.value) and "russian" in str(err.value)
    with pytest.raises(ValueError, match="target_test") as err:
        ec.load_split("python", "test", data_dir=str(tmp_path))
    assert "validation" in str(err.value)
    with pytest.raises(ValueError):
        ec.task_info("klingon")


def test_runtime_configs(tmp_path):
    registered = {c.name: c for c in ec.AdaptiveDataEmbedded.BUILDER_CONFIGS}
    # One registered config per task, at its default pool share: python's 0.02, the other
    # domains absent from the pool, and the negative control 'pool'.
    others = ("computing", "dictionary", "fortunes", "jargon", "manpages", "russian", "wordnet")
    controls = ("pool", "pool_b", "pool_c", "pool_code", "pool_computing", "pool_english")
    assert set(registered) == {
        "python-share0.02-tt1000",
        "pool_prose-share0-tt1000",
        "pool_reference-share0-tt1000",
        *(f"{control}-share0-tt1000" for control in controls),
        *(f"{domain}-share0-tt1000" for domain in others),
    }
    assert ec.make_config("python") is registered["python-share0.02-tt1000"]
    assert ec.make_config("python", pool_target_share=0.02) is registered["python-share0.02-tt1000"]
    custom = ec.make_config("python", pool_target_share=0.03, max_target_train=500)
    assert custom.name == "python-share0.03-tt500"
    builder = ec.AdaptiveDataEmbedded(config=custom, data_dir=str(tmp_path))
    assert builder.builder_config is custom
    assert "python-share0.03-tt500" in str(builder.data_path)
    assert str(builder.version) == ec.dataset_version()
    assert ec.make_config("jargon", pool_target_share=0.001).name == "jargon-share0.001-tt1000"


def test_manifest_is_valid_json_on_disk():
    raw = (ec.EMBEDDED_DIR / "manifest.json").read_text(encoding="utf-8")
    assert json.loads(raw) == ec.manifest()
