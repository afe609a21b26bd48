import gzip
import hashlib
import os
import re
import unicodedata
from pathlib import Path

import pytest

from kqv.data.parallel import (
    EMBEDDED_PAIRS,
    ParallelSplits,
    default_corpus_path,
    read_aligned,
    read_default,
    read_tsv,
    split_given,
    split_pairs,
    words,
)
from kqv.errors import UserError
from tests.conftest import MULTI30K, MULTI30K_WHY, require_dir
from tests.data.hazards import read_each

README = Path(__file__).resolve().parents[2] / "src" / "kqv" / "data" / "corpora" / "README.md"


def write(path: Path, text: str, zipped: bool = False) -> Path:
    raw = text.encode()
    path.write_bytes(gzip.compress(raw) if zipped else raw)
    return path


# --- read_tsv


@pytest.mark.parametrize("zipped", [False, True])
def test_reads_plain_and_gzipped_tsv_ignoring_extra_columns(tmp_path, zipped):
    path = write(tmp_path / "pairs.txt", "Go.\tVe.\tCC-BY 2.0 (France)\n  Hi. \t Hola.\n", zipped)
    assert read_tsv(path) == [("Go.", "Ve."), ("Hi.", "Hola.")]
    assert read_tsv(str(path), reverse=True) == [("Ve.", "Go."), ("Hola.", "Hi.")]
    with pytest.raises(UserError, match=":2: unknown column 3"):
        read_tsv(path, src_col=3, tgt_col=1)
    path = write(tmp_path / "three.txt", "Go.\tVe.\tCC-BY 2.0\n", zipped)
    assert read_tsv(path, src_col=3, tgt_col=1) == [("CC-BY 2.0", "Go.")]


def test_gzip_is_recognised_by_its_bytes_not_its_name(tmp_path):
    assert read_tsv(write(tmp_path / "pairs.tsv", "a\tb\n", zipped=True)) == [("a", "b")]


def test_header_crlf_bom_and_no_final_newline(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_bytes(b"\xef\xbb\xbfref\ten\tes\r\nx.1\tone\tuno\r\nx.2\ttwo\tdos")
    assert read_tsv(path, src_col=2, tgt_col=3, header=True) == [("one", "uno"), ("two", "dos")]


def test_fields_are_normalised_to_nfc(tmp_path):
    decomposed = "cafe\u0301"  # e + combining acute accent
    path = write(tmp_path / "p.tsv", f"{decomposed}\tcafé\n")
    src, tgt = read_tsv(path)[0]
    assert src == tgt == "café" and unicodedata.is_normalized("NFC", src) and len(src) == 4


def test_line_separators_inside_a_sentence_do_not_split_it(tmp_path):
    path = write(tmp_path / "p.tsv", "one\u2028two\tuno\u0085dos\n")
    assert read_tsv(path) == [("one\u2028two", "uno\u0085dos")]


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("a\tb\nno tab here at all\n", {}, r":2: the line has no tab \(1 column of 18 characters\)"),
        ("a\tb\n\nc\td\n", {}, r":2: the line is blank"),
        ("a\tb\n\n", {}, r":2: the line is blank"),
        ("a\tb\nc\td\n", {"tgt_col": 3}, r":1: unknown column 3: the line has only 2 tab-separated columns"),
        ("a\tb\tc\nc\td\n", {"tgt_col": 3}, r":2: unknown column 3: the line has only 2"),
        ("a\tb\n  \tc\n", {}, r":2: column 1 is empty"),
        ("a\tb\nc\t \n", {}, r":2: column 2 is empty"),
        ("", {}, r": holds no pairs"),
        ("ref\ten\n", {"header": True}, r": holds no pairs after its header"),
    ],
)
def test_malformed_tsv_errors_name_file_and_line(tmp_path, content, kwargs, message):
    path = write(tmp_path / "pairs.tsv", content)
    with pytest.raises(UserError, match=re.escape(str(path)) + message):
        read_tsv(path, **kwargs)


SECRET = "QZXJ7" * 4  # a password, say: no two adjacent characters of it occur in a message or a path


def leaks(message: str) -> bool:
    return any(SECRET[i : i + 2] in message for i in range(len(SECRET) - 1))


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (f"{SECRET}\n", {}, r":1: the line has no tab \(1 column of 20 characters\)"),
        (f"a\tb\tc\n{SECRET}\t{SECRET}\n", {"tgt_col": 3}, r":2: unknown column 3: the line has only 2"),
        (f"a\tb\n{SECRET}\t \n", {}, r":2: column 2 is empty"),
        (f"a\tb\n{SECRET}\t\xff\n", {}, r":2: not UTF-8 text \(byte 0xff\)"),
        (f"a\tb\n{SECRET}\t\x00\n", {}, r":2: looks like a binary file"),
    ],
)
def test_errors_name_the_line_but_never_quote_it(tmp_path, content, kwargs, message):
    path = tmp_path / "passwd"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(UserError, match=re.escape(str(path)) + message) as err:
        read_tsv(path, **kwargs)
    assert not leaks(str(err.value)) and "\n" not in str(err.value)


def test_damaged_gzip_errors_never_quote_its_bytes(tmp_path):
    path = tmp_path / "pairs.tsv.gz"
    path.write_bytes(gzip.compress(b"a\tb\n") + SECRET.encode())  # gzip's own error would quote b'QZ'
    with pytest.raises(UserError, match="the gzip file is truncated or damaged") as err:
        read_tsv(path)
    assert not leaks(str(err.value))


def test_aligned_file_errors_never_quote_a_line(tmp_path):
    src, tgt = write(tmp_path / "a.en", f"{SECRET}\n{SECRET}\n"), write(tmp_path / "a.es", f"{SECRET}\n \n")
    with pytest.raises(UserError, match=re.escape(f"{tgt}:2: the line is blank")) as err:
        read_aligned(src, tgt)
    assert not leaks(str(err.value))
    with pytest.raises(UserError, match="has 2 lines but") as err:
        read_aligned(src, write(tmp_path / "b.es", f"{SECRET}\n"))
    assert not leaks(str(err.value))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, ": no such file"),
        (lambda p: p.mkdir(), r": is a folder, not a regular file; give a text file \(plain or .gz\)"),
        (lambda p: p.symlink_to(p), ": is a symlink loop"),
        (lambda p: p.symlink_to(p.parent / "gone.tsv"), r": is a symlink to .*gone.tsv, which does not exist"),
        (lambda p: p.write_bytes("a\tb\ncaf\xe9\tc\n".encode("latin-1")), r":2: not UTF-8 text \(byte 0xe9\)"),
        (lambda p: p.write_bytes(gzip.compress("x\ty\n\xff".encode("latin-1"))), r":2: not UTF-8 text"),
        (lambda p: p.write_bytes("a\tb".encode("utf-16-le")), r":1: looks like a binary file"),
        (lambda p: p.write_bytes(gzip.compress(b"a\tb\n" * 100)[:-6]), ": the gzip file is truncated or damaged"),
    ],
)
def test_unreadable_files_give_errors_naming_the_path(tmp_path, make, message):
    path = tmp_path / "pairs.tsv"
    make(path)
    with pytest.raises(UserError, match=re.escape(str(path)) + message):
        read_tsv(path)
    with pytest.raises(UserError, match=re.escape(str(path))):
        read_aligned(path, path)


def test_fifos_and_devices_are_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "pipe.tsv")
    good = write(tmp_path / "good.en", "one\n")
    tsv, aligned = "kqv.data.parallel:read_tsv", "kqv.data.parallel:read_aligned"
    errors = read_each(
        {
            "pipe": (tsv, tmp_path / "pipe.tsv"),
            "zero": (tsv, "/dev/zero"),
            "aligned": (aligned, good, tmp_path / "pipe.tsv"),
        }
    )
    assert errors == {
        "pipe": f"{tmp_path}/pipe.tsv: is a FIFO (named pipe), not a regular file; give a text file (plain or .gz)",
        "zero": "/dev/zero: is a character device, not a regular file; give a text file (plain or .gz)",
        "aligned": f"{tmp_path}/pipe.tsv: is a FIFO (named pipe), not a regular file; give a text file (plain or .gz)",
    }


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions, so nothing is refused")
def test_an_unreadable_file_is_a_one_line_error(tmp_path):
    path = write(tmp_path / "pairs.tsv", "a\tb\n")
    path.chmod(0)
    with pytest.raises(UserError, match=re.escape(f"{path}: cannot read it (Permission denied)")):
        read_tsv(path)


@pytest.mark.parametrize(("src_col", "tgt_col", "message"), [(2, 2, "must differ"), (0, 1, "count from 1")])
def test_bad_columns_are_user_errors(tmp_path, src_col, tgt_col, message):
    with pytest.raises(UserError, match=message):
        read_tsv(write(tmp_path / "p.tsv", "a\tb\n"), src_col=src_col, tgt_col=tgt_col)


# --- read_aligned


def test_reads_line_aligned_files_plain_and_gzipped(tmp_path):
    src = write(tmp_path / "train.de", "Ein Hund.\n Zwei Katzen. \n", zipped=True)
    tgt = write(tmp_path / "train.en", "A dog.\nTwo cats.")
    assert read_aligned(src, tgt) == [("Ein Hund.", "A dog."), ("Zwei Katzen.", "Two cats.")]


def test_aligned_files_of_different_lengths_are_named_with_their_counts(tmp_path):
    src = write(tmp_path / "a.de", "eins\nzwei\ndrei\n")
    tgt = write(tmp_path / "a.en", "one\ntwo\n")
    with pytest.raises(UserError, match=f"{re.escape(str(src))} has 3 lines but {re.escape(str(tgt))} has 2"):
        read_aligned(src, tgt)


@pytest.mark.parametrize("blank_side", [0, 1])
def test_a_blank_aligned_line_names_its_file_and_line(tmp_path, blank_side):
    texts = ["one\ntwo\nthree\n", "uno\ndos\ntres\n"]
    texts[blank_side] = "one\n \nthree\n"
    src, tgt = write(tmp_path / "x.en", texts[0]), write(tmp_path / "x.es", texts[1])
    blank = (src, tgt)[blank_side]
    with pytest.raises(UserError, match=re.escape(f"{blank}:2: the line is blank")):
        read_aligned(src, tgt)


def test_empty_aligned_files_are_an_error(tmp_path):
    with pytest.raises(UserError, match="are empty"):
        read_aligned(write(tmp_path / "a", ""), write(tmp_path / "b", ""))


def test_multi30k_reads_when_present():
    folder = require_dir(MULTI30K, MULTI30K_WHY)
    pairs = read_aligned(folder / "val.en.gz", folder / "val.de.gz")
    assert len(pairs) == 1014 and all(en and de for en, de in pairs)
    assert sum(words(en) for en, _ in pairs) == 12_167


# --- the embedded corpus


def test_embedded_corpus_matches_its_readme():
    raw = default_corpus_path().read_bytes()
    text = gzip.decompress(raw)
    readme = README.read_text()
    assert hashlib.sha256(text).hexdigest() in readme
    assert f"{len(text):,} bytes" in readme

    verses = read_default()
    assert len(verses) == EMBEDDED_PAIRS == 28_142 == len(text.splitlines()) - 1
    assert verses[0].ref == "Gen.1.1" and verses[0].es.startswith("En el principio crió Dios")
    assert verses[-1].ref == "Rev.22.21"
    assert max(max(words(v.en), words(v.es)) for v in verses) == 40
    assert sum(words(v.en) for v in verses) == 619_331 and sum(words(v.es) for v in verses) == 581_720
    assert read_tsv(default_corpus_path(), src_col=2, tgt_col=3, header=True)[0] == (verses[0].en, verses[0].es)


# --- held-out sets


def toy_pairs(n: int) -> list[tuple[str, str]]:
    """Pair i has 5 + i % 30 words a side, so about half have at most 20."""
    return [(" ".join([f"s{i}"] * (5 + i % 30)), " ".join([f"t{i}"] * (5 + i % 30))) for i in range(n)]


def assert_held_out_cleanly(splits: ParallelSplits):
    held_out = splits.valid + splits.test
    for side in (0, 1):
        train_side = {pair[side] for pair in splits.train}
        assert not any(pair[side] in train_side for pair in held_out)
        assert not {pair[side] for pair in splits.valid} & {pair[side] for pair in splits.test}


def test_split_sizes_order_determinism_and_disjointness():
    pairs = toy_pairs(3000)
    splits = split_pairs(pairs, seed=0, n_test=100, n_valid=200)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (2700, 200, 100)
    assert all(words(src) <= 20 and words(tgt) <= 20 for src, tgt in splits.test)
    assert any(words(src) > 20 for src, _ in splits.valid)
    assert sorted(splits.train + splits.valid + splits.test) == sorted(pairs)
    assert splits.train == [p for p in pairs if p in set(splits.train)]  # original order
    assert_held_out_cleanly(splits)
    assert "100 pairs drawn (seed 0)" in splits.description

    assert split_pairs(pairs, seed=0, n_test=100, n_valid=200) == splits
    assert split_pairs(pairs, seed=1, n_test=100, n_valid=200).test != splits.test


def test_repeated_sentences_never_cross_from_held_out_into_training():
    pairs = toy_pairs(400) + [("Yahweh spoke to Moses, saying,", f"Y habló Jehová á Moisés, {i}") for i in range(60)]
    pairs += [(f"and he said {i}", "diciendo:") for i in range(60)]
    for seed in range(5):
        assert_held_out_cleanly(split_pairs(pairs, seed=seed, n_test=50, n_valid=50))


def test_reversed_pairs_give_the_same_split():
    pairs = toy_pairs(1000) + [("same", f"mismo {i}") for i in range(30)]
    forward = split_pairs(pairs, seed=3)
    backward = split_pairs([(t, s) for s, t in pairs], seed=3)
    assert backward.test == [(t, s) for s, t in forward.test] and len(backward.train) == len(forward.train)


def test_small_corpora_scale_down_and_tiny_ones_are_refused():
    splits = split_pairs(toy_pairs(200))  # 112 short pairs: 11 test; 18 of the remaining 189 valid
    assert (len(splits.test), len(splits.valid), len(splits.train)) == (11, 18, 171)
    assert (len(split_pairs(toy_pairs(20)).test), len(split_pairs(toy_pairs(20)).valid)) == (1, 1)
    with pytest.raises(UserError, match="corpus too small to split: 19 pairs; need at least 20"):
        split_pairs(toy_pairs(19))
    with pytest.raises(UserError, match="no pair has both sides within 3 words"):
        split_pairs(toy_pairs(100), test_max_words=3)


def test_embedded_split_with_seed_0():
    verses = read_default()
    splits = split_pairs([(v.en, v.es) for v in verses], seed=0)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (27_130, 500, 500)
    assert all(words(en) <= 20 and words(es) <= 20 for en, es in splits.test)
    assert_held_out_cleanly(splits)
    readme = README.read_text()
    assert "| train | 27,130 |" in readme and "12,438" in splits.description and "12,438" in readme


def test_split_given_uses_given_sets_and_carves_missing_ones():
    train, valid, test = toy_pairs(1000), [("v", "w")], [("x", "y")]
    given = split_given(train, valid, test)
    assert (given.train, given.valid, given.test) == (train, valid, test) and "given" in given.description

    no_valid = split_given(train, test=test, n_valid=50)
    assert no_valid.test == test and len(no_valid.valid) == 50 and len(no_valid.train) == 950

    no_test = split_given(train, valid=train[:100], seed=0, n_test=500)
    assert len(no_test.test) == 53  # 10 % of the 538 short pairs
    overlap = set(no_test.test) & set(train[:100])  # drawn for the test set, so dropped from the given valid
    assert overlap and len(no_test.valid) == 100 - len(overlap) and not overlap & set(no_test.valid)
    assert_held_out_cleanly(split_given(train, seed=2, n_test=30, n_valid=30))
