"""Character tokenizer: one token per Unicode character of the training corpus.

The vocabulary is the sorted set of characters in the corpus, and a character's
id is its place in that list (as in nanoGPT's `shakespeare_char`):

    >>> tok = CharTokenizer.train("hello")
    >>> tok.chars, tok.encode("hole")
    (['e', 'h', 'l', 'o'], [1, 3, 2, 0])

Text with a character the corpus never had cannot be encoded: that raises
`UnknownTokenError` rather than silently dropping or replacing it.
"""

import hashlib
import json
from collections.abc import Iterable

from kqv.errors import UserError

_MAX_NAMED = 10  # unknown characters listed in an error message before "and N more"


class UnknownTokenError(UserError):
    """Text holds characters outside a character tokenizer's vocabulary."""


class CharTokenizer:
    kind = "char"

    def __init__(self, chars: list[str]):
        """`chars[i]` is the character with id i; `train` builds the list from a corpus."""
        chars = list(chars)
        if not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("a char tokenizer's vocabulary must be a list of single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("a char tokenizer's vocabulary has repeated characters")
        if not chars:
            raise ValueError("a char tokenizer needs at least one character")
        self.chars = chars
        self._ids = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        if not text:
            raise ValueError("cannot train a char tokenizer on empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError:
            raise self._unknown(text) from None

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        if ids and not (0 <= min(ids) and max(ids) < len(self.chars)):
            bad = next(i for i in ids if not 0 <= i < len(self.chars))
            raise ValueError(f"token id {bad} is out of range for a vocabulary of {len(self.chars)} characters")
        return "".join([self.chars[i] for i in ids])

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": list(self.chars)}

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of `to_dict()`: equal fingerprints, equal tokenizers."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

    def _unknown(self, text: str) -> UnknownTokenError:
        unknown = sorted(set(text) - self._ids.keys())
        first = min(text.index(c) for c in unknown)
        named = ", ".join(repr(c) for c in unknown[:_MAX_NAMED])
        if len(unknown) > _MAX_NAMED:
            named += f" and {len(unknown) - _MAX_NAMED} more"
        return UnknownTokenError(
            f"text has {len(unknown)} character(s) not in the char tokenizer's vocabulary: {named} "
            f"(first at position {first}); its vocabulary is the set of characters in the training corpus, "
            "so remove them, train on a corpus that contains them, or use the bpe tokenizer, which accepts any text"
        )
