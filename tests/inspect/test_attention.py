"""Per-head summaries, top-attended keys, masks of the plotted matrices, token labels and the query lookup,
each against a hand-made pattern or a hand-written answer."""

import math

import numpy as np
import pytest

from kqv.errors import UserError
from kqv.inspect.attention import (
    _BYTE_OF,
    allowed_cells,
    check_pattern,
    find_query,
    masked_pattern,
    resolve_index,
    row_entropy,
    summarize,
    summarize_head,
    token_label,
    token_texts,
    top_attended,
    word_around,
)

PREV = np.array(  # the module docstring's head: every query looks one token back (query 0 at itself)
    [
        [1.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ]
)


def causal_uniform(T: int) -> np.ndarray:
    """Each query spreads its attention evenly over itself and the past: row i is 1/(i+1) on keys 0…i."""
    return np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]


@pytest.mark.parametrize("n", [1, 2, 7, 128])
def test_entropy_of_a_uniform_row_is_log_n_and_of_a_one_hot_row_zero(n):
    assert row_entropy(np.full(n, 1.0 / n)) == pytest.approx(math.log(n), abs=1e-12)
    one_hot = np.zeros(n)
    one_hot[n // 2] = 1.0
    assert row_entropy(one_hot) == 0.0


def test_entropy_treats_zero_weights_as_nothing_and_works_row_by_row():
    rows = row_entropy(causal_uniform(5))
    assert rows == pytest.approx([math.log(i + 1) for i in range(5)])
    assert np.isfinite(rows).all()  # 0·log 0 = 0, no NaN from the masked zeros
    assert row_entropy(np.array([0.5, 0.5, 0.0])) == pytest.approx(math.log(2))


def test_summary_of_a_previous_token_head():
    s = summarize_head(PREV, layer=2, head=1)
    assert (s.layer, s.head) == (2, 1)
    assert s.entropy == 0.0
    assert s.prev_token == 1.0
    assert s.first_token == pytest.approx(1 / 3)  # queries 1, 2, 3: only query 1's previous token is the first
    assert s.self_token == 0.0


def test_summary_of_a_self_head_and_of_a_first_token_head():
    own = summarize_head(np.eye(5))
    assert (own.prev_token, own.first_token, own.self_token, own.entropy) == (0.0, 0.0, 1.0, 0.0)
    sink = np.zeros((5, 5))
    sink[:, 0] = 1.0  # every query looks at the first token (an "attention sink")
    s = summarize_head(sink)
    assert (s.prev_token, s.first_token, s.self_token) == (0.25, 1.0, 0.0)  # only query 1's previous token is token 0


def test_summary_of_a_uniform_causal_head():
    T = 6
    s = summarize_head(causal_uniform(T))
    expected = np.mean([1 / (i + 1) for i in range(1, T)])  # queries 1…T−1, each 1/(i+1) on every visible key
    assert s.prev_token == pytest.approx(expected)
    assert s.first_token == pytest.approx(expected)
    assert s.self_token == pytest.approx(expected)
    assert s.entropy == pytest.approx(np.mean([math.log(i + 1) for i in range(T)]))


def test_one_token_and_cross_attention_summaries():
    one = summarize_head(np.ones((1, 1)))
    assert one.prev_token is None and one.first_token == 1.0 and one.self_token == 1.0
    cross = summarize_head(np.full((3, 4), 0.25), self_attention=False)
    assert cross.prev_token is None and cross.self_token is None  # no "previous" or "same" key across sequences
    assert cross.first_token == 0.25 and cross.entropy == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="square"):
        summarize_head(np.full((3, 4), 0.25))


def test_summarize_goes_layer_by_layer_then_head_by_head():
    patterns = np.stack([np.stack([PREV, np.eye(4)]), np.stack([causal_uniform(4), PREV])])  # (L=2, nh=2, 4, 4)
    out = summarize(patterns)
    assert [(s.layer, s.head) for s in out] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert (out[0].prev_token, out[1].self_token, out[3].prev_token) == (1.0, 1.0, 1.0)
    assert out[2].entropy > 0 and out[1].entropy == 0


def test_top_attended_orders_by_weight_and_breaks_ties_by_position():
    tokens = ["The", "␣pizza", "␣oven", "␣it"]
    top = top_attended(np.array([0.1, 0.4, 0.4, 0.1]), tokens, 3)
    assert [(a.index, a.token) for a in top] == [(1, "␣pizza"), (2, "␣oven"), (0, "The")]
    assert [a.weight for a in top] == [0.4, 0.4, 0.1]
    assert len(top_attended(np.array([0.5, 0.5]), ["a", "b"], 10)) == 2
    with pytest.raises(ValueError):
        top_attended(np.array([1.0]), ["a", "b"])


def test_allowed_cells_follow_the_mask():
    assert (allowed_cells("causal", 4, 4) == np.tril(np.ones((4, 4), bool))).all()
    assert allowed_cells("none", 3, 5).all() and allowed_cells("none", 3, 5).shape == (3, 5)
    assert (allowed_cells("anticausal", 3, 3) == np.triu(np.ones((3, 3), bool))).all()
    window = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], bool)  # kqv.nn.masks's example
    assert (allowed_cells("window:2", 4, 4) == window).all()


def test_the_masked_triangle_is_hidden_only_for_causal_attention():
    T = 5
    causal = masked_pattern(causal_uniform(T), allowed_cells("causal", T, T))
    assert (causal.mask == np.triu(np.ones((T, T), bool), k=1)).all()  # exactly the future, the diagonal shown
    full = np.full((T, T), 1.0 / T)  # an encoder head: every token sees every token
    assert not masked_pattern(full, allowed_cells("none", T, T)).mask.any()
    cross = np.full((3, T), 1.0 / T)
    assert not masked_pattern(cross, allowed_cells("none", 3, T)).mask.any()
    assert not masked_pattern(cross, None).mask.any()
    assert causal.filled(0.0).sum(axis=1) == pytest.approx(np.ones(T))


def test_a_pattern_whose_rows_do_not_sum_to_one_or_that_leaks_is_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        check_pattern(np.full((3, 3), 0.3))
    leaky = np.full((3, 3), 1 / 3)  # rows sum to 1, but the causal future has weight
    with pytest.raises(ValueError, match="masked cell"):
        masked_pattern(leaky, allowed_cells("causal", 3, 3))
    check_pattern(np.stack([causal_uniform(4)] * 2), allowed_cells("causal", 4, 4))  # (nh, T, T) works too


def test_labels_make_invisible_characters_visible():
    assert token_label(" it") == "␣it"
    assert token_label("\n") == "\\n" and token_label("\t") == "\\t"
    assert token_label("a b") == "a␣b"
    assert token_label("") == "∅"
    assert token_label("\x01") == "\\x01"
    assert token_label("¿Qué?") == "¿Qué?"


def test_byte_table_is_gpt2s():
    from tokenizers import pre_tokenizers

    assert sorted(_BYTE_OF.values()) == list(range(256))
    assert set(_BYTE_OF) == set(pre_tokenizers.ByteLevel.alphabet())
    assert _BYTE_OF["Ġ"] == ord(" ") and _BYTE_OF["Ċ"] == ord("\n") and _BYTE_OF["A"] == ord("A")


def test_bpe_token_texts_are_readable_pieces_that_join_back_to_the_text():
    from kqv.tokenizer.bpe import BPETokenizer

    corpus = "The pizza came out of the oven and it tasted good.\n" * 20 + "¿Qué tal? Muy bien.\n" * 5
    tok = BPETokenizer.train(corpus, 400, ("<pad>", "<s>", "</s>"))
    text = "The pizza came out of the oven and it tasted good."
    texts = token_texts(tok, tok.encode(text))
    assert "".join(texts) == text
    assert " it" in texts  # a whole-word BPE piece, with its leading space (shown "␣it")
    assert token_texts(tok, [0, 1, 2]) == ["<pad>", "<s>", "</s>"]
    accented = token_texts(tok, tok.encode("é"))
    assert "".join(accented) in ("é", "\\xc3\\xa9")  # one piece, or two bytes shown as escapes, never "Ã©"


def test_char_token_texts_are_single_characters():
    from kqv.tokenizer import CharTokenizer

    tok = CharTokenizer.train("it was\n")
    assert token_texts(tok, tok.encode("was it\n")) == list("was it\n")


def test_word_around_names_the_word_a_piece_belongs_to():
    chars = list("the pizza and it")
    assert word_around(chars, chars.index("z")) == "pizza"
    assert word_around(chars, len(chars) - 1) == "it"
    assert word_around(chars, 3) == " "  # whitespace is its own "word"
    pieces = ["The", " pi", "zza", " it"]
    assert word_around(pieces, 2) == "pizza" and word_around(pieces, 1) == "pizza" and word_around(pieces, 3) == "it"
    source = [" go", "od", "</s>"]  # no space before a special token, yet it is no part of "good"
    assert (
        word_around(source, 1, frozenset({"</s>"})) == "good" and word_around(source, 2, frozenset({"</s>"})) == "</s>"
    )


def test_query_token_is_the_last_token_of_the_whole_word():
    chars = list("The pizza came out of the oven and it tasted good")
    assert find_query(chars, "it").index == chars.index("i", 35) + 1  # the "t" of "it", not of "tasted"
    assert find_query(chars, "it").start == chars.index("i", 35)
    pieces = ["The", " pizza", " came", " out", " of", " the", " oven", " and", " it", " tasted", " good"]
    assert find_query(pieces, "it").index == 8
    assert find_query(pieces, " IT ").index == 8  # case-insensitive, surrounding spaces ignored
    assert find_query(pieces, "the oven").index == 6  # several tokens: the last one


def test_query_token_uses_the_last_of_several_occurrences():
    pieces = ["it", " was", " it", ",", " it", "s"]  # "its" is not "it"
    match = find_query(pieces, "it")
    assert (match.index, match.count) == (2, 2)


def test_query_token_that_is_not_a_whole_word_is_a_clear_error():
    pieces = ["The", " pizza", " tasted"]
    with pytest.raises(UserError, match=r"'ted' is not a word of the source; its tokens are 0:The 1:␣pizza 2:␣tasted"):
        find_query(pieces, "ted", "source")
    with pytest.raises(UserError, match="empty"):
        find_query(pieces, "  ")


def test_query_index_counts_from_zero_or_from_the_end():
    assert resolve_index(5, 0) == 0 and resolve_index(5, -1) == 4 and resolve_index(5, -5) == 0
    for bad in (5, -6):
        with pytest.raises(UserError, match="out of range: the text has 5 tokens"):
            resolve_index(5, bad)
