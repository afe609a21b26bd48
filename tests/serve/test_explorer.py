"""kqv.serve.explorer's sampling against independent references: NumPy distributions, kqv.generate's own
sampling and greedy decoding, and counts of what an unmasked translation would have drawn."""

import math

import numpy as np
import pytest
import torch

from kqv.errors import UserError
from kqv.generate.beam import greedy_decode
from kqv.generate.sampling import MAX_SEED, TEMPERATURE_FLOOR, generate
from kqv.serve.explorer import check_sampling, distributions
from tests.serve.served import explorers

TINY = [0.0, 5e-324, 1e-300, TEMPERATURE_FLOOR / 2]


@pytest.fixture(scope="module")
def gpt_and_translation(one_torch_thread):
    return explorers()


def _logits(explorer, text: str) -> np.ndarray:
    """(V,) next-token logits computed here, straight from the model."""
    subject = explorer.subject
    with torch.no_grad():
        if explorer.family.name == "gpt":
            return subject.model(torch.tensor([subject.tokenizer.encode(text)])).logits[0, -1].double().numpy()
        c = subject.model.config
        src = torch.tensor([[*subject.tokenizer.encode(text), c.eos_id]])
        return subject.model(src, torch.tensor([[c.bos_id]])).logits[0, -1].double().numpy()


def _reference(logits: np.ndarray, temperature: float, never=()) -> np.ndarray:
    z = logits / temperature
    z[list(never)] = -np.inf
    p = np.exp(z - z.max())
    return p / p.sum()


@pytest.mark.parametrize("temperature", TINY)
def test_temperatures_below_the_floor_put_all_mass_on_the_drawable_argmax(gpt_and_translation, temperature):
    for explorer in gpt_and_translation:
        answer = explorer.next_token("And God said", temperature=temperature, show=300)
        logits = _logits(explorer, "And God said")
        drawable = logits.copy()
        drawable[explorer.never_drawn()] = -np.inf
        best = int(np.argmax(drawable))
        prob = {row["id"]: row["prob"] for row in answer["tokens"]}
        assert answer["kept"] == 1 and answer["entropy"] == 0.0
        assert prob[best] == 1.0 and all(p == 0.0 for i, p in prob.items() if i != best)
        for row in answer["tokens"]:  # raw stays the model's own softmax
            assert row["raw"] == pytest.approx(_reference(logits, 1.0)[row["id"]], abs=1e-6)


def test_just_above_the_floor_the_distribution_is_computed_not_forced(gpt_and_translation):
    """At 2·floor the logits / T are large but finite: the answer equals float64 softmax(logits / T) here."""
    explorer = gpt_and_translation[0]
    logits = torch.tensor(_logits(explorer, "ROMEO:"))
    logits[:2] = logits.max() - 1e-4  # two near-ties, so the distribution is not one-hot even at T = 2e-4
    raw, prob = distributions(logits, 2 * TEMPERATURE_FLOOR, None, None)
    expected = _reference(logits.numpy(), 2 * TEMPERATURE_FLOOR)
    np.testing.assert_allclose(prob.numpy(), expected, atol=1e-12)
    assert 0.1 < prob[0] < 0.9 and torch.isfinite(prob).all()


@pytest.mark.parametrize(
    "temperature,top_k,top_p,seed,says",
    [
        (math.nan, None, None, None, "temperature"),
        (math.inf, None, None, None, "temperature"),
        (-1e-300, None, None, None, "temperature"),
        (10.5, None, None, None, "temperature must be 0…10"),
        (1.0, 0, None, None, "top_k"),
        (1.0, None, 0.0, None, "top_p"),
        (1.0, None, math.nan, None, "top_p"),
        (1.0, None, None, MAX_SEED + 1, "seed"),
        (1.0, None, None, -1, "seed"),
    ],
)
def test_sampling_values_out_of_bounds_are_one_line_user_errors(temperature, top_k, top_p, seed, says):
    with pytest.raises(UserError) as caught:
        check_sampling(temperature, top_k, top_p, seed)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_seed_fails_before_generation_starts(gpt_and_translation):
    for explorer in gpt_and_translation:
        with pytest.raises(UserError, match="seed"):
            explorer.generate("In the beginning", 5, 1.0, None, None, MAX_SEED + 1)  # raises here, not when iterated
    check_sampling(1.0, None, None, MAX_SEED)  # the largest seed is fine


def test_generation_below_the_floor_is_greedy_decoding(gpt_and_translation):
    gpt, translation = gpt_and_translation
    prompt = gpt.subject.tokenizer.encode("ROMEO:")
    expected = list(generate(gpt.subject.model, prompt, 20, temperature=0.0))
    for temperature in TINY:
        *lines, done = gpt.generate("ROMEO:", 20, temperature, None, None, 7)
        assert [line["token"] for line in lines] == expected and done["done"]
    c = translation.config
    src = [*translation.subject.tokenizer.encode("And God said"), c.eos_id]
    greedy = greedy_decode(translation.subject.model, torch.tensor([src]), 62, 0)[0].tokens
    *lines, done = translation.generate("And God said", 62, 1e-300, None, None, 7)
    assert [line["token"] for line in lines] == greedy


def test_the_largest_seed_reproduces_kqv_sampling(gpt_and_translation):
    gpt = gpt_and_translation[0]
    prompt = gpt.subject.tokenizer.encode("ROMEO:")
    expected = list(generate(gpt.subject.model, prompt, 20, temperature=1.0, top_k=10, seed=MAX_SEED))
    *lines, _ = gpt.generate("ROMEO:", 20, 1.0, 10, None, MAX_SEED)
    assert [line["token"] for line in lines] == expected


def test_translation_never_draws_pad_or_bos_over_many_seeds(gpt_and_translation, monkeypatch):
    """An untrained model gives <pad> and <s> ~1/300 each: unmasked, these seeds draw them; masked, never."""
    translation = gpt_and_translation[1]
    specials = {translation.config.pad_id, translation.config.bos_id}

    def drawn() -> list[int]:
        tokens = []
        for seed in range(15):
            tokens += [line["token"] for line in translation.generate("And God said", 62, 1.5, None, None, seed)
                       if not line.get("done")]  # fmt: skip
        return tokens

    masked = drawn()
    assert len(masked) > 600 and not specials & set(masked)
    monkeypatch.setattr(translation, "never_drawn", lambda: [])  # the control: what the same draws give unmasked
    assert specials & set(drawn())


@pytest.fixture
def pad_loving_translation(gpt_and_translation):
    """The translation model with +30 on the logits of <pad> and <s>: unmasked, it would draw nothing else."""
    translation = gpt_and_translation[1]
    c = translation.config

    def favour(module, inputs, logits):
        logits = logits.clone()
        logits[..., [c.pad_id, c.bos_id]] += 30.0
        return logits

    handle = translation.subject.model.logits.register_forward_hook(favour)
    yield translation
    handle.remove()


@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (1.0, None), (1.0, 1), (3.0, 5)])
def test_a_model_that_prefers_pad_still_never_outputs_it(pad_loving_translation, temperature, top_k):
    c = pad_loving_translation.config
    for seed in range(3):
        *lines, _ = pad_loving_translation.generate("In the beginning", 20, temperature, top_k, None, seed)
        tokens = [line["token"] for line in lines]
        assert tokens and not {c.pad_id, c.bos_id} & set(tokens)


def test_next_token_bars_for_translation_offer_no_pad_or_bos(pad_loving_translation):
    explorer = pad_loving_translation
    c = explorer.config
    answer = explorer.next_token("In the beginning", temperature=1.0, show=c.vocab_size)
    logits = _logits(explorer, "In the beginning")  # with the +30: the model's own logits here
    raw, prob = _reference(logits, 1.0), _reference(logits, 1.0, never=[c.pad_id, c.bos_id])
    rows = {row["id"]: row for row in answer["tokens"]}
    assert rows[c.pad_id]["prob"] == 0.0 and rows[c.bos_id]["prob"] == 0.0
    assert rows[c.pad_id]["raw"] + rows[c.bos_id]["raw"] > 0.99  # raw: the model's own softmax, which loves them
    for i, row in rows.items():
        assert row["raw"] == pytest.approx(raw[i], abs=1e-6) and row["prob"] == pytest.approx(prob[i], abs=1e-6)
    assert answer["kept"] == c.vocab_size - 2
