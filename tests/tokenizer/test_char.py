import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kqv.data.text import read_corpus
from kqv.errors import UserError
from kqv.tokenizer import (
    CharTokenizer,
    UnknownTokenError,
    load_tokenizer,
    save_tokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)

SHAKESPEARE = read_corpus(None).text
TOK = CharTokenizer.train(SHAKESPEARE)


def test_vocabulary_is_the_sorted_characters_of_the_corpus():
    assert TOK.vocab_size == 65
    assert TOK.chars == sorted(set(TOK.chars)) == sorted(set(SHAKESPEARE))
    assert TOK.chars[:2] == ["\n", " "] and TOK.chars[-1] == "z"


def test_worked_example_from_the_docstring():
    tok = CharTokenizer.train("hello")
    assert tok.chars == ["e", "h", "l", "o"]
    assert tok.encode("hole") == [1, 3, 2, 0]
    assert tok.decode([1, 3, 2, 0]) == "hole"


def test_round_trip_on_the_whole_corpus():
    ids = TOK.encode(SHAKESPEARE)
    assert len(ids) == len(SHAKESPEARE) and max(ids) == TOK.vocab_size - 1
    assert TOK.decode(ids) == SHAKESPEARE


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=TOK.chars))
def test_round_trip_for_any_text_in_the_alphabet(text):
    assert TOK.decode(TOK.encode(text)) == text


def test_unknown_characters_are_named_with_the_first_position():
    with pytest.raises(UnknownTokenError) as err:
        TOK.encode("Hello café\x00!")
    message = str(err.value)
    assert isinstance(err.value, UserError)
    assert "'\\x00'" in message and "'é'" in message and "2 character(s)" in message
    assert "first at position 9" in message
    assert "training corpus" in message


def test_many_unknown_characters_are_listed_up_to_a_limit():
    with pytest.raises(UnknownTokenError, match=r"'ά', .* and 5 more \(first at position 0\)"):
        TOK.encode("".join(chr(c) for c in range(0x3AC, 0x3AC + 15)))


@pytest.mark.parametrize("bad", [-1, 65, 1000])
def test_decode_rejects_ids_out_of_range(bad):
    with pytest.raises(ValueError, match=f"token id {bad} is out of range"):
        TOK.decode([0, bad, 1])


@pytest.mark.parametrize(("chars", "why"), [(["a", "a"], "repeated"), (["ab"], "single characters"), ([], "at least")])
def test_invalid_vocabularies_are_rejected(chars, why):
    with pytest.raises(ValueError, match=why):
        CharTokenizer(chars)


def test_save_load_round_trip_keeps_ids_and_fingerprint(tmp_path):
    path = save_tokenizer(TOK, tmp_path / "run" / "tokenizer.json")
    loaded = load_tokenizer(path)
    assert isinstance(loaded, CharTokenizer) and loaded.chars == TOK.chars
    assert loaded.encode(SHAKESPEARE[:1000]) == TOK.encode(SHAKESPEARE[:1000])
    assert loaded.fingerprint() == TOK.fingerprint()
    assert tokenizer_from_dict(json.loads(json.dumps(TOK.to_dict()))).fingerprint() == TOK.fingerprint()


def test_fingerprint_is_the_sha256_of_the_canonical_json():
    canonical = json.dumps({"chars": TOK.chars, "kind": "char"}, sort_keys=True, ensure_ascii=False)
    assert TOK.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()
    assert CharTokenizer.train(SHAKESPEARE[::-1]).fingerprint() == TOK.fingerprint()  # same characters, same ids
    assert CharTokenizer.train("abc").fingerprint() != CharTokenizer.train("abd").fingerprint()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such tokenizer file"),
        (b'{"kind": "char", "chars": ["a", "b"', "not a complete tokenizer JSON file"),
        (b"", "not a complete tokenizer JSON file"),
        (b'{"kind": "wordpiece"}', "unknown tokenizer kind 'wordpiece'; expected one of: char, bpe"),
        (b'["a", "b"]', "unknown tokenizer kind None"),
        (b'{"kind": "char", "chars": ["a", "a"]}', "not a valid char tokenizer"),
        (b'{"kind": "char"}', "not a valid char tokenizer"),
        (b'{"kind": "bpe", "tokenizer": "{}"}', "not a valid bpe tokenizer"),
    ],
)
def test_load_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "tokenizer.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        load_tokenizer(path)
    assert str(path) in str(err.value)


def test_train_tokenizer_by_kind():
    assert train_tokenizer("char", "abcab", vocab_size=None).chars == ["a", "b", "c"]
    with pytest.raises(UserError, match="unknown tokenizer 'word'; choose one of: char, bpe"):
        train_tokenizer("word", "abc", None)
