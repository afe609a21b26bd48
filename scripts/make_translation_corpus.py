"""Build kqv's embedded English–Spanish corpus from the shared Bible verse pairs.

Keeps the pairs whose English and Spanish sides both have at most 40 whitespace-separated
words, in their original order, and writes them as gzip-compressed UTF-8 TSV with the header
`ref<TAB>en<TAB>es`. The gzip header holds no file name and time 0, so rebuilding gives the
same bytes.

    python3 scripts/make_translation_corpus.py \
        [--source ../shared/data/bible-en-es.tsv.gz] [--out src/kqv/data/corpora/bible-en-es.tsv.gz]

Standard library only.
"""

import argparse
import gzip
import hashlib
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "bible-en-es.tsv.gz"
DEFAULT_OUT = ROOT / "src" / "kqv" / "data" / "corpora" / "bible-en-es.tsv.gz"
HEADER = "ref\ten\tes"
MAX_WORDS = 40


def filter_pairs(text: str, max_words: int) -> tuple[list[str], dict]:
    """The header and the kept lines of the TSV `text`, and counts for the README."""
    lines = text.splitlines()
    if not lines or lines[0] != HEADER:
        sys.exit(f"expected the header {HEADER!r}, got {lines[0] if lines else ''!r}")
    kept = [HEADER]
    en_words = es_words = 0
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 3:
            sys.exit(f"line {number}: expected 3 tab-separated fields, got {len(fields)}")
        _, en, es = fields
        n_en, n_es = len(en.split()), len(es.split())
        if n_en <= max_words and n_es <= max_words:
            kept.append(line)
            en_words += n_en
            es_words += n_es
    counts = {"source_pairs": len(lines) - 1, "pairs": len(kept) - 1, "en_words": en_words, "es_words": es_words}
    return kept, counts


def deterministic_gzip(data: bytes) -> bytes:
    """gzip at level 9 with no file name and modification time 0: same input, same bytes."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as f:
        f.write(data)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--max-words", type=int, default=MAX_WORDS)
    args = parser.parse_args()

    text = gzip.decompress(args.source.read_bytes()).decode("utf-8")
    kept, counts = filter_pairs(text, args.max_words)
    raw = ("\n".join(kept) + "\n").encode("utf-8")
    packed = deterministic_gzip(raw)
    args.out.write_bytes(packed)

    kept_of = f"{counts['pairs']:,} of {counts['source_pairs']:,} pairs"
    print(f"{args.out}: kept {kept_of} (both sides ≤ {args.max_words} words)")
    print(f"  words: {counts['en_words']:,} English, {counts['es_words']:,} Spanish")
    print(f"  uncompressed: {len(raw):,} bytes, sha256 {hashlib.sha256(raw).hexdigest()}")
    print(f"  compressed:   {len(packed):,} bytes, sha256 {hashlib.sha256(packed).hexdigest()}")


if __name__ == "__main__":
    main()
