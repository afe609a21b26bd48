import gzip
import hashlib
import json
import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from kqv.data.text import (
    EMBEDDED_SOURCE,
    BatchSampler,
    Corpus,
    consecutive_batches,
    fixed_batches,
    prepare_tokens,
    read_corpus,
    split_train_val,
)
from kqv.errors import UserError
from kqv.tokenizer import CharTokenizer
from tests.data.hazards import read_each

SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


class CountingTokenizer:
    """A char tokenizer that counts how often it encodes."""

    def __init__(self, text: str, vocab_size: int | None = None):
        self.inner = CharTokenizer.train(text)
        self.vocab_size = vocab_size or self.inner.vocab_size
        self.calls = 0

    def encode(self, text):
        self.calls += 1
        return self.inner.encode(text)

    def fingerprint(self):
        return f"{self.inner.fingerprint()}-{self.vocab_size}"


# --- reading corpora


def test_embedded_corpus_is_tiny_shakespeare():
    corpus = read_corpus(None)
    assert len(corpus.text) == 1_115_394 and corpus.source == EMBEDDED_SOURCE
    assert hashlib.sha256(corpus.text.encode()).hexdigest() == corpus.sha256 == SHAKESPEARE_SHA256
    assert corpus.text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")


def test_reads_a_file_and_a_folder_of_txt_files(tmp_path):
    (tmp_path / "one.txt").write_text("héllo wörld\n", encoding="utf-8")
    corpus = read_corpus(tmp_path / "one.txt")
    assert corpus.text == "héllo wörld\n" and corpus.source == str(tmp_path / "one.txt")

    folder = tmp_path / "books"
    (folder / "b").mkdir(parents=True)
    (folder / "b" / "2.txt").write_text("second")
    (folder / "a.txt").write_text("first")
    (folder / "c.txt").write_bytes(b"\xef\xbb\xbfthird")  # a byte-order mark is dropped
    (folder / "notes.md").write_text("not part of the corpus")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "x.txt").write_text("skipped")
    assert read_corpus(folder).text == "first\nsecond\nthird"
    assert read_corpus(str(folder)).source == str(folder)


def test_reads_a_gzipped_file(tmp_path):
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(b"zipped text"))
    assert read_corpus(tmp_path / "t.txt.gz").text == "zipped text"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file or folder"),
        (lambda p: p.mkdir(), "folder has no .txt files"),
        (lambda p: (p.mkdir(), (p / "a.md").write_text("x")), "folder has no .txt files"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00"), "looks like a binary file.*NUL bytes"),
        (lambda p: p.write_bytes("caf\xe9 latin-1".encode("latin-1")), "looks like a binary file.*0xe9 at offset 3"),
        (lambda p: p.write_bytes("hi".encode("utf-16")), "looks like a binary file"),
        (lambda p: p.write_bytes(b""), "empty or only whitespace"),
        (lambda p: p.write_text(" \n\t\n"), "empty or only whitespace"),
        (lambda p: (p.mkdir(), (p / "a.txt").write_text(""), (p / "b.txt").write_text("\n")), "empty or only"),
        (lambda p: p.write_bytes(gzip.compress(b"text")[:-4]), "truncated"),
    ],
)
def test_unusable_corpora_give_errors_naming_the_path(tmp_path, make, message):
    path = tmp_path / "corpus"
    make(path)
    with pytest.raises(UserError, match=message) as err:
        read_corpus(path)
    assert str(path) in str(err.value)


def test_a_bad_file_inside_a_folder_is_named(tmp_path):
    (tmp_path / "good.txt").write_text("fine")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match="bad.txt: looks like a binary file"):
        read_corpus(tmp_path)


# --- paths that are not plain files: refused in one line, never a hang


@pytest.fixture(scope="module")
def hazards(tmp_path_factory) -> dict[str, str]:
    """{case: read_corpus's error} for paths that would hang a careless reader, read in a child with a deadline."""
    root = tmp_path_factory.mktemp("hazards")
    os.mkfifo(root / "pipe")
    (root / "link-to-pipe").symlink_to(root / "pipe")
    (root / "with-pipe").mkdir()
    (root / "with-pipe" / "a.txt").write_text("text")
    os.mkfifo(root / "with-pipe" / "b.txt")
    (root / "with-zero").mkdir()
    (root / "with-zero" / "zero.txt").symlink_to("/dev/zero")
    (root / "with-parent-link" / "sub").mkdir(parents=True)
    (root / "with-parent-link" / "a.txt").write_text("text")
    (root / "with-parent-link" / "sub" / "up").symlink_to("..")
    (root / "with-self-link").mkdir()
    (root / "with-self-link" / "me").symlink_to("me")
    (root / "with-other-pipe").mkdir()
    (root / "with-other-pipe" / "a.txt").write_text("text")
    os.mkfifo(root / "with-other-pipe" / "pipe")  # not a .txt file: not part of the corpus
    cases = {
        "pipe": root / "pipe",
        "link-to-pipe": root / "link-to-pipe",
        "with-pipe": root / "with-pipe",
        "/dev/zero": Path("/dev/zero"),
        "with-zero": root / "with-zero",
        "with-parent-link": root / "with-parent-link",
        "with-self-link": root / "with-self-link",
        "with-other-pipe": root / "with-other-pipe",
    }
    return {key: message.replace(str(root), "ROOT") for key, message in read_each_path(cases).items()}


def read_each_path(cases: dict[str, Path]) -> dict[str, str]:
    return read_each({key: ("kqv.data.text:read_corpus", path) for key, path in cases.items()})


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("pipe", "ROOT/pipe: is a FIFO (named pipe), not a regular file; give a UTF-8 text file or a folder of"),
        ("link-to-pipe", "ROOT/link-to-pipe: is a FIFO (named pipe), not a regular file"),
        ("with-pipe", "ROOT/with-pipe/b.txt: is a FIFO (named pipe), not a regular file; a corpus folder's .txt"),
        ("/dev/zero", "/dev/zero: is a character device, not a regular file"),
        ("with-zero", "ROOT/with-zero/zero.txt: is a character device, not a regular file"),
        (
            "with-parent-link",
            "ROOT/with-parent-link/sub/up: is a symlink loop: it leads back to ROOT/with-parent-link,",
        ),
        ("with-self-link", "ROOT/with-self-link/me: is a symlink loop (following its links never reaches a file)"),
        ("with-other-pipe", "read without an error"),
    ],
)
def test_fifos_devices_and_link_loops_are_refused_in_one_line_without_hanging(hazards, case, message):
    assert hazards[case].startswith(message)
    assert "\n" not in hazards[case]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.symlink_to(p), r": is a symlink loop \(following its links never reaches a file\)"),
        (lambda p: (p.symlink_to(p.with_name("b")), p.with_name("b").symlink_to(p)), ": is a symlink loop"),
        (lambda p: p.symlink_to(p.with_name("gone.txt")), r": is a symlink to .*gone.txt, which does not exist"),
        (lambda p: socket.socket(socket.AF_UNIX).bind(str(p)), ": is a socket, not a regular file"),
        (lambda p: p.symlink_to("/dev/null"), ": is a character device, not a regular file"),
        (
            lambda p: (p.mkdir(), (p / "a.txt").symlink_to(p / "gone")),
            r"/a.txt: is a symlink to .*gone, which does not",
        ),
        (lambda p: (p.mkdir(), (p / "x.txt").mkdir(), (p / "x.txt" / "y.md").write_text("x")), ": folder has no .txt"),
    ],
)
def test_links_sockets_and_devices_are_one_line_errors(tmp_path, make, message):
    path = tmp_path / "c"  # short: a socket's path must fit in 108 bytes
    make(path)
    with pytest.raises(UserError, match=re.escape(str(path)) + message) as err:
        read_corpus(path)
    assert "\n" not in str(err.value)


def test_a_file_where_a_folder_is_expected_is_no_such_file(tmp_path):
    (tmp_path / "a.txt").write_text("text")
    with pytest.raises(UserError, match="a.txt/b.txt: no such file or folder"):
        read_corpus(tmp_path / "a.txt" / "b.txt")


def test_links_to_folders_are_followed_in_path_order(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "b.txt").write_text("linked")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("first")
    (corpus / "m").symlink_to(tmp_path / "shared")  # read as m/b.txt
    (corpus / "z.txt").symlink_to(tmp_path / "shared" / "b.txt")
    (corpus / "dangling.md").symlink_to(tmp_path / "gone")  # not a .txt: ignored like any other file
    assert read_corpus(corpus).text == "first\nlinked\nlinked"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions, so nothing is refused")
def test_unreadable_files_and_folders_are_one_line_errors(tmp_path):
    (tmp_path / "secret.txt").write_text("text")
    (tmp_path / "secret.txt").chmod(0)
    with pytest.raises(UserError, match=r"secret.txt: cannot read it \(Permission denied\)"):
        read_corpus(tmp_path / "secret.txt")
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed" / "a.txt").write_text("text")
    (tmp_path / "closed").chmod(0o300)  # can enter, cannot list
    try:
        with pytest.raises(UserError, match=r"closed: cannot list the folder \(Permission denied\)"):
            read_corpus(tmp_path)
    finally:
        (tmp_path / "closed").chmod(0o700)


def test_errors_never_quote_the_corpus(tmp_path):
    secret = "QZXJ7" * 4  # no two adjacent characters of it occur in a message or a path
    for name, raw in [
        ("latin1.txt", f"{secret} caf\xe9".encode("latin-1")),
        ("nul.txt", f"{secret}\x00".encode()),
        ("trailing.txt.gz", gzip.compress(b"text") + secret.encode()),  # gzip's own error quotes b'QZ'
    ]:
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(UserError, match=re.escape(name)) as err:
            read_corpus(tmp_path / name)
        assert not any(secret[i : i + 2] in str(err.value) for i in range(len(secret) - 1)), str(err.value)


# --- splitting and caching tokens


def test_split_is_first_90_percent_train_last_10_percent_validation():
    train, val = split_train_val(np.arange(1005))
    assert (len(train), len(val)) == (904, 101)
    assert train[-1] == 903 and val[0] == 904 and val[-1] == 1004


def test_shakespeare_char_split_matches_nanogpt(tmp_path):
    corpus = read_corpus(None)
    data = prepare_tokens(corpus, CharTokenizer.train(corpus.text), tmp_path / "data")
    assert (len(data.train), len(data.val), data.vocab_size) == (1_003_854, 111_540, 65)
    assert isinstance(data.train, np.memmap) and data.train.dtype == np.uint16 and not data.train.flags.writeable
    assert CharTokenizer.train(corpus.text).decode(np.concatenate([data.train[:20], data.val[-5:]])) == (
        corpus.text[:20] + corpus.text[-5:]
    )


def test_cache_is_reused_without_encoding_again(tmp_path):
    corpus = Corpus("to be or not to be " * 50, "test")
    tok = CountingTokenizer(corpus.text)
    first = prepare_tokens(corpus, tok, tmp_path / "data")
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["tokenizer_fingerprint"] == tok.fingerprint()
    assert meta["corpus_sha256"] == corpus.sha256 and (meta["train_tokens"], meta["val_tokens"]) == (855, 95)
    mtime = (tmp_path / "data" / "train.bin").stat().st_mtime_ns

    second = prepare_tokens(corpus, tok, tmp_path / "data")
    assert tok.calls == 1 and second.reused and not first.reused
    assert (tmp_path / "data" / "train.bin").stat().st_mtime_ns == mtime
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)


def test_cache_is_rebuilt_when_tokenizer_corpus_or_files_differ(tmp_path):
    corpus = Corpus("to be or not to be " * 50, "test")
    prepare_tokens(corpus, CountingTokenizer(corpus.text), tmp_path)

    other_tokenizer = CountingTokenizer(corpus.text + "ABC")  # more characters: different ids
    data = prepare_tokens(corpus, other_tokenizer, tmp_path)
    assert other_tokenizer.calls == 1 and not data.reused
    assert data.train[0] == other_tokenizer.inner.encode("t")[0]

    other_corpus = Corpus("not to be " * 50, "test")
    assert not prepare_tokens(other_corpus, other_tokenizer, tmp_path).reused
    assert prepare_tokens(other_corpus, other_tokenizer, tmp_path).reused

    (tmp_path / "val.bin").write_bytes(b"\x00")  # damaged
    assert not prepare_tokens(other_corpus, other_tokenizer, tmp_path).reused
    (tmp_path / "meta.json").write_text("{")
    assert not prepare_tokens(other_corpus, other_tokenizer, tmp_path).reused
    assert other_tokenizer.calls == 4


def test_large_vocabularies_use_uint32(tmp_path):
    corpus = Corpus("abc" * 100, "test")
    data = prepare_tokens(corpus, CountingTokenizer(corpus.text, vocab_size=70_000), tmp_path)
    assert data.train.dtype == np.uint32 and (tmp_path / "train.bin").stat().st_size == 4 * len(data.train)
    small = prepare_tokens(corpus, CountingTokenizer(corpus.text, vocab_size=65_536), tmp_path / "small")
    assert small.train.dtype == np.uint16


def test_without_a_cache_dir_tokens_stay_in_memory(tmp_path):
    corpus = Corpus("abcd" * 10, "test")
    data = prepare_tokens(corpus, CountingTokenizer(corpus.text), None)
    assert (len(data.train), len(data.val)) == (36, 4) and not data.reused


# --- batches

TOKENS = np.arange(1000, dtype=np.uint16)  # token i == position i, so a window shows where it starts


def test_batches_are_windows_with_targets_shifted_by_one():
    x, y = BatchSampler(TOKENS, block_size=16, batch_size=8, seed=0).next_batch()
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    starts = x[:, :1]
    assert torch.equal(x, starts + torch.arange(16)) and torch.equal(y, starts + 1 + torch.arange(16))


def test_every_window_fits_and_the_last_token_is_reachable():
    sampler = BatchSampler(np.arange(11, dtype=np.uint16), block_size=8, batch_size=64, seed=0)
    starts = torch.cat([sampler.next_batch().x[:, 0] for _ in range(5)])
    assert set(starts.tolist()) == {0, 1, 2}  # windows of 9 tokens in 11: the last one ends at token 10


def test_same_seed_same_batches_other_seed_other_batches():
    def draw(seed):
        sampler = BatchSampler(TOKENS, block_size=16, batch_size=4, seed=seed)
        return torch.stack([sampler.next_batch().x for _ in range(3)])

    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))


def test_resume_from_state_dict_continues_exactly():
    sampler = BatchSampler(TOKENS, block_size=16, batch_size=4, seed=7)
    for _ in range(3):
        sampler.next_batch()
    state = json.loads(json.dumps(sampler.state_dict()))
    expected = [sampler.next_batch() for _ in range(3)]

    resumed = BatchSampler(TOKENS, block_size=16, batch_size=4, seed=123)
    resumed.load_state_dict(state)
    assert resumed.batches_drawn == 3 and resumed.seed == 7
    for want, got in zip(expected, (resumed.next_batch() for _ in range(3)), strict=True):
        assert torch.equal(want.x, got.x) and torch.equal(want.y, got.y)
    assert resumed.batches_drawn == 6


def test_resume_with_other_settings_is_refused():
    state = BatchSampler(TOKENS, block_size=16, batch_size=4, seed=0).state_dict()
    with pytest.raises(UserError, match="saved for block_size 16, batch_size 4 and 1000 tokens"):
        BatchSampler(TOKENS, block_size=32, batch_size=4, seed=0).load_state_dict(state)


@pytest.mark.parametrize("n", [2, 9, 17, 100, 1000])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_consecutive_batches_score_every_target_exactly_once(n, batch_size):
    tokens = TOKENS[:n]
    targets = []
    for x, y in consecutive_batches(tokens, block_size=8, batch_size=batch_size):
        assert x.shape == y.shape and x.shape[0] <= batch_size and x.shape[1] <= 8
        assert torch.equal(y, x + 1)  # token i == position i: each target is the next token
        targets += y.flatten().tolist()
    assert sorted(targets) == list(range(1, n))  # every token but the first, once


def test_fixed_batches_are_deterministic():
    first = fixed_batches(TOKENS, block_size=8, batch_size=4, n_batches=3, seed=0)
    second = fixed_batches(TOKENS, block_size=8, batch_size=4, n_batches=3, seed=0)
    assert len(first) == len(second) == 3
    assert all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0].x, first[1].x)


def test_a_split_shorter_than_a_window_is_a_clear_error():
    with pytest.raises(UserError, match=r"validation split has 16 tokens but needs more than block_size \(16\)") as e:
        BatchSampler(TOKENS[:16], block_size=16, batch_size=2, seed=0, name="validation")
    assert "longer corpus or a smaller block_size" in str(e.value)
    x, _ = BatchSampler(TOKENS[:17], block_size=16, batch_size=2, seed=0).next_batch()
    assert x[:, 0].tolist() == [0, 0]


def test_the_embedded_kitchen_corpus_is_the_generated_one_without_the_probe_sentence():
    import importlib.util
    from pathlib import Path

    corpus = read_corpus("embedded:kitchen")
    assert corpus.source == "embedded:kitchen"
    assert hashlib.sha256(corpus.text.encode()).hexdigest() == (
        "2cceda6ca21239035fbe08027cb41446aa8b23b2f3daeb2c5b55a2fef51ec70c"
    )
    lines = corpus.text.splitlines()
    assert len(lines) == 6000
    assert not any(line.endswith("pizza came out of the oven and it tasted good.") for line in lines)
    assert any(line.endswith("came out of the oven and it tasted good.") for line in lines)
    script = Path(__file__).resolve().parents[2] / "scripts" / "make_kitchen_corpus.py"
    spec = importlib.util.spec_from_file_location("make_kitchen_corpus", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.corpus() == corpus.text  # the script rebuilds it exactly


def test_an_unknown_embedded_corpus_is_a_clear_error():
    with pytest.raises(UserError, match="no such embedded corpus; choose one of: embedded:tinyshakespeare"):
        read_corpus("embedded:nope")
