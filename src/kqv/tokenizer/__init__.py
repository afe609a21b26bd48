"""Tokenizers for the GPT: characters (`char`) or byte-level BPE (`bpe`), saved as JSON."""

from kqv.tokenizer.bpe import BPETokenizer
from kqv.tokenizer.char import CharTokenizer, UnknownTokenError
from kqv.tokenizer.io import (
    DEFAULT_BPE_VOCAB_SIZE,
    KINDS,
    Tokenizer,
    load_tokenizer,
    save_tokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "DEFAULT_BPE_VOCAB_SIZE",
    "KINDS",
    "Tokenizer",
    "UnknownTokenError",
    "load_tokenizer",
    "save_tokenizer",
    "tokenizer_from_dict",
    "train_tokenizer",
]
