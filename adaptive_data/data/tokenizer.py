"""Tokenizers of ``config.data.tokenizer``: bytes (default), SentencePiece, Hugging Face.

Every tokenizer splits a text into the ids ``[0, n)`` of its own vocabulary; the three
special tokens come right after it: ``BOS = n``, ``EOS = n + 1``, ``PAD = n + 2``, so the
LM's and the weighting model's vocabulary is ``V = n + 3``. The byte tokenizer has
``n = 256`` (every UTF-8 byte is its own token, no vocabulary file): BOS 256, EOS 257,
PAD 258, V = 259. A document becomes ``[BOS, t_1, ..., t_m, EOS]``; a language-model
example of length L predicts ``targets = seq[1:L+1]`` from ``inputs = seq[0:L]``, padded
with PAD past the end, whatever the tokenizer.

Bits per byte stays comparable across tokenizers: each example carries ``num_bytes``, the
UTF-8 bytes of the original text whose prediction its targets cover: the whole text when
EOS is a target, else the bytes up to the end of the last target token's span (token
spans come from the tokenizer's offsets; a token that ends inside a multi-byte character
covers the whole character). The evaluation's bits per byte is
``sum(NLL of every target) / ln 2 / sum(num_bytes)``.

The SentencePiece and ``tokenizers`` libraries are imported only when such a tokenizer
is loaded (``pip install adaptive_data[tokenizers]``); ``python -m
adaptive_data.data.train_tokenizer`` trains one offline.
"""

from __future__ import annotations

import abc
import pathlib

import numpy as np

# The byte tokenizer's special ids and vocabulary size.
BOS_ID = 256
EOS_ID = 257
PAD_ID = 258
VOCAB_SIZE = 259
# The forms of ``config.data.tokenizer``.
SPEC_FORMS = ("bytes", "sentencepiece:PATH", "hf:PATH")
_KINDS = ("sentencepiece", "hf")


def to_bytes(text: str | bytes) -> bytes:
    """Returns the UTF-8 bytes of ``text`` (bytes are passed through unchanged)."""
    if isinstance(text, bytes):
        return text
    if isinstance(text, np.bytes_):
        return bytes(text)
    return str(text).encode("utf-8", errors="replace")


class Tokenizer(abc.ABC):
    """Text -> ids with BOS/EOS/PAD appended after the vocabulary; subclasses split text.

    A subclass sets ``spec`` (its ``config.data.tokenizer`` value) and ``num_text_ids``
    (n), and implements ``split`` and ``join``.
    """

    spec: str
    num_text_ids: int

    @abc.abstractmethod
    def split(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int32[m], byte_ends int64[m])``: the token ids of the UTF-8 text ``data``
        and the end offset of each token's span in bytes of ``data`` (non-decreasing)."""

    @abc.abstractmethod
    def join(self, ids: np.ndarray) -> str:
        """The text of token ids in ``[0, n)``."""

    @property
    def bos_id(self) -> int:
        return self.num_text_ids

    @property
    def eos_id(self) -> int:
        return self.num_text_ids + 1

    @property
    def pad_id(self) -> int:
        return self.num_text_ids + 2

    @property
    def vocab_size(self) -> int:
        """V = n + 3: the tokenizer's ids, then BOS, EOS and PAD."""
        return self.num_text_ids + 3

    def encode(self, text: str | bytes) -> np.ndarray:
        """Returns int32[m + 2]: BOS, the m token ids of ``text``, EOS."""
        ids, _ = self.split(to_bytes(text))
        return np.concatenate([[self.bos_id], ids, [self.eos_id]]).astype(np.int32)

    def decode(self, ids) -> str:
        """Inverse of ``encode`` (up to the tokenizer's normalisation): drops BOS/EOS/PAD."""
        ids = np.asarray(ids)
        return self.join(ids[(ids >= 0) & (ids < self.num_text_ids)])

    def lm_example(self, text: str | bytes, max_length: int) -> dict[str, np.ndarray]:
        """Returns one truncated, padded language-model example of length L = ``max_length``.

        Keys: ``inputs`` int32[L] (starts with BOS), ``targets`` int32[L] (inputs shifted
        by one), ``mask`` float32[L] (1 where ``targets`` is a real token, text or EOS) and
        ``num_bytes`` int32, the UTF-8 bytes of ``text`` the targets cover (the
        denominator of bits per byte; see the module docstring).
        """
        data = to_bytes(text)
        ids, byte_ends = self.split(data)
        tokens = np.concatenate([[self.bos_id], ids, [self.eos_id]])[: max_length + 1]
        num_targets = len(tokens) - 1
        inputs = np.full(max_length, self.pad_id, dtype=np.int32)
        targets = np.full(max_length, self.pad_id, dtype=np.int32)
        inputs[:num_targets] = tokens[:-1]
        targets[:num_targets] = tokens[1:]
        mask = (targets != self.pad_id).astype(np.float32)
        if num_targets > len(ids):  # EOS is a target: the whole text is predicted
            num_bytes = len(data)
        else:
            num_bytes = int(byte_ends[num_targets - 1]) if num_targets else 0
        return {
            "inputs": inputs,
            "targets": targets,
            "mask": mask,
            "num_bytes": np.int32(num_bytes),
        }


class ByteTokenizer(Tokenizer):
    """Every UTF-8 byte is its own token: n = 256, exact round trip, no file."""

    spec = "bytes"
    num_text_ids = 256

    def split(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        ids = np.frombuffer(data, dtype=np.uint8).astype(np.int32)
        return ids, np.arange(1, len(ids) + 1)

    def join(self, ids: np.ndarray) -> str:
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model file (``.model``); its own <unk>/<s>/</s> ids stay text ids."""

    def __init__(self, path: str):
        import sentencepiece

        self.spec = f"sentencepiece:{path}"
        self._processor = sentencepiece.SentencePieceProcessor(model_file=path)
        self.num_text_ids = int(self._processor.vocab_size())

    def split(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        # SentencePiece's proto gives each piece's [begin, end) in bytes of the input.
        pieces = self._processor.encode(data.decode("utf-8", errors="replace"), out_type="proto")
        ids = np.array([p.id for p in pieces.pieces], dtype=np.int32)
        ends = np.array([p.end for p in pieces.pieces], dtype=np.int64)
        return ids, _non_decreasing(ends)

    def join(self, ids: np.ndarray) -> str:
        return self._processor.decode([int(i) for i in ids])


class HuggingFaceTokenizer(Tokenizer):
    """A Hugging Face ``tokenizers`` JSON file (``Tokenizer.save``); no special tokens added."""

    def __init__(self, path: str):
        import tokenizers

        self.spec = f"hf:{path}"
        self._tokenizer = tokenizers.Tokenizer.from_file(path)
        self.num_text_ids = int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def split(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        text = data.decode("utf-8", errors="replace")
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        ids = np.array(encoding.ids, dtype=np.int32)
        # Offsets are in characters of ``text``; character c starts at byte byte_at[c]
        # (the bytes that are not UTF-8 continuation bytes 0b10xxxxxx start characters).
        utf8 = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        byte_at = np.append(np.flatnonzero((utf8 & 0xC0) != 0x80), len(utf8))
        ends = byte_at[np.array([end for _, end in encoding.offsets], dtype=np.int64)]
        return ids, _non_decreasing(ends.astype(np.int64))

    def join(self, ids: np.ndarray) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


def _non_decreasing(ends: np.ndarray) -> np.ndarray:
    """Running maximum: overlapping spans (byte pieces of one character) never go back."""
    return np.maximum.accumulate(ends) if len(ends) else ends


BYTES = ByteTokenizer()


def is_valid_spec(spec) -> bool:
    """Whether ``spec`` has one of the ``SPEC_FORMS`` (the file is checked when loaded)."""
    if spec == "bytes":
        return True
    kind, _, path = str(spec).partition(":") if isinstance(spec, str) else ("", "", "")
    return kind in _KINDS and bool(path)


def load(spec: str) -> Tokenizer:
    """The tokenizer of a ``config.data.tokenizer`` value, read from its file now.

    Raises:
      ValueError: ``spec`` is not one of ``SPEC_FORMS``.
      FileNotFoundError: the file does not exist (the message says how to make one).
      ImportError: the tokenizer's library is not installed (the message says which).
    """
    if spec == "bytes":
        return BYTES
    if not is_valid_spec(spec):
        raise ValueError(f"config.data.tokenizer={spec!r}: must be one of {', '.join(SPEC_FORMS)}.")
    kind, _, path = spec.partition(":")
    if not pathlib.Path(path).expanduser().is_file():
        raise FileNotFoundError(
            f"config.data.tokenizer={spec!r}: no file {path!r}. Train one offline with "
            f"`python -m adaptive_data.data.train_tokenizer --kind={kind} --output={path}`."
        )
    path = str(pathlib.Path(path).expanduser())
    library = {"sentencepiece": "sentencepiece", "hf": "tokenizers"}[kind]
    try:
        return (
            SentencePieceTokenizer(path) if kind == "sentencepiece" else HuggingFaceTokenizer(path)
        )
    except ModuleNotFoundError as err:
        raise ImportError(
            f"config.data.tokenizer={spec!r} needs the {library!r} package: "
            f"pip install {library} (or pip install 'adaptive_data[tokenizers]')."
        ) from err
