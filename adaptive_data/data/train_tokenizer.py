"""Trains a small subword tokenizer offline, for ``config.data.tokenizer``.

    # SentencePiece BPE on the embedded corpus (every domain, at most 500 documents each)
    python -m adaptive_data.data.train_tokenizer --kind=sentencepiece --vocab_size=1024 \\
        --output=/tmp/embedded_1k.model
    # byte-level BPE (Hugging Face tokenizers) on your own files (.txt: a document a line)
    python -m adaptive_data.data.train_tokenizer --kind=hf --vocab_size=4096 \\
        --files=/data/pool.jsonl,/data/target.txt --output=/tmp/mine.json

then ``--config.data.tokenizer=sentencepiece:/tmp/embedded_1k.model`` (or ``hf:...``).
Both kinds cover every input: SentencePiece falls back to byte pieces for characters it
did not learn, byte-level BPE starts from the 256 bytes. Neither adds BOS/EOS/PAD pieces
(``adaptive_data.data.tokenizer`` appends its own after the vocabulary) nor normalises
the text (spaces and newlines are kept, so token spans map back to the original bytes).
Nothing is downloaded. Training on the embedded corpus reads every domain by default,
target tasks included: choose ``--domains`` to keep a target's text out of the vocabulary.
"""

from __future__ import annotations

import argparse
import io
import itertools
import pathlib
from collections.abc import Iterable, Iterator, Sequence

from adaptive_data.data import embedded_corpus, sources, tokenizer

KINDS = ("sentencepiece", "hf")
# SentencePiece skips longer training documents; the embedded corpus caps them at 32 KiB.
_MAX_DOCUMENT_BYTES = 1 << 16


def training_texts(
    *,
    files: Sequence[str] = (),
    domains: Sequence[str] = (),
    max_documents: int,
    text_key: str = "text",
) -> Iterator[str]:
    """The texts to train on: the documents of ``files`` (``.txt``/``.jsonl``, read as
    ``file:`` data specs are) if any, else of the embedded corpus ``domains`` (all if
    empty); at most ``max_documents`` from each file or domain, in their stored order."""
    if files:
        for path in files:
            records = sources.read_text_file(path, text_key=text_key)
            yield from (r["text"] for r in records[:max_documents])
        return
    for domain in domains or embedded_corpus.DOMAINS:
        docs = embedded_corpus.iter_documents(domain)
        yield from (d["text"] for d in itertools.islice(docs, max_documents))


def train_sentencepiece(texts: Iterable[str], vocab_size: int, output: str) -> None:
    """Trains a SentencePiece BPE model of ``vocab_size`` pieces and writes it to ``output``."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=0.9995,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        max_sentence_length=_MAX_DOCUMENT_BYTES,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        minloglevel=2,
    )
    pathlib.Path(output).write_bytes(model.getvalue())


def train_hf_bpe(texts: Iterable[str], vocab_size: int, output: str) -> None:
    """Trains a byte-level BPE (``tokenizers``) of ``vocab_size`` ids; writes its JSON."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    bpe.save(output)


def train(
    kind: str,
    vocab_size: int,
    output: str,
    *,
    files: Sequence[str] = (),
    domains: Sequence[str] = (),
    max_documents: int = 500,
    text_key: str = "text",
) -> tokenizer.Tokenizer:
    """Trains a tokenizer of ``kind`` (one of ``KINDS``), writes it to ``output`` and
    returns it loaded as ``config.data.tokenizer=<kind>:<output>`` loads it."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: must be one of {KINDS}.")
    texts = training_texts(
        files=files, domains=domains, max_documents=max_documents, text_key=text_key
    )
    pathlib.Path(output).expanduser().parent.mkdir(parents=True, exist_ok=True)
    output = str(pathlib.Path(output).expanduser())
    (train_sentencepiece if kind == "sentencepiece" else train_hf_bpe)(texts, vocab_size, output)
    return tokenizer.load(f"{kind}:{output}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=KINDS, default="sentencepiece")
    parser.add_argument("--vocab_size", type=int, default=1024, help="ids, before BOS/EOS/PAD")
    parser.add_argument("--output", required=True, help="the .model or .json file to write")
    parser.add_argument("--files", default="", help="comma-separated .txt/.jsonl files")
    parser.add_argument(
        "--domains",
        default="",
        help=f"comma-separated embedded domains (default: all of {embedded_corpus.DOMAINS})",
    )
    parser.add_argument("--max_documents", type=int, default=500, help="per file or domain")
    parser.add_argument("--text_key", default="text", help="text field of .jsonl lines")
    args = parser.parse_args(argv)
    trained = train(
        args.kind,
        args.vocab_size,
        args.output,
        files=[f for f in args.files.split(",") if f],
        domains=[d for d in args.domains.split(",") if d],
        max_documents=args.max_documents,
        text_key=args.text_key,
    )
    print(
        f"Wrote {args.output}: {trained.num_text_ids} ids (vocabulary {trained.vocab_size} "
        f"with BOS/EOS/PAD). Use it with --config.data.tokenizer={trained.spec}"
    )


if __name__ == "__main__":
    main()
