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

Training sees the corpus in pieces (`training_pieces`). Counting pairs is linear in
the corpus, but `tokenizers` applies each merge to a pre-token by shifting its symbol
list, so one pre-token of n characters costs O(n²) per merge: 200k letters without a
space took 21 s and 400k took 120 s. The pieces are cut where GPT-2's regex splits
anyway (before whitespace that follows a non-space), so ordinary text gets exactly the
merges it got whole; only a run of more than `MAX_RUN` characters without whitespace
(or of whitespace alone) is cut every `MAX_RUN` characters, and only pairs across
those cuts can differ. The tokenizer itself keeps GPT-2's pre-tokenizer: `encode`
sees a long run whole.
"""

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from kqv.errors import UserError
from kqv.progress import progress_bar

N_BYTES = 256
GPT2_EOT = "<|endoftext|>"  # GPT-2's one special token, id 50256: the end of a document

MAX_RUN = 256  # characters: a longer run without whitespace (or of whitespace) is cut for training
PIECE_CHARS = 8192  # about this many characters per piece fed to the trainer or the encoder
ENCODE_IN_PIECES_FROM = 1 << 20  # characters: `encode` cuts a text this long into pieces
ENCODE_BATCH = 128  # pieces per call of `tokenizers`' encode_batch, between progress updates
# What GPT-2's regex calls \s (Oniguruma's Unicode White_Space). Python's str.isspace adds U+001C…U+001F,
# which the regex treats as punctuation, so it cannot stand in.
WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CUT = re.compile(f"(?<=[^{WHITESPACE}])[{WHITESPACE}]")  # whitespace after a non-space: a pre-token starts here
_LONG_RUN = re.compile(  # a whole run (it starts after the other kind or at the start) longer than MAX_RUN
    f"(?<![{WHITESPACE}])[{WHITESPACE}]{{{MAX_RUN + 1},}}|(?<![^{WHITESPACE}])[^{WHITESPACE}]{{{MAX_RUN + 1},}}"
)


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


def training_pieces(text: str, piece_chars: int = PIECE_CHARS) -> Iterator[str]:
    """`text` in pieces of about `piece_chars` characters that GPT-2's regex splits exactly as it splits `text`,
    except that runs over `MAX_RUN` characters are cut every `MAX_RUN` characters; "".join(pieces) == text.

    A piece ends before a whitespace character that follows a non-space. No pre-token spans that
    point (the optional space of " word" comes after it), and the regex's one lookahead, in
    `\\s+(?!\\S)`, sees the same character inside a piece as in the text: whitespace inside a
    piece is always followed by a non-space there, at the latest by the piece's last character.

        >>> list(training_pieces("ab  cd\\nef", piece_chars=1))
        ['ab', '  cd', '\\nef']
    """
    for start, end in _natural_spans(text, piece_chars):
        done = start
        for run in _LONG_RUN.finditer(text, start, end):
            if run.start() > done:
                yield text[done : run.start()]
            yield from (text[i : min(i + MAX_RUN, run.end())] for i in range(run.start(), run.end(), MAX_RUN))
            done = run.end()
        if done < end:
            yield text[done:end]


def _natural_spans(text: str, piece_chars: int) -> Iterator[tuple[int, int]]:
    """(start, end) of consecutive pieces of `text`, each ending where the next one would start a pre-token."""
    start = 0
    while start < len(text):
        cut = _CUT.search(text, start + piece_chars) if start + piece_chars < len(text) else None
        end = cut.start() if cut else len(text)
        yield start, end
        start = end


def _pieces_of(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        yield from training_pieces(text)


def _counted(pieces: Iterator[str], bar) -> Iterator[str]:
    for piece in pieces:
        bar.update(len(piece))
        yield piece


class BPETokenizer:
    kind = "bpe"

    def __init__(self, hf: Tokenizer):
        """Wrap a trained byte-level `tokenizers.Tokenizer`; `train` makes one from a corpus.

        Special tokens (translation's <pad>, <s>, </s>) are never read out of a text: a user who types
        "</s>" gets the bytes of "</s>", not the end of the sentence. (GPT-2's <|endoftext|> is an added
        token, not a special one, and is still found whole, as transformers does.)"""
        self.hf = hf
        self.hf.encode_special_tokens = True  # a setting of this object, not saved: the fingerprint is unchanged

    @classmethod
    def train(cls, text: str | Iterable[str], vocab_size: int, special_tokens: tuple[str, ...] = ()) -> "BPETokenizer":
        """`special_tokens` (e.g. "<pad>", "<s>", "</s>" for translation) get the ids 0, 1, … in order.

        They are never produced by `encode` from any text, not even one that spells them out,
        and `decode` leaves them out."""
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
        texts = [text] if isinstance(text, str) else text
        total = sum(map(len, texts)) if isinstance(texts, list | tuple) else None
        with progress_bar(total, "training BPE", unit="char") as bar:
            hf.train_from_iterator(_counted(_pieces_of(texts), bar), trainer=trainer)
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
        """The ids of `text`; a long text is encoded in pieces, in parallel, with a progress bar.

        The pieces are cut where GPT-2's regex starts a pre-token (see `training_pieces`), so
        they get exactly the ids of the whole text: 8M characters took 2.2 s and 0.2 GB instead of
        6.4 s and 1.7 GB whole (2 cores)."""
        try:
            if len(text) < ENCODE_IN_PIECES_FROM or self._added_token_has_whitespace():
                return self.hf.encode(text).ids
            ids = []
            with progress_bar(len(text), "encoding", unit="char") as bar:
                spans = list(_natural_spans(text, PIECE_CHARS))
                for i in range(0, len(spans), ENCODE_BATCH):
                    batch = [text[start:end] for start, end in spans[i : i + ENCODE_BATCH]]
                    for encoding in self.hf.encode_batch(batch):
                        ids.extend(encoding.ids)
                    bar.update(sum(map(len, batch)))
            return ids
        except TypeError:
            # Only a str that is not valid Unicode gets here: a lone surrogate, which is how
            # Python carries undecodable bytes (e.g. from a command line that is not UTF-8).
            raise UserError(
                "text holds a lone surrogate (an undecodable byte) and is not valid Unicode; pass UTF-8 text"
            ) from None

    def _added_token_has_whitespace(self) -> bool:
        """A cut before whitespace could fall inside such a token (<|endoftext|> and <pad> have none)."""
        return any(re.search(f"[{WHITESPACE}]", t.content) for t in self.hf.get_added_tokens_decoder().values())

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
