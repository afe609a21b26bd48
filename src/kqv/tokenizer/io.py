"""Choosing, training, saving and loading a tokenizer by its kind ("char" or "bpe").

A tokenizer file (e.g. RUN/tokenizer.json) is the JSON of the tokenizer's
`to_dict()`: `{"kind": "char", "chars": [...]}` or `{"kind": "bpe", "tokenizer":
"<Hugging Face tokenizer JSON>"}`. The same dict can be stored inside a checkpoint
and turned back into a tokenizer with `tokenizer_from_dict`.
"""

import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from kqv.errors import UserError
from kqv.fileio import atomic_write_bytes
from kqv.tokenizer.bpe import N_BYTES, BPETokenizer
from kqv.tokenizer.char import CharTokenizer

Tokenizer = CharTokenizer | BPETokenizer

KINDS = ("char", "bpe")
DEFAULT_BPE_VOCAB_SIZE = 1024


def train_tokenizer(kind: str, text: str, vocab_size: int | None = None) -> Tokenizer:
    """A new tokenizer of `kind` trained on `text`.

    `vocab_size` sets the BPE vocabulary (default 1024); a char tokenizer's vocabulary is
    the corpus's characters, so it ignores `vocab_size`.
    """
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        vocab_size = DEFAULT_BPE_VOCAB_SIZE if vocab_size is None else vocab_size
        if vocab_size < N_BYTES + 1:
            raise UserError(
                f"vocab_size {vocab_size} is too small for the bpe tokenizer: it needs at least {N_BYTES + 1} "
                f"(the {N_BYTES} byte tokens plus one merge); {DEFAULT_BPE_VOCAB_SIZE} suits a small corpus"
            )
        return BPETokenizer.train(text, vocab_size)
    raise UserError(f"unknown tokenizer {kind!r}; choose one of: {', '.join(KINDS)}")


def tokenizer_from_dict(d: dict, where: str = "tokenizer") -> Tokenizer:
    """The tokenizer that `to_dict()` described; `where` (a file name) starts any error message."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == "char":
        try:
            return CharTokenizer(d["chars"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: not a valid char tokenizer ({exc!r})") from None
    if kind == "bpe":
        try:
            return BPETokenizer(HFTokenizer.from_str(d["tokenizer"]))
        except Exception as exc:  # tokenizers raises a bare Exception for JSON it cannot read
            raise UserError(f"{where}: not a valid bpe tokenizer ({exc})") from None
    raise UserError(f"{where}: unknown tokenizer kind {kind!r}; expected one of: {', '.join(KINDS)}")


def save_tokenizer(tok: Tokenizer, path: str | Path) -> Path:
    text = json.dumps(tok.to_dict(), ensure_ascii=False, indent=1) + "\n"
    return atomic_write_bytes(path, text.encode())


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    try:
        d = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: no such tokenizer file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the tokenizer file ({exc.strerror})") from None
    except ValueError as exc:
        raise UserError(f"{path}: not a complete tokenizer JSON file ({exc}); it may be truncated") from None
    return tokenizer_from_dict(d, where=str(path))
