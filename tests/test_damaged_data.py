"""Damaged prepared data: a truncated split file, garbled metadata, a missing split file.

The embedded corpus (which the project builds itself) is moved aside and prepared again in
place, with a warning, and then holds exactly the documents its split plan assigns. A
user's TFDS dataset is never rebuilt or moved: the error names the dataset, the split and
the directory, says what to do, and every file stays as it was.
"""

import hashlib
import logging
import os
import pathlib
import shutil

import pytest
import tensorflow_datasets as tfds
from etils import epath

from adaptive_data.data import embedded_corpus as ec
from adaptive_data.data import sources

from conftest import load_default_config

TASK = "russian"  # the smallest pool
SPLIT_FILE = "adaptive_data_embedded-target_valid.array_record-00000-of-00001"


def _truncate(path: pathlib.Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _garble(path: pathlib.Path) -> None:
    path.write_text('{"name": "adaptive_data_embedded", "splits": [')


DAMAGES = {
    "truncated_split_file": lambda variant, split_file: _truncate(variant / split_file),
    "garbled_metadata": lambda variant, split_file: _garble(variant / "dataset_info.json"),
    "missing_split_file": lambda variant, split_file: (variant / split_file).unlink(),
}


def _snapshot(directory: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# -- the embedded corpus: rebuilt ---------------------------------------------------------


@pytest.fixture(scope="module")
def prepared_embedded(tmp_path_factory):
    """A data dir with the embedded corpus of ``TASK`` prepared once for this module."""
    data_dir = tmp_path_factory.mktemp("embedded_intact")
    ec.get_builder(TASK, data_dir=str(data_dir))
    return data_dir


@pytest.mark.slow  # prepares the corpus again (about 20 s each on 2 cores)
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_embedded_corpus_is_set_aside_and_rebuilt(
    damage, prepared_embedded, tmp_path, caplog
):
    data_dir = tmp_path / "tfds"
    shutil.copytree(prepared_embedded, data_dir)
    variant = pathlib.Path(os.fspath(ec._variant_dir(ec.make_config(TASK), str(data_dir))))
    DAMAGES[damage](variant, SPLIT_FILE)
    damaged_files = _snapshot(variant)

    caplog.set_level(logging.WARNING)
    source = ec.load_split(TASK, "target_valid", data_dir=str(data_dir))

    assert f"The prepared embedded corpus (task {TASK}, split files and metadata in " in (
        caplog.text
    )
    assert f"{variant}) is damaged: " in caplog.text
    assert "preparing it again in its place" in caplog.text
    set_aside = list((data_dir / ".adaptive_data_damaged").iterdir())
    assert len(set_aside) == 1 and f"moved it to {set_aside[0]} " in caplog.text
    assert _snapshot(set_aside[0]) == damaged_files  # moved as it was, not deleted
    # Rebuilt in place with exactly the documents the split plan assigns.
    expected_ids = ec.split_doc_ids(TASK)["target_valid"]
    doc_ids = [r["doc_id"] for r in source.__getitems__(list(range(len(source))))]
    assert sorted(d.decode() if isinstance(d, bytes) else d for d in doc_ids) == sorted(
        expected_ids
    )
    assert ec._open_prepared(ec.make_config(TASK), str(data_dir))[1] is None


def test_intact_embedded_corpus_is_not_touched(prepared_embedded, caplog):
    variant = pathlib.Path(os.fspath(ec._variant_dir(ec.make_config(TASK), str(prepared_embedded))))
    before = _snapshot(variant)
    caplog.set_level(logging.WARNING)
    ec.load_split(TASK, "train", data_dir=str(prepared_embedded))
    assert "damaged" not in caplog.text
    assert _snapshot(variant) == before


# -- a user's TFDS dataset: named, never touched ------------------------------------------


class DamageTestCorpus(tfds.core.GeneratorBasedBuilder):
    """A tiny text dataset with the five splits of ``sources.SPLITS``."""

    VERSION = tfds.core.Version("1.0.0")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:  # see AdaptiveDataEmbedded.code_path
        return epath.Path(__file__)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()})
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in ("train", "validation", "test")}

    def _generate_examples(self, split):
        for i in range(40):
            yield f"{split}-{i}", {"text": f"{split} document number {i} " * 3}


USER_SPLIT_FILE = "damage_test_corpus-validation.array_record-00000-of-00001"


@pytest.fixture(scope="module")
def prepared_user_dataset(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("user_tfds")
    DamageTestCorpus(data_dir=str(data_dir)).download_and_prepare(file_format="array_record")
    return data_dir


def _user_data_config(data_dir):
    data = load_default_config("runlocal").data
    data.update(
        generic="tfds:damage_test_corpus",
        target="tfds:damage_test_corpus",
        tfds_data_dir=str(data_dir),
        generic_train_split="train",
        generic_valid_split="validation",
        target_train_split="test",
        target_valid_split="validation",
        target_test_split="test",
    )
    return data


def test_intact_user_dataset_loads(prepared_user_dataset):
    corpus = sources.load_corpus(_user_data_config(prepared_user_dataset))
    assert len(corpus.splits["generic_valid"]) == 40


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_user_dataset_is_named_with_advice_and_untouched(
    damage, prepared_user_dataset, tmp_path
):
    data_dir = tmp_path / "tfds"
    shutil.copytree(prepared_user_dataset, data_dir)
    variant = data_dir / "damage_test_corpus" / "1.0.0"
    DAMAGES[damage](variant, USER_SPLIT_FILE)
    before = _snapshot(data_dir)

    with pytest.raises(sources.DataError) as error:
        sources.load_corpus(_user_data_config(data_dir))

    message = str(error.value)
    assert message.startswith("The prepared TFDS dataset 'damage_test_corpus' (from ")
    split = "train" if damage == "garbled_metadata" else "validation"  # the first one read
    directory = variant if damage != "garbled_metadata" else data_dir / "damage_test_corpus"
    assert f"split {split!r}, in {directory} cannot be read: " in message
    reasons = {  # a truncated file has too few records, or no readable footer at all
        "truncated_split_file": (f"file {USER_SPLIT_FILE} holds ", f"{USER_SPLIT_FILE} cannot"),
        "garbled_metadata": ("its metadata cannot be read (",),
        "missing_split_file": (f"file {USER_SPLIT_FILE} is missing",),
    }[damage]
    assert any(reason in message for reason in reasons), message
    assert "nothing was changed" in message
    assert "`tfds build damage_test_corpus --file_format=array_record" in message
    assert f"--data_dir={data_dir}" in message
    assert _snapshot(data_dir) == before  # nothing rebuilt, moved or written
    assert not (data_dir / ".adaptive_data_damaged").exists()
