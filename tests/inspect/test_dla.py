"""Direct logit attribution: the parts must add up to the model's own logit difference (≤ 1e-4 in float32,
≤ 1e-9 in float64) for every positional encoding, with and without biases, against another token or
alone; and one head's part must equal an einsum written here from the cached z and the out-projection,
through a frozen-scale LayerNorm computed by hand (float64, ≤ 1e-10).
"""

import pytest
import torch

from kqv.errors import UserError
from kqv.inspect.cache import run_with_cache
from kqv.inspect.contrast import Contrast
from kqv.inspect.dla import direct_logit_attribution
from tests.inspect.small import POSITIONAL, random_prompt, widened_gpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

V, T = 50, 8


def prompt(seed: int = 1) -> list[int]:
    return random_prompt(T, seed, V)


@pytest.mark.parametrize("pos_encoding", POSITIONAL)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("other", [11, None])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_parts_add_up_to_the_models_logit_difference(pos_encoding, bias, other, dtype, tolerance):
    model = widened_gpt(pos_encoding=pos_encoding, bias=bias).to(dtype)
    ids, contrast = prompt(), Contrast(target=4, other=other, position=-1)
    dla = direct_logit_attribution(model, ids, contrast)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]  # (V,)
    own = float(logits[4] - (logits[other] if other is not None else 0.0))
    assert dla.model_value == pytest.approx(own, abs=tolerance)
    assert abs(dla.total - own) <= tolerance
    assert dla.total == pytest.approx(float(dla.values.sum()), abs=1e-12)
    assert dla.values.dtype == dtype

    L, nh = 2, 2
    pos = ["pos"] if pos_encoding in ("learned", "sinusoidal") else []

    def layer(i: int) -> list[str]:
        return [f"L{i}H0", f"L{i}H1"] + ([f"L{i} attn bias"] if bias else []) + [f"L{i} mlp"]

    assert dla.labels == ["embed", *pos, *layer(0), *layer(1)] + (["ln_f bias"] if bias else [])
    assert dla.values.shape == (len(dla.labels),)
    heads = [dla.labels.index(f"L{i}H{h}") for i in range(L) for h in range(nh)]
    assert torch.equal(dla.heads, dla.values[heads].view(L, nh))
    assert torch.equal(dla.mlps, dla.values[[dla.labels.index(f"L{i} mlp") for i in range(L)]])
    assert dla.values.abs().min() > 1e-6  # every part writes something along the direction


@pytest.mark.parametrize("position", [-1, 3])
def test_one_heads_part_is_its_output_through_the_frozen_layer_norm(position):
    model = widened_gpt(pos_encoding="rope", bias=True).double()
    ids, contrast = prompt(5), Contrast(target=9, other=2, position=position)
    dla = direct_logit_attribution(model, ids, contrast)

    _, cache = run_with_cache(model, torch.tensor([ids]))
    layer, head, hs = 1, 0, 8
    z = cache[f"blocks.{layer}.attn.z"][0, head, position]  # (hs,)
    W_O = model.blocks[layer].attn.proj.weight.detach()[:, head * hs : (head + 1) * hs]  # (C, hs)
    part = torch.einsum("d,cd->c", z, W_O)  # (C,): what this head writes at the position
    x = cache[f"blocks.{model.config.n_layer - 1}.resid_post"][0, position]  # (C,), the real final stream
    sigma = (((x - x.mean()) ** 2).mean() + 1e-5).sqrt()  # ln_f's scale, population variance, eps 1e-5
    gamma, W_U = model.ln_f.weight.detach(), model.tok_emb.weight.detach()
    expected = ((part - part.mean()) / sigma * gamma) @ (W_U[9] - W_U[2])
    assert float(dla.heads[layer, head]) == pytest.approx(float(expected), abs=1e-10)
    assert dla.values[dla.labels.index("L1H0")] == dla.heads[1, 0]
    assert dla.scale == pytest.approx(float(sigma), abs=1e-12)

    mlp = cache[f"blocks.{layer}.mlp.out"][0, position]  # (C,), its bias included
    expected_mlp = ((mlp - mlp.mean()) / sigma * gamma) @ (W_U[9] - W_U[2])
    assert float(dla.mlps[layer]) == pytest.approx(float(expected_mlp), abs=1e-10)
    beta = model.ln_f.bias.detach()
    assert float(dla.values[-1]) == pytest.approx(float(beta @ (W_U[9] - W_U[2])), abs=1e-12)  # "ln_f bias"
    assert float(dla.heads[layer, head]) != pytest.approx(float(dla.heads[layer, 1]), abs=1e-3)


def test_the_position_part_is_the_learned_embedding_of_that_position():
    model = widened_gpt(pos_encoding="learned").double()
    ids, contrast = prompt(6), Contrast(target=1, other=None, position=2)
    dla = direct_logit_attribution(model, ids, contrast)
    row = model.positional.embedding.weight.detach()[2]  # (C,)
    expected = ((row - row.mean()) / dla.scale * model.ln_f.weight.detach()) @ model.tok_emb.weight.detach()[1]
    assert float(dla.values[dla.labels.index("pos")]) == pytest.approx(float(expected), abs=1e-10)


@pytest.mark.parametrize(
    "contrast, message",
    [
        (Contrast(4, 11, position=8), r"the contrast's position 8 is out of range: the prompt has 8 tokens"),
        (Contrast(4, 11, position=-9), r"position -9 is out of range"),
        (Contrast(50, 11), r"the contrast's target token id 50 is outside the vocabulary \(0 … 49\)"),
        (Contrast(4, -1), r"the contrast's other token id -1 is outside the vocabulary"),
    ],
)
def test_user_errors_name_the_problem(contrast, message):
    with pytest.raises(UserError, match=message):
        direct_logit_attribution(widened_gpt(), prompt(), contrast)
