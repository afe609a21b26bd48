"""The learning-rate schedule (warm-up + cosine) and which parameters get weight decay."""

import math
from itertools import pairwise

import pytest
import torch
from torch import nn

from kqv.config import GPTConfig
from kqv.models.gpt import GPT
from kqv.train.optim import decay_groups, learning_rate, make_optimizer

LR, MIN_LR, WARMUP, DECAY = 1e-3, 1e-4, 10, 110


def lr_at(step: int, warmup: int = WARMUP, decay_iters: int = DECAY) -> float:
    return learning_rate(step, LR, MIN_LR, warmup, decay_iters)


# -- learning_rate ---------------------------------------------------------------------------


def test_warmup_is_linear_and_starts_above_zero():
    rates = [lr_at(s) for s in range(WARMUP)]
    assert rates[0] == pytest.approx(LR / WARMUP) and rates[0] > 0
    assert rates == pytest.approx([LR * (s + 1) / WARMUP for s in range(WARMUP)], rel=1e-12)
    steps = [b - a for a, b in pairwise(rates)]
    assert steps == pytest.approx([LR / WARMUP] * (WARMUP - 1), rel=1e-9)  # equal increments: linear


def test_without_warmup_step_zero_already_gets_the_full_rate():
    assert lr_at(0, warmup=0) == pytest.approx(LR)


def test_warmup_reaches_the_peak_and_the_cosine_starts_there():
    assert lr_at(WARMUP - 1) == pytest.approx(LR, rel=1e-12)  # last warm-up step
    assert lr_at(WARMUP) == pytest.approx(LR, rel=1e-12)  # first cosine step, progress 0
    assert max(lr_at(s) for s in range(DECAY + 20)) == pytest.approx(LR, rel=1e-12)


def test_cosine_halfway_is_the_mean_of_peak_and_floor():
    half = WARMUP + (DECAY - WARMUP) // 2
    assert lr_at(half) == pytest.approx((LR + MIN_LR) / 2, rel=1e-12)
    quarter = WARMUP + (DECAY - WARMUP) // 4
    assert lr_at(quarter) == pytest.approx(MIN_LR + 0.5 * (1 + math.cos(math.pi / 4)) * (LR - MIN_LR), rel=1e-12)


def test_cosine_decays_monotonically_to_min_lr_and_stays_there():
    decaying = [lr_at(s) for s in range(WARMUP, DECAY + 1)]
    assert all(b < a for a, b in pairwise(decaying))
    assert all(r >= MIN_LR for r in decaying)
    assert lr_at(DECAY - 1) > MIN_LR
    assert lr_at(DECAY) == pytest.approx(MIN_LR, rel=1e-12)
    assert [lr_at(s) for s in (DECAY + 1, DECAY + 50, 10 * DECAY)] == pytest.approx([MIN_LR] * 3, rel=1e-12)


# -- decay_groups --------------------------------------------------------------------------


def tiny_gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    config = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, bias=True)
    return GPT(GPTConfig(**{**config, **overrides}))


def group_names(model: nn.Module, groups: list[dict]) -> tuple[list[str], list[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}  # a tied parameter once, by its first name
    return [name_of[id(p)] for p in groups[0]["params"]], [name_of[id(p)] for p in groups[1]["params"]]


def test_linear_matrices_decay_and_biases_norms_embeddings_do_not():
    model = tiny_gpt()
    groups = decay_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    decay, no_decay = group_names(model, groups)
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)} - {"lm_head.weight"}
    assert set(decay) == linear
    assert all(n.startswith("blocks.") and n.endswith("weight") for n in decay)
    assert "tok_emb.weight" in no_decay  # the tied LM head is this same matrix
    assert "positional.embedding.weight" in no_decay
    assert {n for n in no_decay if "ln" in n and n.endswith(".weight")} == {
        "blocks.0.ln_1.weight", "blocks.0.ln_2.weight", "blocks.1.ln_1.weight", "blocks.1.ln_2.weight", "ln_f.weight"
    }  # fmt: skip
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    assert biases and biases <= set(no_decay)
    for p in groups[0]["params"]:
        assert p.dim() == 2


def test_the_tied_head_is_counted_once_and_not_decayed():
    model = tiny_gpt()
    assert model.lm_head.weight is model.tok_emb.weight
    decay, no_decay = decay_groups(model, 0.1)
    tied = model.tok_emb.weight
    assert sum(p is tied for p in decay["params"]) == 0
    assert sum(p is tied for p in no_decay["params"]) == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"bias": False},
        {"pos_encoding": "sinusoidal"},
        {"pos_encoding": "rope"},
        {"pos_encoding": "alibi", "score": "cosine"},
        {"score": "additive"},
    ],
    ids=["bias", "no-bias", "sinusoidal", "rope", "alibi-cosine", "additive"],
)
def test_every_parameter_is_in_exactly_one_group(overrides):
    model = tiny_gpt(**overrides)
    groups = decay_groups(model, 0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # nothing twice
    assert set(ids) == {id(p) for p in model.parameters()}  # nothing left out
    assert sum(p.numel() for g in groups for p in g["params"]) == model.num_parameters()


def test_an_embedding_tied_into_an_earlier_linear_is_still_not_decayed():
    class Tied(nn.Module):  # the Linear is registered before the Embedding it shares a weight with
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 6, bias=True)
            self.emb = nn.Embedding(6, 4)
            self.head.weight = self.emb.weight
            self.mix = nn.Linear(4, 4)

    model = Tied()
    decay, no_decay = decay_groups(model, 0.5)
    assert [p is model.mix.weight for p in decay["params"]] == [True]
    assert len(no_decay["params"]) == 3  # the shared matrix once, both biases


def test_decay_embeddings_decays_every_matrix_as_nanogpt_does():
    model = tiny_gpt()
    decay, no_decay = decay_groups(model, 0.1, decay_embeddings=True)
    assert {id(p) for p in decay["params"]} == {id(p) for p in model.parameters() if p.dim() >= 2}
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in model.parameters() if p.dim() < 2}
    plain, _ = decay_groups(model, 0.1)
    assert len(decay["params"]) == len(plain["params"]) + 2  # + token and position tables


def test_frozen_parameters_are_left_out():
    model = tiny_gpt()
    model.blocks[0].attn.in_proj.weight.requires_grad_(False)
    groups = decay_groups(model, 0.1)
    assert all(p is not model.blocks[0].attn.in_proj.weight for g in groups for p in g["params"])


def test_make_optimizer_uses_the_groups():
    model = tiny_gpt()
    opt = make_optimizer(model, 3e-4, 0.1, (0.9, 0.95), "cpu")
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert all(g["lr"] == 3e-4 and tuple(g["betas"]) == (0.9, 0.95) for g in opt.param_groups)
    expected = [[id(p) for p in g["params"]] for g in decay_groups(model, 0.1)]
    assert [[id(p) for p in g["params"]] for g in opt.param_groups] == expected


@pytest.mark.parametrize("d_model, warmup", [(512, 4000), (256, 300)])
def test_inverse_sqrt_is_the_papers_schedule_with_its_peak_named(d_model, warmup):
    """Vaswani et al. 2017, eq. 3: lrate = d_model^-0.5 · min(step^-0.5, step · warmup^-1.5), step from 1."""
    from kqv.train.optim import inverse_sqrt_lr

    peak = (d_model * warmup) ** -0.5
    for step in [0, 1, 10, warmup - 2, warmup - 1, warmup, 2 * warmup, 10 * warmup, 100_000]:
        s = step + 1
        paper = d_model**-0.5 * min(s**-0.5, s * warmup**-1.5)
        assert inverse_sqrt_lr(step, peak, warmup) == pytest.approx(paper, rel=1e-12)
    assert max(inverse_sqrt_lr(i, peak, warmup) for i in range(3 * warmup)) == pytest.approx(peak)
    if d_model == 512:
        assert peak == pytest.approx(7.0e-4, rel=0.01)  # the base preset's lr


def test_scheduled_lr_follows_the_configs_schedule():
    from kqv.config import TrainConfig
    from kqv.train.optim import inverse_sqrt_lr, scheduled_lr

    cosine = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=100)
    assert scheduled_lr(55, cosine) == learning_rate(55, 1e-3, 1e-4, 10, 100)
    noam = TrainConfig(lr=1e-3, warmup_iters=10, max_iters=100, schedule="inverse_sqrt")
    assert scheduled_lr(55, noam) == inverse_sqrt_lr(55, 1e-3, 10)
    assert scheduled_lr(10_000, noam) < scheduled_lr(100, noam)  # no floor: it keeps decaying past max_iters
