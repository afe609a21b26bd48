import math

import pytest
import torch

from kqv.nn.positional import POSITIONAL, alibi_slopes, make_positional, sinusoidal_table

C, NH, BLOCK = 16, 4, 8  # hs = 4


def test_sinusoidal_table_equals_the_formula_everywhere():
    n, d = 50, 16
    table = sinusoidal_table(n, d)
    assert table.shape == (n, d) and table.dtype == torch.float32
    for pos in range(n):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert abs(table[pos, 2 * i].item() - math.sin(angle)) < 1e-6, (pos, 2 * i)
            assert abs(table[pos, 2 * i + 1].item() - math.cos(angle)) < 1e-6, (pos, 2 * i + 1)


@pytest.mark.parametrize(
    ("pos", "col", "value"),
    [
        (0, 1, 1.0),  # cos 0
        (1, 0, 0.8414709848),  # sin 1
        (7, 4, 0.6442176872),  # i = 2: 10000^(4/16) = 10, sin(7/10)
        (3, 15, 0.9999995500),  # i = 7: 10000^(14/16) = 3162.28, cos(0.000948683) ≈ 1 − 0.000948683²/2
    ],
)
def test_sinusoidal_table_hand_computed_values(pos, col, value):
    assert sinusoidal_table(50, 16)[pos, col].item() == pytest.approx(value, abs=1e-7)


@pytest.mark.parametrize("d_model", [0, 7, 15])
def test_sinusoidal_table_needs_even_width(d_model):
    with pytest.raises(ValueError, match="even"):
        sinusoidal_table(10, d_model)


def test_sinusoidal_adds_the_fixed_table_and_trains_nothing():
    pe = make_positional("sinusoidal", C, NH, BLOCK)
    x = torch.randn(2, 5, C)
    pos = torch.arange(3, 8)  # a KV-cache offset: positions 3..7
    torch.testing.assert_close(pe.add_to_embeddings(x, pos), x + sinusoidal_table(BLOCK, C)[3:8])
    assert not list(pe.parameters())
    assert "table" not in pe.state_dict()  # recomputed, not saved


@pytest.mark.parametrize("name", ["sinusoidal", "learned"])
def test_position_past_block_size_is_a_clear_error(name):
    pe = make_positional(name, C, NH, BLOCK)
    pe.add_to_embeddings(torch.zeros(1, BLOCK, C), torch.arange(BLOCK))  # exactly block_size is fine
    with pytest.raises(ValueError, match=f"sequence of length {BLOCK + 1} exceeds block_size {BLOCK}"):
        pe.add_to_embeddings(torch.zeros(1, BLOCK + 1, C), torch.arange(BLOCK + 1))
    with pytest.raises(ValueError, match="exceeds block_size"):
        pe.add_to_embeddings(torch.zeros(1, 1, C), torch.tensor([BLOCK]))  # one cached step too far


def test_learned_has_one_vector_per_position():
    pe = make_positional("learned", 32, NH, 64)
    assert sum(p.numel() for p in pe.parameters()) == 64 * 32
    assert pe.embedding.weight.std().item() == pytest.approx(0.02, rel=0.1)
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(pe.add_to_embeddings(x, torch.arange(3)), x + pe.embedding.weight[:3])


def rope_qk(seed=0, hs=C // NH):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, NH, 1, hs, generator=g), torch.randn(2, NH, 1, hs, generator=g)


def test_rope_preserves_norms_and_position_zero_is_identity():
    rope = make_positional("rope", C, NH, BLOCK)
    q, k = torch.randn(2, NH, 5, C // NH), torch.randn(2, NH, 7, C // NH)
    rq, rk = rope.rotate(q, k, torch.arange(10, 15), torch.arange(7))
    assert rq.shape == q.shape and rk.shape == k.shape
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(rk.norm(dim=-1), k.norm(dim=-1))
    assert not torch.allclose(rq, q)
    zero = torch.tensor([0])
    q0, k0 = rope.rotate(q[:, :, :1], k[:, :, :1], zero, zero)
    assert torch.equal(q0, q[:, :, :1]) and torch.equal(k0, k[:, :, :1])


def test_rope_dot_product_depends_only_on_the_offset():
    rope = make_positional("rope", C, NH, BLOCK)
    q, k = rope_qk()

    def score(m, n):
        rq, rk = rope.rotate(q, k, torch.tensor([m]), torch.tensor([n]))
        return (rq * rk).sum(-1)  # (2, nh, 1)

    torch.testing.assert_close(score(3, 1), score(10, 8), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score(3, 1), score(102, 100), rtol=1e-4, atol=1e-4)  # past block_size: extrapolates
    assert not torch.allclose(score(3, 1), score(3, 2), atol=1e-3)


def test_rope_rotates_consecutive_pairs_by_pos_times_theta():
    rope = make_positional("rope", 8, 2, BLOCK)  # hs = 4: θ_0 = 1, θ_1 = 10000^(-2/4) = 0.01
    q = torch.eye(4).view(1, 1, 4, 4)  # (B=1, nh=1, T=4, hs=4): the unit vectors e0..e3, all at position 1
    pos = torch.ones(4, dtype=torch.long)
    rq, _ = rope.rotate(q, q, pos, pos)
    c0, s0, c1, s1 = math.cos(1), math.sin(1), math.cos(0.01), math.sin(0.01)
    expected = torch.tensor(
        [
            [c0, s0, 0, 0],  # e0 -> (cos, sin) in pair 0
            [-s0, c0, 0, 0],  # e1 -> (−sin, cos)
            [0, 0, c1, s1],
            [0, 0, -s1, c1],
        ]
    )
    torch.testing.assert_close(rq[0, 0], expected)


def test_rope_needs_even_head_size():
    with pytest.raises(ValueError, match="even head size"):
        make_positional("rope", 6, 2, BLOCK)  # hs = 3


def test_alibi_slopes_power_of_two():
    assert alibi_slopes(8) == [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256]
    assert alibi_slopes(1) == [1 / 256]


def test_alibi_slopes_other_head_counts_follow_the_paper_recipe():
    # 4 heads' slopes (2^-2, 2^-4, 2^-6, 2^-8), then every other one of 8 heads' slopes (2^-1, 2^-3)
    assert alibi_slopes(6) == [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]
    assert alibi_slopes(12)[8:] == pytest.approx([2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5])
    assert len(alibi_slopes(12)) == 12


def test_alibi_bias_is_minus_slope_times_distance():
    alibi = make_positional("alibi", 12, 6, BLOCK)
    q_pos, k_pos = torch.tensor([4, 5]), torch.arange(6)
    bias = alibi.score_bias(q_pos, k_pos)
    assert bias.shape == (6, 2, 6)
    slopes = alibi_slopes(6)
    for h in range(6):
        for i in range(2):
            for j in range(6):
                assert bias[h, i, j].item() == pytest.approx(-slopes[h] * abs(int(q_pos[i]) - j))
    assert alibi.score_bias(torch.tensor([100]), torch.tensor([0]))[0, 0, 0].item() == -25.0  # no block limit


KINDS = {"sinusoidal": "additive", "learned": "additive", "rope": "rotary", "alibi": "bias", "none": "none"}


@pytest.mark.parametrize("name", list(KINDS))
def test_every_encoding_has_all_three_hooks_and_uses_only_its_own(name):
    pe = make_positional(name, C, NH, BLOCK)
    assert pe.name == name and pe.kind == KINDS[name]
    x = torch.randn(2, 5, C)
    q, k = torch.randn(2, NH, 5, C // NH), torch.randn(2, NH, 5, C // NH)
    pos = torch.arange(5)
    changed_x = not torch.equal(pe.add_to_embeddings(x, pos), x)
    rq, rk = pe.rotate(q, k, pos, pos)
    changed_qk = not (torch.equal(rq, q) and torch.equal(rk, k))
    bias = pe.score_bias(pos, pos)
    assert changed_x == (pe.kind == "additive")
    assert changed_qk == (pe.kind == "rotary")
    assert (bias is not None) == (pe.kind == "bias")
    assert pe.acts_in_attention == (changed_qk or bias is not None)  # attention builds positions only then


def test_none_changes_nothing_and_has_no_state():
    pe = make_positional("none", C, NH, BLOCK)
    x = torch.randn(2, 5, C)
    assert pe.add_to_embeddings(x, torch.arange(5)) is x
    assert pe.add_to_embeddings(x, torch.arange(100, 105)) is x  # no table, so no length limit
    assert not list(pe.parameters()) and not list(pe.buffers())


def test_registry_and_errors():
    assert set(POSITIONAL) == set(KINDS)
    with pytest.raises(ValueError) as info:
        make_positional("relative", C, NH, BLOCK)
    for name in KINDS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="divisible"):
        make_positional("none", 10, 4, BLOCK)
    with pytest.raises(ValueError, match="block_size"):
        make_positional("learned", C, NH, 0)
