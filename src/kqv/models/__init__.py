"""Models built from kqv.nn: the GPT (decoder-only), later the encoder–decoder Transformer."""
