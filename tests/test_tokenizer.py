"""Tokenizers: the byte tokenizer's exact round trip, special ids and LM example layout;
SentencePiece and byte-level BPE files (trained on the embedded corpus) with the same
layout; the bytes an example's targets cover (the denominator of bits per byte)."""

import numpy as np
import pytest

from adaptive_data.data import tokenizer

from conftest import SUBWORD_VOCAB_SIZE


def test_round_trip_ascii_and_unicode():
    for text in ["hello world", "", "naïve café — 東京 🚀", "line\nbreak\ttab"]:
        ids = tokenizer.BYTES.encode(text)
        assert ids[0] == tokenizer.BOS_ID and ids[-1] == tokenizer.EOS_ID
        assert len(ids) == len(text.encode("utf-8")) + 2
        assert tokenizer.BYTES.decode(ids) == text


def test_ids_are_the_utf8_bytes():
    ids = tokenizer.BYTES.encode("é")
    np.testing.assert_array_equal(ids[1:-1], [0xC3, 0xA9])


def test_invalid_utf8_bytes_do_not_crash():
    raw = b"ok \xff\xfe end"
    ids = tokenizer.BYTES.encode(raw)
    np.testing.assert_array_equal(ids[1:-1], list(raw))
    assert tokenizer.BYTES.decode(ids) == raw.decode("utf-8", errors="replace")


def test_lm_example_shift_pad_and_truncation():
    ex = tokenizer.BYTES.lm_example("abc", max_length=6)
    # sequence: BOS a b c EOS -> inputs BOS a b c PAD PAD, targets a b c EOS PAD PAD
    np.testing.assert_array_equal(ex["inputs"], [256, 97, 98, 99, 258, 258])
    np.testing.assert_array_equal(ex["targets"], [97, 98, 99, 257, 258, 258])
    np.testing.assert_array_equal(ex["mask"], [1, 1, 1, 1, 0, 0])
    assert ex["num_bytes"] == 3
    long = tokenizer.BYTES.lm_example("abcdefgh", max_length=4)
    np.testing.assert_array_equal(long["inputs"], [256, 97, 98, 99])
    np.testing.assert_array_equal(long["targets"], [97, 98, 99, 100])
    assert long["num_bytes"] == 4 and long["mask"].sum() == 4


# ------------------------------------------------------------------ subword tokenizers

SUBWORD_KINDS = ("sentencepiece", "hf")
TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "naïve café — 東京 🚀, Привет мир",
    "  leading and trailing spaces  ",
    "",
]


@pytest.mark.parametrize("kind", SUBWORD_KINDS)
def test_subword_layout_round_trip_and_special_ids(subword_tokenizers, kind):
    tok = tokenizer.load(subword_tokenizers[kind])
    assert tok.spec == subword_tokenizers[kind]
    n = tok.num_text_ids
    assert n == SUBWORD_VOCAB_SIZE
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (n, n + 1, n + 2, n + 3)
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert np.all((ids[1:-1] >= 0) & (ids[1:-1] < n))
        assert tok.decode(ids) == text  # no normalisation: the exact text comes back
    # Subwords: fewer tokens than bytes on text like the training corpus.
    code = TEXTS[0] * 4
    assert len(tok.encode(code)) < len(code.encode("utf-8"))


@pytest.mark.parametrize("kind", ("bytes", *SUBWORD_KINDS))
def test_lm_example_layout_is_the_same_for_every_tokenizer(subword_tokenizers, kind):
    tok = tokenizer.load(subword_tokenizers.get(kind, kind))
    text = "hello there, world"
    ids = tok.encode(text)
    length = len(ids) + 2  # room for the whole document and two PADs
    ex = tok.lm_example(text, length)
    np.testing.assert_array_equal(ex["inputs"][: len(ids) - 1], ids[:-1])
    np.testing.assert_array_equal(ex["targets"][: len(ids) - 1], ids[1:])
    assert np.all(ex["inputs"][len(ids) - 1 :] == tok.pad_id)
    assert np.all(ex["targets"][len(ids) - 1 :] == tok.pad_id)
    np.testing.assert_array_equal(ex["mask"], ex["targets"] != tok.pad_id)
    assert ex["num_bytes"] == len(text.encode("utf-8"))  # EOS is a target: every byte


@pytest.mark.parametrize("kind", ("bytes", *SUBWORD_KINDS))
def test_truncated_example_counts_the_bytes_its_targets_cover(subword_tokenizers, kind):
    tok = tokenizer.load(subword_tokenizers.get(kind, kind))
    text = "the quick brown fox jumps over the lazy dog " * 3  # ASCII: 1 byte per character
    for length in (1, 2, 5, 9):
        ex = tok.lm_example(text, length)
        assert ex["mask"].sum() == length
        # Independent reference: the text the targets spell (EOS is not among them).
        covered = tok.decode(ex["targets"])
        assert text.startswith(covered)
        assert ex["num_bytes"] == len(covered.encode("utf-8"))


def test_a_token_ending_inside_a_character_covers_the_whole_character(subword_tokenizers):
    # Byte-level BPE splits the bytes of rare characters into separate tokens; a target
    # that stops inside a character counts all of its bytes.
    tok = tokenizer.load(subword_tokenizers["hf"])
    text = "🚀🚀🚀"  # 4 bytes each
    ids = tok.encode(text)[1:-1]
    for length in range(1, len(ids) + 1):
        num_bytes = int(tok.lm_example(text, length)["num_bytes"])
        assert num_bytes % 4 == 0 and 0 < num_bytes <= 12


def test_load_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="must be one of bytes, sentencepiece:PATH, hf:PATH"):
        tokenizer.load("gpt2")
    missing = str(tmp_path / "none.model")
    with pytest.raises(FileNotFoundError, match="python -m adaptive_data.data.train_tokenizer"):
        tokenizer.load(f"sentencepiece:{missing}")
    assert not tokenizer.is_valid_spec("hf:") and tokenizer.is_valid_spec("hf:x.json")
