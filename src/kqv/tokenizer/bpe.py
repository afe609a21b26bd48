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

GPT-2's own tokenizer is the same kind of thing, written as two files: vocab.json
(token -> id, tokens spelled in GPT-2's printable byte alphabet, "Ġ" for a space) and
merges.txt (one merge "a b" per line, by rank). `from_vocab_merges` builds it from
them and `vocab_merges` gives them back; kqv.models.hf reads and writes the files.
"""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from kqv.errors import UserError

N_BYTES = 256
GPT2_EOT = "<|endoftext|>"  # GPT-2's one special token, id 50256: the end of a document


@dataclass
class VocabMerges:
    """A byte-level BPE as GPT-2 writes it: vocab.json, merges.txt and the added tokens."""

    vocab: dict[str, int]  # token -> id, ids 0 … len(vocab) − 1
    merges: list[tuple[str, str]]  # by rank: the first merge applies first
    added_tokens: list[str] = field(default_factory=list)  # matched whole in the text before BPE (<|endoftext|>)


def vocab_merges_of(tokenizer_json: dict) -> VocabMerges:
    """The vocab, merges and added tokens of a `tokenizers` JSON, if it is a GPT-2 style byte-level BPE.

    Anything that would make the ids differ from GPT-2's algorithm (a normalizer, another
    pre-tokenizer, BPE dropout, subword prefixes, a post-processor that adds tokens) is a
    ValueError naming it.
    """
    t = tokenizer_json
    model = t.get("model") or {}
    pre = t.get("pre_tokenizer") or {}
    post = t.get("post_processor")
    problems = []
    if model.get("type") != "BPE":
        problems.append(f"model is {model.get('type')!r}, not BPE")
    if t.get("normalizer") is not None:
        problems.append(f"it has a normalizer ({t['normalizer'].get('type')})")
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        problems.append(f"pre-tokenizer is {pre.get('type')!r}, not ByteLevel with GPT-2's regex")
    elif pre.get("add_prefix_space"):
        problems.append("it adds a space before the text (add_prefix_space)")
    if (t.get("decoder") or {}).get("type") != "ByteLevel":
        problems.append(f"decoder is {(t.get('decoder') or {}).get('type')!r}, not ByteLevel")
    if model.get("dropout") not in (None, 0.0) or model.get("byte_fallback"):
        problems.append("BPE dropout or byte fallback is on")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        problems.append("it uses subword prefixes or suffixes")
    if post is not None and post.get("type") not in ("ByteLevel", "TemplateProcessing"):
        problems.append(f"post-processor is {post.get('type')!r}")
    if post is not None and post.get("type") == "TemplateProcessing" and post.get("special_tokens"):
        problems.append("its post-processor adds special tokens to every text")
    if problems:
        raise ValueError("not a GPT-2 style byte-level BPE: " + "; ".join(problems))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    added = sorted(t.get("added_tokens") or [], key=lambda a: a["id"])
    vocab = dict(model.get("vocab") or {})
    for a in added:  # an added token outside the model's vocabulary still has an id
        vocab.setdefault(a["content"], a["id"])
    return VocabMerges(vocab, merges, [a["content"] for a in added])


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

    @classmethod
    def from_vocab_merges(cls, parts: VocabMerges) -> "BPETokenizer":
        """GPT-2's tokenizer (or one like it) from its vocab and merges: the ids of `transformers`' GPT-2 tokenizer.

        Added tokens (`<|endoftext|>`) are found whole in the text, as `transformers` does, and
        are not special here, so `decode` writes them out (as `transformers`' decode does by default).
        Raises ValueError when the parts do not make a byte-level BPE.
        """
        vocab, merges = parts.vocab, [tuple(m) for m in parts.merges]
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise ValueError(f"vocabulary ids must be 0 … {len(vocab) - 1}, each once")
        missing = [c for c in pre_tokenizers.ByteLevel.alphabet() if c not in vocab]
        if missing:
            raise ValueError(
                f"not a byte-level vocabulary: {len(missing)} of the {N_BYTES} byte tokens are missing (e.g. "
                f"{missing[0]!r})"
            )
        bad = next(
            (m for m in merges if len(m) != 2 or "".join(m) not in vocab or any(p not in vocab for p in m)), None
        )
        if bad is not None:
            raise ValueError(f"merge {' '.join(bad)!r} does not join two vocabulary tokens into a third")
        unknown = [a for a in parts.added_tokens if a not in vocab]
        if unknown:
            raise ValueError(f"added token {unknown[0]!r} has no id in the vocabulary")
        model = models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="")
        hf = Tokenizer(model)
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        hf.add_tokens([AddedToken(a, special=False, normalized=False) for a in parts.added_tokens])  # keep their ids
        return cls(hf)

    def vocab_merges(self) -> VocabMerges:
        """vocab.json, merges.txt and added tokens; ValueError if this is not a GPT-2 style byte-level BPE."""
        parts = vocab_merges_of(json.loads(self.hf.to_str()))
        if sorted(parts.vocab.values()) != list(range(self.vocab_size)):
            raise ValueError(f"vocabulary ids are not 0 … {self.vocab_size - 1}, each once")
        return parts

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
