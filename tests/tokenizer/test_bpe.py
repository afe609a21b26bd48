import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from kqv.data.text import read_corpus
from kqv.errors import UserError
from kqv.tokenizer import BPETokenizer, load_tokenizer, save_tokenizer, tokenizer_from_dict, train_tokenizer

SHAKESPEARE = read_corpus(None).text
TOK = BPETokenizer.train(SHAKESPEARE[:100_000], vocab_size=512)
UNICODE_HEAVY = "Crème brûlée, naïve façade — 東京タワー 🦀🇪🇸👩‍💻 Ελληνικά ﷽ \x00\t\r\n  end"


def test_learns_the_requested_vocabulary_and_compresses():
    assert TOK.vocab_size == 512
    held_out = SHAKESPEARE[-20_000:]
    assert len(TOK.encode(held_out)) < 0.65 * len(held_out.encode())  # about 0.56; bytes alone would be 1.0


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_for_any_unicode_text(text):
    assert TOK.decode(TOK.encode(text)) == text


def test_round_trip_on_unicode_heavy_text_outside_the_corpus():
    assert TOK.decode(TOK.encode(UNICODE_HEAVY)) == UNICODE_HEAVY


def test_ids_match_the_tokenizers_library_reloaded_from_to_dict():
    reference = Tokenizer.from_str(TOK.to_dict()["tokenizer"])
    ids = TOK.encode(UNICODE_HEAVY)
    assert ids == reference.encode(UNICODE_HEAVY).ids
    assert reference.decode(ids) == UNICODE_HEAVY


def test_save_load_gives_identical_ids_and_fingerprint(tmp_path):
    loaded = load_tokenizer(save_tokenizer(TOK, tmp_path / "tokenizer.json"))
    assert isinstance(loaded, BPETokenizer)
    sample = SHAKESPEARE[-5_000:] + UNICODE_HEAVY
    assert loaded.encode(sample) == TOK.encode(sample)
    assert loaded.fingerprint() == TOK.fingerprint()
    canonical = json.dumps(TOK.to_dict(), sort_keys=True, ensure_ascii=False)
    assert TOK.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()


def test_training_is_deterministic_and_the_fingerprint_tells_tokenizers_apart():
    again = BPETokenizer.train(SHAKESPEARE[:100_000], vocab_size=512)
    assert again.fingerprint() == TOK.fingerprint()
    assert BPETokenizer.train(SHAKESPEARE[:100_000], vocab_size=300).fingerprint() != TOK.fingerprint()


def test_train_tokenizer_bpe_uses_vocab_size_and_a_default():
    assert train_tokenizer("bpe", SHAKESPEARE[:20_000], vocab_size=300).vocab_size == 300
    tok = train_tokenizer("bpe", "tiny corpus", vocab_size=None)
    assert 256 < tok.vocab_size < 300  # a corpus this small runs out of pairs to merge


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="at least 257 .* got 256"):
        BPETokenizer.train("some text", vocab_size=256)
    with pytest.raises(UserError, match="vocab_size 100 is too small for the bpe tokenizer"):
        train_tokenizer("bpe", "some text", vocab_size=100)


@pytest.mark.parametrize("bad", [-1, 512])
def test_decode_rejects_ids_out_of_range(bad):
    with pytest.raises(ValueError, match=f"token id {bad} is out of range"):
        TOK.decode([10, bad])


def test_lone_surrogates_are_a_clear_error():
    with pytest.raises(UserError, match="lone surrogate"):
        TOK.encode("abc\udcff")


def test_from_dict_rejects_a_broken_tokenizer_string():
    with pytest.raises(UserError, match="ckpt.pt: not a valid bpe tokenizer"):
        tokenizer_from_dict({"kind": "bpe", "tokenizer": TOK.to_dict()["tokenizer"][:-10]}, where="ckpt.pt")


def test_special_tokens_spelled_out_in_a_text_are_encoded_as_text(tmp_path):
    """A translation source that says "</s>" must not end the sentence there, nor "<pad>" pad it."""
    from kqv.tokenizer import load_tokenizer, save_tokenizer

    specials = ("<pad>", "<s>", "</s>")
    trained = BPETokenizer.train(["a text with </s> and <pad> and <s> in it"] * 20, 300, specials)
    save_tokenizer(trained, tmp_path / "tokenizer.json")
    for tok in (trained, load_tokenizer(tmp_path / "tokenizer.json")):
        text = "stop </s> here <pad><s>"
        ids = tok.encode(text)
        assert not {0, 1, 2} & set(ids) and tok.decode(ids) == text
        assert [tok.token_id(s) for s in specials] == [0, 1, 2]
