import math

import pytest
import torch

from kqv.config import GPTConfig
from kqv.lab.leakage import future_hidden, honest_loss
from kqv.models.gpt import GPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

V, T = 8, 8


def test_future_hidden_worked_example():
    x = torch.tensor([1, 2, 3, 4])
    assert future_hidden(x, 0).tolist() == [[1, 0, 0, 0], [1, 2, 0, 0], [1, 2, 3, 0], [1, 2, 3, 4]]


def model(mask: str, pos: str = "learned", seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=V, block_size=T, n_layer=2, n_head=2, n_embd=16, mask=mask, pos_encoding=pos)
    return GPT(cfg).double()


def windows(seed=1, B=3):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, V, (B, T + 1), generator=g)
    return seq[:, :-1], seq[:, 1:]


@pytest.mark.parametrize(("mask", "pos"), [("causal", "learned"), ("causal", "rope"), ("window:3", "alibi")])
def test_honest_loss_equals_teacher_forced_loss_when_the_mask_hides_the_future(mask, pos):
    x, y = windows()
    got = honest_loss(model(mask, pos), x, y, filler=5)
    assert got.n_tokens == x.numel()
    assert math.isclose(got.honest_loss, got.teacher_forced_loss, rel_tol=0, abs_tol=1e-12)  # float64


@pytest.mark.parametrize("mask", ["none", "anticausal"])
def test_honest_loss_differs_for_an_untrained_model_that_sees_the_future(mask):
    x, y = windows()
    got = honest_loss(model(mask), x, y, filler=5)
    assert abs(got.gap) > 1e-4


def test_a_model_that_learned_to_copy_the_future_is_caught():
    """Random tokens: no causal model can beat log V. Anticausal attention copies x[t+1] = y[t]."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=V, block_size=T, n_layer=1, n_head=2, n_embd=32, mask="anticausal")
    gpt = GPT(cfg)
    opt = torch.optim.AdamW(gpt.parameters(), lr=1e-2)
    for step in range(150):
        x, y = windows(seed=100 + step, B=32)
        loss = gpt(x, y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = windows(seed=7, B=16)
    got = honest_loss(gpt, x, y)
    assert got.teacher_forced_loss < 0.5 * math.log(V)  # it looks like it learned a lot
    assert got.honest_loss > 0.9 * math.log(V)  # it learned nothing usable for writing text
    assert got.gap > 0.5
