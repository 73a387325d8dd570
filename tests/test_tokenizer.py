"""Byte tokenizer: exact round trip, special ids, LM example layout."""

import numpy as np

from adaptive_data.data import tokenizer


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
