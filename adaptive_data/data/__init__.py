"""Data: embedded corpus, user data specs, byte tokenizer, Grain pipelines."""
