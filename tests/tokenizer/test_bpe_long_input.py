"""BPE training and encoding on long lines and long runs without spaces: same tokenizer, linear time."""

import json
import random
import re
import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import kqv.progress
from kqv.data.text import read_corpus
from kqv.tokenizer import bpe
from kqv.tokenizer.bpe import MAX_RUN, WHITESPACE, BPETokenizer, VocabMerges, training_pieces, vocab_merges_of

SHAKESPEARE = read_corpus(None).text[:300_000]
PRE = pre_tokenizers.ByteLevel(add_prefix_space=False)
IS_SPACE = re.compile(f"[{WHITESPACE}]")
# Characters and strings where GPT-2's regex is subtle: kinds of whitespace (U+001C is not one, though
# str.isspace says so), letters, digits, punctuation and the contractions it splits off.
PARTS = [" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x1c", "\x85", "\xa0", "\u2003", "\u3000"]
PARTS += ["a", "Zé", "東京", "٣", "42", "'s", "'re", "'", ".", "—", "😀", "<s>"]


def unsplit_reference(texts: list[str], vocab_size: int, special_tokens: tuple[str, ...] = ()) -> Tokenizer:
    """What BPETokenizer.train did before it cut its input: the `tokenizers` trainer fed the texts whole."""
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(special_tokens),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return hf


def pre_tokens(text: str) -> list[str]:
    return [piece for piece, _ in PRE.pre_tokenize_str(text)]


def random_letters(n: int) -> str:
    return "".join(random.Random(0).choices(string.ascii_lowercase, k=n))


def test_whitespace_is_exactly_what_gpt2s_regex_calls_whitespace():
    for c in map(chr, range(0x10000)):  # Unicode has no whitespace outside the BMP
        if 0xD800 <= ord(c) < 0xE000 or c == " ":  # surrogates are not text; " " joins the next word
            continue
        splits_alone = len(PRE.pre_tokenize_str(f"a{c}{c}a")) == 4  # "a", c, c, "a" only for whitespace
        assert splits_alone == bool(IS_SPACE.fullmatch(c)), hex(ord(c))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PARTS), max_size=80).map("".join), st.integers(1, 30))
def test_pieces_have_exactly_the_pre_tokens_of_the_whole_text(text, piece_chars):
    pieces = list(training_pieces(text, piece_chars))
    assert "".join(pieces) == text and all(pieces)
    assert [t for piece in pieces for t in pre_tokens(piece)] == pre_tokens(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["a", "ab", "1", ".", " ", "\n", "a" * 300, " " * 300]), max_size=12).map("".join))
def test_long_runs_are_cut_every_max_run_characters(text):
    pieces = list(training_pieces(text, 64))
    assert "".join(pieces) == text
    assert max((len(t) for piece in pieces for t in pre_tokens(piece)), default=0) <= MAX_RUN + 1  # + a space


def test_ordinary_text_trains_exactly_the_tokenizer_of_the_unsplit_text():
    tok = BPETokenizer.train(SHAKESPEARE, vocab_size=512)
    assert tok.hf.to_str() == unsplit_reference([SHAKESPEARE], 512).to_str()
    assert len(vocab_merges_of(json.loads(tok.hf.to_str())).merges) == 512 - 256  # still GPT-2 style
    lines, specials = SHAKESPEARE.splitlines()[:3000], ("<pad>", "<s>", "</s>")  # as translation trains it
    assert BPETokenizer.train(lines, 300, specials).hf.to_str() == unsplit_reference(lines, 300, specials).to_str()


def test_one_long_line_trains_exactly_the_merges_of_the_unsplit_line():
    line = SHAKESPEARE.replace("\n", " ")  # 300k characters, no line break
    tok = BPETokenizer.train(line, vocab_size=512)
    assert tok.hf.to_str() == unsplit_reference([line], 512).to_str()  # the same merges, in the same order


def test_a_run_without_spaces_trains_in_linear_time_and_round_trips():
    text = random_letters(200_000)  # one pre-token: trained whole, this took 21 s (400k: 120 s)
    started = time.perf_counter()
    tok = BPETokenizer.train(text, vocab_size=512)
    assert time.perf_counter() - started < 5  # about 0.2 s
    assert tok.vocab_size == 512
    ids = tok.encode(text)
    assert tok.decode(ids) == text and len(ids) < 0.95 * len(text)


@pytest.mark.parametrize(
    "text",
    [
        " " * 100_000,
        "\n" * 50_000 + "end",
        ("ab" * 60_000) + " " + random_letters(70_000),
        SHAKESPEARE.replace("\n", " ")[:100_000],
        "".join(random.Random(1).choices(["東京", "😀", "x", "\u3000", "'s", "\r\n"], k=40_000)),
    ],
    ids=["spaces", "newlines", "mixed-runs", "one-line", "unicode"],
)
def test_long_runs_round_trip(text):
    tok = BPETokenizer.train(text, vocab_size=300)
    assert tok.decode(tok.encode(text)) == text


TRAINED = BPETokenizer.train(SHAKESPEARE[:50_000], 400, ("<pad>", "<s>", "</s>"))
GPT2_LIKE = BPETokenizer.from_vocab_merges(
    VocabMerges(
        {**{c: i for i, c in enumerate(pre_tokenizers.ByteLevel.alphabet())}, "<|endoftext|>": 256, "Ġa": 257},
        [("Ġ", "a")],
        ["<|endoftext|>"],
    )
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*PARTS, "<pad>", "</s>", "<|endoftext|>", "the", " the"]), max_size=60).map("".join))
def test_encoding_in_pieces_gives_the_ids_of_the_whole_text(text):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bpe, "ENCODE_IN_PIECES_FROM", 0)
        patch.setattr(bpe, "PIECE_CHARS", 3)
        patch.setattr(bpe, "ENCODE_BATCH", 2)
        for tok in (TRAINED, GPT2_LIKE):
            assert tok.encode(text) == tok.hf.encode(text).ids


def test_training_shows_a_bar_on_a_terminal_and_nothing_otherwise(monkeypatch, capsys):
    monkeypatch.setattr(kqv.progress, "progress_enabled", lambda: False)
    BPETokenizer.train(SHAKESPEARE[:20_000], 300)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(kqv.progress, "progress_enabled", lambda: True)
    BPETokenizer.train(SHAKESPEARE[:20_000], 300)
    assert "training BPE" in capsys.readouterr().err
    BPETokenizer.train(iter([SHAKESPEARE[:10_000]]), 300)  # no length: a count, not a bar
    assert "training BPE" in capsys.readouterr().err
