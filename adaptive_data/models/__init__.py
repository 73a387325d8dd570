"""Models: the byte-level Transformer LM and the small weighting model w(x; phi)."""
