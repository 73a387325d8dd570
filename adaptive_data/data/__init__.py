"""Data: embedded corpus, user data specs, tokenizers (bytes, SentencePiece, Hugging Face)
and their offline trainer, Grain pipelines."""
