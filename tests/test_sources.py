"""User data specs (file:, tfds:): splitting, domains, and a clear error for each bad input."""

import json

import pytest

from adaptive_data.data import sources

from conftest import load_default_config


def _data_config(**overrides):
    data = load_default_config("runlocal").data
    data.update(overrides)
    return data


@pytest.fixture
def generic_spec(tmp_path):
    """A valid generic file, so that a test's error comes from its target spec."""
    path = tmp_path / "generic_ok.txt"
    path.write_text("".join(f"generic document {i}\n" for i in range(50)))
    return f"file:{path}"


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_txt_and_jsonl_specs_split_disjointly_and_keep_domains(tmp_path):
    generic = tmp_path / "generic.txt"
    generic.write_text("".join(f"generic document number {i}\n" for i in range(200)))
    target = _write_jsonl(
        tmp_path / "target.jsonl",
        [{"text": f"target doc {i}", "domain": "law"} for i in range(100)],
    )
    corpus = sources.load_corpus(_data_config(generic=f"file:{generic}", target=f"file:{target}"))
    ids = {
        name: {split[i]["doc_id"] for i in range(len(split))}
        for name, split in corpus.splits.items()
    }
    assert len(ids["generic_train"]) + len(ids["generic_valid"]) == 200
    assert sum(len(ids[n]) for n in ("target_train", "target_valid", "target_test")) == 100
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not ids[a] & ids[b], (a, b)
    assert corpus.domains == ("generic", "law") and corpus.target_domain == "law"
    record = corpus.splits["target_train"][0]
    assert isinstance(record["text"], bytes) and record["domain"] == "law"
    # Deterministic: the same files give the same assignment.
    again = sources.load_corpus(_data_config(generic=f"file:{generic}", target=f"file:{target}"))
    assert [
        again.splits["generic_valid"][i]["doc_id"]
        for i in range(len(again.splits["generic_valid"]))
    ] == sorted(ids["generic_valid"], key=lambda d: int(d.split(":")[1]))


def test_max_target_train_caps_the_target_split(tmp_path):
    generic = tmp_path / "g.txt"
    generic.write_text("".join(f"g {i}\n" for i in range(50)))
    target = tmp_path / "t.txt"
    target.write_text("".join(f"t {i}\n" for i in range(500)))
    corpus = sources.load_corpus(
        _data_config(generic=f"file:{generic}", target=f"file:{target}", max_target_train=30)
    )
    assert len(corpus.splits["target_train"]) == 30


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(sources.DataError, match="nope.txt.*does not exist"):
        sources.load_corpus(_data_config(generic=f"file:{tmp_path}/nope.txt"))


def test_empty_file_names_the_file(tmp_path, generic_spec):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(sources.DataError, match="empty.jsonl.*no documents"):
        sources.load_corpus(_data_config(generic=generic_spec, target=f"file:{empty}"))


def test_missing_text_field_names_file_line_and_key(tmp_path, generic_spec):
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, {"body": "no text here"}])
    with pytest.raises(sources.DataError, match=r"bad.jsonl:2: missing text field 'text'"):
        sources.load_corpus(_data_config(generic=generic_spec, target=f"file:{bad}"))


def test_text_key_selects_another_field(tmp_path):
    rows = [{"body": f"document {i}"} for i in range(60)]
    path = _write_jsonl(tmp_path / "body.jsonl", rows)
    corpus = sources.load_corpus(
        _data_config(generic=f"file:{path}", target=f"file:{path}", text_key="body")
    )
    assert corpus.splits["generic_train"][0]["text"].startswith(b"document")


def test_invalid_json_line_is_reported(tmp_path, generic_spec):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(sources.DataError, match="broken.jsonl:2: not valid JSON"):
        sources.load_corpus(_data_config(generic=generic_spec, target=f"file:{path}"))


def test_non_utf8_bytes_are_replaced_not_fatal(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"".join(b"caf\xe9 number %d\n" % i for i in range(60)))
    corpus = sources.load_corpus(_data_config(generic=f"file:{path}", target=f"file:{path}"))
    text = corpus.splits["generic_train"][0]["text"].decode("utf-8")
    assert "\ufffd" in text and text.startswith("caf")


def test_unknown_tfds_dataset(tmp_path):
    with pytest.raises(sources.DataError, match="Unknown TFDS dataset 'no_such_dataset_xyz'"):
        sources.load_corpus(
            _data_config(generic="tfds:no_such_dataset_xyz", tfds_data_dir=str(tmp_path))
        )


def test_known_but_unprepared_tfds_dataset_says_nothing_is_downloaded(tmp_path):
    with pytest.raises(sources.DataError, match="not prepared"):
        sources.load_corpus(_data_config(generic="tfds:mnist", tfds_data_dir=str(tmp_path)))


def test_unknown_spec():
    with pytest.raises(sources.DataError, match="Unknown data spec 'hf:foo'"):
        sources.load_corpus(_data_config(generic="hf:foo"))


def test_the_reserved_shard_and_the_rest_split_generic_train_by_document(tmp_path):
    generic, target = tmp_path / "generic.txt", tmp_path / "target.txt"
    generic.write_text("".join(f"generic document {i}\n" for i in range(300)))
    target.write_text("".join(f"target document {i}\n" for i in range(200)))

    def generic_ids(**overrides):
        data = _data_config(generic=f"file:{generic}", target=f"file:{target}", **overrides)
        split = sources.load_corpus(data).splits["generic_train"]
        return [split[i]["doc_id"] for i in range(len(split))]

    everything = generic_ids()
    reserved = generic_ids(reserved_fraction=0.3, generic_shard="reserved")
    rest = generic_ids(reserved_fraction=0.3, generic_shard="rest")
    assert set(reserved).isdisjoint(rest) and sorted(reserved + rest) == sorted(everything)
    assert 0 < len(reserved) < len(rest)
    # The same shard whatever else the run changes (e.g. its seed: not part of the data).
    assert generic_ids(reserved_fraction=0.3, generic_shard="reserved") == reserved
    with pytest.raises(sources.DataError, match="reserved part of generic_train .* is empty"):
        generic_ids(reserved_fraction=1e-9, generic_shard="reserved")
