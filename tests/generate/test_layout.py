"""column_major (kqv.generate.layout): widening Linear weights move to (in, out) storage for one-token
decoding; shapes, values, ties and Parameter objects stay, logits agree, training and saving still work."""

import pytest
import torch

from kqv.config import GPTConfig
from kqv.generate.layout import column_major
from kqv.generate.sampling import generate
from kqv.models.gpt import GPT
from kqv.runs.weights import model_tensors

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, bias=True)).eval()


def test_widening_weights_move_and_keep_shape_values_tie_and_identity():
    model = gpt()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    params = dict(model.named_parameters())
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(idx).logits
    assert column_major(model) == 5  # in_proj (16 -> 48) and mlp.fc (16 -> 64) of 2 blocks; the head (16 -> 50)
    assert column_major(model) == 0  # once is enough
    for name, p in model.named_parameters():
        assert p is params[name] and torch.equal(p, before[name]), name
    assert model.lm_head.weight is model.tok_emb.weight and model.lm_head.weight.stride() == (1, 50)
    assert model.blocks[0].attn.in_proj.weight.stride() == (1, 48)
    assert model.blocks[0].mlp.proj.weight.is_contiguous()  # narrowing (64 -> 16): left as it was
    with torch.no_grad():
        torch.testing.assert_close(model(idx).logits, logits, atol=1e-6, rtol=1e-6)


def test_a_decoder_moves_the_weights_and_greedy_tokens_do_not_change():
    reference = gpt(seed=1)
    moved = gpt(seed=1)
    column_major(moved)
    assert reference.blocks[0].mlp.fc.weight.is_contiguous()
    tokens = list(generate(reference, [1, 2], 30, temperature=0))  # generate moves `reference` too
    assert not reference.blocks[0].mlp.fc.weight.is_contiguous()
    assert tokens == list(generate(moved, [1, 2], 30, temperature=0))


def test_moved_weights_still_train_and_save_contiguous():
    model = gpt()
    list(generate(model, [1], 3))  # inside inference mode: the weights must not become inference tensors
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(5):
        loss = model(idx, idx).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(t.is_contiguous() for t in model_tensors(model).values())
