"""Parallel corpora for translation: reading sentence pairs and holding out validation and test pairs.

Two layouts are read:

- `read_tsv`: one pair per line, columns separated by tabs, as in Tatoeba / Anki
  exports (`Go.<TAB>Ve.<TAB>CC-BY 2.0 …`) or the embedded Bible corpus
  (`ref<TAB>en<TAB>es`). Columns count from 1, like `cut -f`.
- `read_aligned`: two files where line i of one translates line i of the other,
  as in Multi30k (`train.en.gz`, `train.de.gz`).

Either may be gzip-compressed (recognised by its first two bytes). Every field
is stripped of surrounding whitespace and normalised to Unicode NFC, so the same
text typed two ways gets the same tokens. A problem with a file is a `UserError`
naming the file and the line, never quoting the line (the file may be /etc/passwd).

`split_pairs` then holds out a test and a validation set from one list of
pairs, reproducibly from a seed:

    pairs ──► test: n_test drawn among pairs with both sides ≤ 20 words
          └─► valid: n_valid drawn among the rest
          └─► train: everything else, in the original order, without any
                     pair that shares its source or target with a held-out pair
"""

import random
import unicodedata
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

from kqv.data.files import read_plain_or_gzip
from kqv.errors import UserError
from kqv.fileio import atomic_write_bytes

Pair = tuple[str, str]  # (source, target)

EMBEDDED_NAME = "bible-en-es.tsv.gz"
EMBEDDED_PAIRS = 28_142
MIN_PAIRS_TO_SPLIT = 20
HELD_OUT_SHARE = 0.1  # a carved-out set takes at most this share of the pairs it is drawn from


class Verse(NamedTuple):
    ref: str  # an OSIS-style reference: "Gen.1.1", "1Cor.13.4"
    en: str
    es: str


def words(text: str) -> int:
    """The number of whitespace-separated words: words("Jesus wept.") == 2."""
    return len(text.split())


# --- reading


def read_tsv(
    path: str | Path, src_col: int = 1, tgt_col: int = 2, reverse: bool = False, header: bool = False
) -> list[Pair]:
    """(source, target) pairs from columns `src_col` and `tgt_col` of a tab-separated file.

    Other columns are ignored. `reverse=True` swaps source and target; `header=True`
    skips the first line.
    """
    if src_col < 1 or tgt_col < 1:
        raise UserError(f"columns count from 1, like `cut -f`; got source column {src_col}, target column {tgt_col}")
    if src_col == tgt_col:
        raise UserError(f"the source and target columns must differ; both are {src_col}")
    rows = _read_columns(Path(path), (src_col, tgt_col), header)
    return [(tgt, src) if reverse else (src, tgt) for src, tgt in rows]


def _read_columns(path: Path, cols: tuple[int, ...], header: bool) -> list[tuple[str, ...]]:
    """The cleaned fields in columns `cols` (1-based) of every line of a TSV file; none may be empty."""
    lines = _read_lines(path)
    first = 2 if header else 1
    rows = []
    for number, line in enumerate(lines[first - 1 :], start=first):
        if "\t" not in line:  # the line's text stays out of the message: the file may hold secrets
            what = "is blank" if not line.strip() else f"has no tab (1 column of {len(line):,} characters)"
            raise UserError(
                f"{path}:{number}: the line {what}; each line must hold a pair, source<TAB>target "
                "(remove blank lines; a file of one sentence per line needs its translation in a second file)"
            )
        fields = line.split("\t")
        if len(fields) < max(cols):
            raise UserError(
                f"{path}:{number}: unknown column {max(cols)}: the line has only {len(fields)} "
                f"tab-separated columns; choose columns between 1 and {len(fields)}"
            )
        row = tuple(_clean(fields[col - 1]) for col in cols)
        for col, text in zip(cols, row, strict=True):
            if not text:
                raise UserError(f"{path}:{number}: column {col} is empty; every pair needs both sides")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: holds no pairs{' after its header' if header else ''}; a corpus needs some")
    return rows


def read_aligned(src_file: str | Path, tgt_file: str | Path) -> list[Pair]:
    """(source, target) pairs from two line-aligned files: line i of one translates line i of the other."""
    src_file, tgt_file = Path(src_file), Path(tgt_file)
    src_lines, tgt_lines = _read_lines(src_file), _read_lines(tgt_file)
    if len(src_lines) != len(tgt_lines):
        raise UserError(
            f"{src_file} has {len(src_lines):,} lines but {tgt_file} has {len(tgt_lines):,}; "
            "line-aligned files must have one line per pair, in the same order"
        )
    if not src_lines:
        raise UserError(f"{src_file} and {tgt_file} are empty; a corpus needs some pairs")
    pairs = []
    for number, (src, tgt) in enumerate(zip(src_lines, tgt_lines, strict=True), start=1):
        src, tgt = _clean(src), _clean(tgt)
        for path, text in ((src_file, src), (tgt_file, tgt)):
            if not text:
                raise UserError(f"{path}:{number}: the line is blank; every line must hold a sentence")
        pairs.append((src, tgt))
    return pairs


def default_corpus_path() -> Path:
    """The embedded English–Spanish Bible verses (see data/corpora/README.md)."""
    return Path(str(files("kqv.data") / "corpora" / EMBEDDED_NAME))


def read_default() -> list[Verse]:
    """The embedded corpus as (ref, en, es) verses, in canonical book order."""
    return [Verse(*row) for row in _read_columns(default_corpus_path(), (1, 2, 3), header=True)]


def _clean(text: str) -> str:
    text = text.strip()
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file, plain or gzip, without line endings (a final newline ends the last line).

    Errors name the file and the line, never the line's text."""
    raw = read_plain_or_gzip(path, "give a text file (plain or .gz)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); convert it to UTF-8 first, e.g. with iconv"
        ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise UserError(f"{path}:{line}: looks like a binary file (a NUL byte); give UTF-8 text")
    # Split on "\n" only: str.splitlines would also break at U+2028, U+0085 and others inside a sentence.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


# --- held-out sets


@dataclass(frozen=True)
class ParallelSplits:
    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]
    description: str  # how the sets were made, for logs and run records


def split_pairs(
    pairs: list[Pair], seed: int = 0, n_test: int = 500, n_valid: int = 500, test_max_words: int = 20
) -> ParallelSplits:
    """Hold out `n_test` short pairs for testing and `n_valid` pairs for validation; train on the rest.

    The test pairs are drawn with `random.Random(seed)` among the pairs whose sides both have at
    most `test_max_words` words, then the validation pairs among the remaining ones, so the same
    pairs and seed always give the same split. A corpus too small for the requested sizes gives
    each held-out set at most 10 % of the pairs it is drawn from (at least one pair).
    """
    return split_given(pairs, seed=seed, n_valid=n_valid, n_test=n_test, test_max_words=test_max_words)


def split_given(
    train: list[Pair],
    valid: list[Pair] | None = None,
    test: list[Pair] | None = None,
    seed: int = 0,
    n_valid: int = 500,
    n_test: int = 500,
    test_max_words: int = 20,
) -> ParallelSplits:
    """Use the sets that are given; carve a missing test set, then a missing validation set, from `train`.

    Carving follows `split_pairs`. Given sets are used as they are, except that a given validation
    set loses any pair that shares its source or target with a carved test pair.
    """
    rng = random.Random(seed)
    notes = []
    if test is None or valid is None:
        _check_size(train)
    if test is None:
        eligible = [
            i for i, (src, tgt) in enumerate(train) if words(src) <= test_max_words and words(tgt) <= test_max_words
        ]
        if not eligible and n_test > 0:
            raise UserError(
                f"no pair has both sides within {test_max_words} words, so no test set can be drawn; "
                "allow longer test sentences or give a test file"
            )
        test, train, dropped = _carve(train, eligible, n_test, rng)
        notes.append(
            f"test: {len(test):,} pairs drawn (seed {seed}) among the {len(eligible):,} "
            f"with both sides ≤ {test_max_words} words"
        )
        if dropped:
            notes.append(f"{dropped:,} other pairs sharing a side with a test pair left out")
        if valid is not None:
            test_sources, test_targets = {src for src, _ in test}, {tgt for _, tgt in test}
            valid = [(src, tgt) for src, tgt in valid if src not in test_sources and tgt not in test_targets]
    else:
        notes.append(f"test: {len(test):,} pairs given")
    if valid is None:
        valid, train, dropped = _carve(train, range(len(train)), n_valid, rng)
        notes.append(f"valid: {len(valid):,} pairs drawn among the remaining ones")
        if dropped:
            notes.append(f"{dropped:,} other pairs sharing a side with a validation pair left out")
    else:
        notes.append(f"valid: {len(valid):,} pairs given")
    if not train:
        raise UserError("no training pairs are left after holding out the validation and test pairs")
    notes.append(f"train: {len(train):,} pairs")
    return ParallelSplits(train, valid, test, "; ".join(notes))


def _check_size(pairs: list[Pair]) -> None:
    if len(pairs) < MIN_PAIRS_TO_SPLIT:
        raise UserError(
            f"corpus too small to split: {len(pairs)} pairs; need at least {MIN_PAIRS_TO_SPLIT} "
            "to hold out validation and test pairs and still train on most of them"
        )


def _carve(pairs: list[Pair], candidates, n: int, rng: random.Random) -> tuple[list[Pair], list[Pair], int]:
    """Draw up to `n` pairs among `candidates` (indices into `pairs`), no two sharing a side.

    Returns the drawn pairs and the rest, both in their original order, and how many pairs were
    left out of the rest because their source equals a drawn source or their target a drawn
    target. The Bible repeats verses word for word ("Yahweh spoke to Moses, saying,"), and a
    held-out sentence that is also trained on would make the held-out score meaningless.
    Both sides count alike, so the reversed pairs give the same split.
    """
    distinct, seen = [], set()
    for i in candidates:
        src, tgt = pairs[i]
        if ("src", src) not in seen and ("tgt", tgt) not in seen:
            distinct.append(i)
            seen.update({("src", src), ("tgt", tgt)})
    k = min(n, max(1, int(len(distinct) * HELD_OUT_SHARE)), len(distinct))
    drawn = sorted(rng.sample(distinct, k))
    drawn_sources = {pairs[i][0] for i in drawn}
    drawn_targets = {pairs[i][1] for i in drawn}
    rest = [(src, tgt) for src, tgt in pairs if src not in drawn_sources and tgt not in drawn_targets]
    dropped = len(pairs) - len(drawn) - len(rest)
    return [pairs[i] for i in drawn], rest, dropped


# --- where a run's pairs come from, and its held-out pairs on disk


@dataclass
class DataSpec:
    """Where the pairs come from: the embedded corpus, a TSV, or two line-aligned files."""

    tsv: str | None = None
    src_col: int = 1
    tgt_col: int = 2
    src_file: str | None = None
    tgt_file: str | None = None
    reverse: bool = False

    def describe(self) -> str:
        if self.src_file:
            return f"{self.src_file} ↔ {self.tgt_file}" + (" (reversed)" if self.reverse else "")
        if self.tsv:
            return f"{self.tsv} columns {self.src_col}→{self.tgt_col}" + (" (reversed)" if self.reverse else "")
        return "embedded English→Spanish verses" + (" (reversed: Spanish→English)" if self.reverse else "")

    def read(self) -> list[tuple[str, str]]:
        if (self.src_file is None) != (self.tgt_file is None):
            raise UserError("--src-file and --tgt-file go together: give both line-aligned files")
        if self.src_file and self.tsv:
            raise UserError("give either --data PATH.tsv or --src-file/--tgt-file, not both")
        if self.src_file:
            pairs = read_aligned(self.src_file, self.tgt_file)
            return [(t, s) for s, t in pairs] if self.reverse else pairs
        if self.tsv:
            return read_tsv(self.tsv, self.src_col, self.tgt_col, reverse=self.reverse)
        return read_tsv(default_corpus_path(), 2, 3, reverse=self.reverse, header=True)

    def to_dict(self) -> dict:
        resolve = lambda p: str(Path(p).resolve()) if p else None  # noqa: E731
        return {
            "tsv": resolve(self.tsv),
            "src_col": self.src_col,
            "tgt_col": self.tgt_col,
            "src_file": resolve(self.src_file),
            "tgt_file": resolve(self.tgt_file),
            "reverse": self.reverse,
        }


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> None:
    """source<TAB>target, a pair per line, written atomically."""
    atomic_write_bytes(path, "".join(f"{s}\t{t}\n" for s, t in pairs).encode())


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """A run's held-out pairs (valid.tsv, test.tsv), as `write_pairs` wrote them."""
    return read_tsv(path, 1, 2)


def encode_pairs(tokenizer, pairs, max_len: int) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Token ids of each pair -> (examples, how many were dropped as longer than max_len − 1 tokens on either side)."""
    src = tokenizer.encode_batch([s for s, _ in pairs])
    tgt = tokenizer.encode_batch([t for _, t in pairs])
    examples = [(s, t) for s, t in zip(src, tgt, strict=True) if len(s) < max_len and len(t) < max_len]
    return examples, len(pairs) - len(examples)
