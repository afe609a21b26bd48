"""kqv.inspect.why: how the question is built (query, target, other, corruption), words of any tokenizer,
and that the report's answers are the method modules' own numbers."""

import numpy as np
import pytest
import torch

from kqv.config import GPTConfig
from kqv.errors import UserError
from kqv.inspect.contrast import Contrast
from kqv.inspect.dla import direct_logit_attribution
from kqv.inspect.why import METHODS, answer, ask, corrupt_words, single_token
from kqv.models.gpt import GPT
from kqv.tokenizer import train_tokenizer

TEXT = "The pizza came out of the oven and it tasted good."


@pytest.fixture(scope="module")
def char_model():
    tokenizer = train_tokenizer("char", TEXT + " cake tart")
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=16, block_size=64)
    return GPT(config).eval(), tokenizer


def test_corrupt_words_replaces_whole_words_only():
    assert corrupt_words("the pizza and pizzas", "pizza=cake") == "the cake and pizzas"
    assert corrupt_words("The Pizza", "pizza=tart") == "The tart"
    with pytest.raises(UserError, match="not a word of the text"):
        corrupt_words("the pizzas", "pizza=cake")
    with pytest.raises(UserError, match="WORD=WORD"):
        corrupt_words("the pizza", "pizza")


def test_single_token_prefers_the_spaced_form_and_lists_the_pieces(char_model):
    _, tok = char_model
    assert single_token(tok, "t", "--target") == tok.encode("t")[0]  # " t" is two characters: "t" is taken
    with pytest.raises(UserError, match=r"is 6 tokens \('t', 'a', 's', 't', 'e', 'd'\)"):
        single_token(tok, "tasted", "--target")


def test_the_question_defaults_target_to_the_next_token_and_other_to_the_corrupted_prediction(char_model):
    model, tok = char_model
    q = ask(model, tok, TEXT, query_token="it", corrupt="pizza=tarts")
    assert q.position == TEXT.index(" it") + 2 and q.contrast.position == q.position
    assert q.contrast.target == tok.encode(" ")[0]  # what follows "it" in the text
    with torch.no_grad():
        corrupted = model(torch.tensor([q.corrupt_ids])).logits[0, q.position]
    if int(corrupted.argmax()) != q.contrast.target:
        assert q.contrast.other == int(corrupted.argmax())
    assert q.corrupt_text == TEXT.replace("pizza", "tarts")


def test_words_group_a_char_models_letters_and_put_a_space_with_the_next_word(char_model):
    model, tok = char_model
    q = ask(model, tok, "The pizza came", query_index=-1)
    labels, index = q.words()
    assert labels == ["The", "pizza", "came"]
    assert index == [0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]  # " p…" and " c…": the space opens the word
    scores = np.arange(len(q.ids), dtype=float)
    np.testing.assert_allclose(q.by_word(scores), [0 + 1 + 2, sum(range(3, 9)), sum(range(9, 14))])


def test_the_report_carries_the_modules_numbers(char_model):
    model, tok = char_model
    q = ask(model, tok, TEXT, query_token="it", corrupt="pizza=tarts", target="t", other="s")
    report = answer(model, q, METHODS, steps=8)
    dla = direct_logit_attribution(model, q.ids, Contrast(tok.encode("t")[0], tok.encode("s")[0], q.position))
    torch.testing.assert_close(report.results["dla"].values, dla.values)
    methods = [a.method for a in report.answers]
    assert methods[0] == "attention" and "patching" in methods and methods[-1] == "heads"
    d = report.to_dict()
    assert d["target"]["text"] == "t" and d["other"]["text"] == "s" and d["summary"] == report.summary()
    assert set(d["results"]) >= {"attention", "lens", "dla", "zero_ablation", "mean_ablation", "patch", "grad"}
    winner, agree, disagree = report.agreement()
    assert winner in q.words()[0] and len(agree) >= 1 and not set(agree) & set(disagree)


def test_unknown_methods_and_a_first_token_query_are_handled(char_model):
    model, tok = char_model
    with pytest.raises(UserError, match="unknown method"):
        answer(model, ask(model, tok, TEXT), ["lenz"])
    report = answer(model, ask(model, tok, TEXT, query_index=0), METHODS, steps=4)  # nothing before the query
    assert report.agreement() == (None, [], [])
