"""Byte-level BPE tokenizer (GPT-2 style), trained with Hugging Face `tokenizers`.

Sennrich et al. 2016 (arXiv:1508.07909) start from single symbols and repeatedly
merge the most frequent adjacent pair into a new symbol. GPT-2 (Radford et al.
2019, section 2.2) runs this on UTF-8 bytes instead of characters, so the 256
byte values are always in the vocabulary and any Unicode text can be encoded:
there are no unknown tokens, and `decode(encode(s)) == s` for every string.

Text is first split with GPT-2's regex (words with their leading space, numbers,
punctuation runs, whitespace) and merges never cross those pieces. The vocabulary
is 256 byte tokens plus `vocab_size - 256` merges learned from the corpus; a
corpus too small to need that many merges gives a smaller vocabulary.
"""

import hashlib
import json
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from kqv.errors import UserError

N_BYTES = 256


class BPETokenizer:
    kind = "bpe"

    def __init__(self, hf: Tokenizer):
        """Wrap a trained byte-level `tokenizers.Tokenizer`; `train` makes one from a corpus."""
        self.hf = hf

    @classmethod
    def train(cls, text: str | Iterable[str], vocab_size: int, special_tokens: tuple[str, ...] = ()) -> "BPETokenizer":
        """`special_tokens` (e.g. "<pad>", "<s>", "</s>" for translation) get the ids 0, 1, … in order.

        They are never produced by `encode` from ordinary text — unless the text contains
        them literally — and `decode` leaves them out."""
        if vocab_size < N_BYTES + 1:
            raise ValueError(
                f"BPE vocab_size must be at least {N_BYTES + 1} (the {N_BYTES} byte tokens plus at least one merge); "
                f"got {vocab_size}"
            )
        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=list(special_tokens),
            show_progress=False,
        )
        hf.train_from_iterator([text] if isinstance(text, str) else text, trainer=trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        try:
            return self.hf.encode(text).ids
        except TypeError:
            # Only a str that is not valid Unicode gets here: a lone surrogate, which is how
            # Python carries undecodable bytes (e.g. from a command line that is not UTF-8).
            raise UserError(
                "text holds a lone surrogate (an undecodable byte) and is not valid Unicode; pass UTF-8 text"
            ) from None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once (in parallel, inside `tokenizers`)."""
        try:
            return [e.ids for e in self.hf.encode_batch(texts)]
        except TypeError:
            return [self.encode(t) for t in texts]  # finds the bad text and raises its UserError

    def token_id(self, token: str) -> int:
        found = self.hf.token_to_id(token)
        if found is None:
            raise ValueError(f"{token!r} is not in this tokenizer's vocabulary")
        return found

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        size = self.vocab_size
        if ids and not (0 <= min(ids) and max(ids) < size):
            bad = next(i for i in ids if not 0 <= i < size)
            raise ValueError(f"token id {bad} is out of range for a BPE vocabulary of {size} tokens")
        return self.hf.decode(ids)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokenizer": self.hf.to_str()}

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of `to_dict()`: equal fingerprints, equal tokenizers."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"
