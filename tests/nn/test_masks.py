import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kqv.nn.masks import (
    MASK_FORMS,
    MaskSpec,
    additive_mask,
    allowed_positions,
    parse_mask,
    sees_future,
    with_key_padding,
)

T4 = torch.arange(4)

# Rows are queries, columns keys; 1 = the query may attend to the key.
HAND_WRITTEN = {
    "causal": [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [1, 1, 1, 1],
    ],
    "anticausal": [
        [1, 1, 1, 1],
        [0, 1, 1, 1],
        [0, 0, 1, 1],
        [0, 0, 0, 1],
    ],
    "window:2": [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 1],
    ],
}


@pytest.mark.parametrize("name", list(HAND_WRITTEN))
def test_masks_at_t4_match_the_hand_written_matrices(name):
    allowed = allowed_positions(name, T4, T4)
    assert allowed.dtype == torch.bool
    assert torch.equal(allowed, torch.tensor(HAND_WRITTEN[name], dtype=torch.bool))


def test_none_masks_nothing():
    assert allowed_positions("none", T4, T4) is None
    assert with_key_padding(None, None) is None
    assert additive_mask(None) is None


@pytest.mark.parametrize("name", ["causal", "anticausal", "window:1", "window:2", "window:3", "window:10"])
@pytest.mark.parametrize("n_new", [1, 2])
def test_kv_cache_rows_equal_the_full_matrix_rows(name, n_new):
    k_pos = torch.arange(6)
    q_pos = k_pos[-n_new:]  # the last n_new positions, as when decoding with a cache
    full = allowed_positions(name, k_pos, k_pos)  # (6, 6)
    assert torch.equal(allowed_positions(name, q_pos, k_pos), full[-n_new:])


@given(window=st.integers(1, 20), t=st.integers(1, 12), offset=st.integers(0, 30))
def test_window_at_least_as_long_as_the_context_is_causal(window, t, offset):
    k_pos = torch.arange(offset, offset + t)
    got = allowed_positions(f"window:{window}", k_pos, k_pos)
    causal = allowed_positions("causal", k_pos, k_pos)
    if window >= t:
        assert torch.equal(got, causal)
    assert torch.equal(got.sum(-1), torch.clamp(torch.arange(1, t + 1), max=window))  # each query sees ≤ N keys


def test_key_padding_combines_on_the_batch_and_key_axes():
    B, Tq, Tk = 3, 2, 4  # all different, so a mix-up of axes fails to broadcast or gives the wrong shape
    q_pos, k_pos = torch.tensor([2, 3]), torch.arange(Tk)
    allowed = allowed_positions("causal", q_pos, k_pos)  # (Tq, Tk)
    key_padding = torch.tensor([[False, False, False, False], [True, False, False, False], [True, True, True, False]])
    combined = with_key_padding(allowed, key_padding)
    assert combined.shape == (B, 1, Tq, Tk)
    for b in range(B):
        for i in range(Tq):
            for j in range(Tk):
                expected = bool(k_pos[j] <= q_pos[i]) and not bool(key_padding[b, j])
                assert bool(combined[b, 0, i, j]) == expected, (b, i, j)
    # batch row 2: query 2 sees keys 0..2, all padding -> a fully masked row
    assert not combined[2, 0, 0].any()


def test_key_padding_alone_and_mask_alone_broadcast_against_attention_maps():
    key_padding = torch.tensor([[False, True, False], [False, False, True]])
    only_padding = with_key_padding(None, key_padding)
    assert only_padding.shape == (2, 1, 1, 3)
    assert torch.equal(only_padding[:, 0, 0], ~key_padding)
    only_mask = with_key_padding(allowed_positions("causal", torch.arange(3), torch.arange(3)), None)
    assert only_mask.shape == (1, 1, 3, 3)
    with pytest.raises(ValueError, match="Tk"):
        with_key_padding(torch.ones(3, 4, dtype=torch.bool), key_padding)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_additive_mask_is_zero_or_minus_infinity(dtype):
    allowed = allowed_positions("causal", T4, T4)
    add = additive_mask(allowed, dtype)
    assert add.dtype == dtype and add.shape == (4, 4)
    assert torch.all(add[allowed] == 0)
    assert torch.all(torch.isneginf(add[~allowed]))  # never a finite -1e4 that a model could learn past
    scores = torch.randn(4, 4, dtype=dtype) * 1e4
    weights = torch.softmax(scores + add, dim=-1)
    assert torch.all(weights[~allowed] == 0)


def test_fully_masked_row_softmax_is_nan_and_left_to_the_attention_code():
    # Documented behaviour: this module does not fix empty rows; attention zeroes them.
    add = additive_mask(torch.tensor([[False, False, False], [True, False, True]]))
    weights = torch.softmax(add, dim=-1)
    assert torch.isnan(weights[0]).all()
    assert torch.allclose(weights[1], torch.tensor([0.5, 0.0, 0.5]))


@pytest.mark.parametrize(
    ("name", "leaks"),
    [("causal", False), ("window:1", False), ("window:7", False), ("none", True), ("anticausal", True)],
)
def test_sees_future(name, leaks):
    assert sees_future(name) is leaks
    assert sees_future(parse_mask(name)) is leaks
    # cross-check against the matrix itself: does any query see a later key?
    allowed = allowed_positions(name, T4, T4)
    sees_later = True if allowed is None else bool(torch.triu(allowed, diagonal=1).any())
    assert sees_later is leaks


def test_parse_mask():
    assert parse_mask("causal") == MaskSpec("causal", None)
    assert parse_mask("window:3") == MaskSpec("window", 3)
    assert parse_mask("window:3").name == "window:3"
    assert parse_mask("anticausal").name == "anticausal"
    assert torch.equal(
        allowed_positions(MaskSpec("window", 2), T4, T4), torch.tensor(HAND_WRITTEN["window:2"], dtype=torch.bool)
    )


BAD_NAMES = ["window:0", "window:x", "window:", "window:-1", "window:1.5", "diagonal", "", "Causal"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_parse_mask_rejects_bad_names_and_lists_valid_forms(bad):
    with pytest.raises(ValueError) as info:
        parse_mask(bad)
    message = str(info.value)
    assert "\n" not in message
    for form in ("causal", "none", "anticausal", "window:N"):
        assert form in message
    with pytest.raises(ValueError):
        allowed_positions(bad, T4, T4)


# Every mask of the registry (MASK_FORMS), windows shorter and longer than the text
EVERY_MASK = ["causal", "none", "anticausal", "window:1", "window:2", "window:3", "window:10"]


def test_every_mask_form_is_covered_here():
    forms = {parse_mask(form.replace("N", "1")).kind for form in MASK_FORMS}
    assert {parse_mask(name).kind for name in EVERY_MASK} == forms


def cache_exact_by_brute_force(name: str, max_len: int = 7) -> bool:
    """Decode one token at a time: a cache is exact unless the newest query reads an earlier key j that sees a
    position after j (such a key was cached before that position existed, so a recomputation would change it)."""
    for T in range(1, max_len + 1):
        pos = torch.arange(T)
        allowed = allowed_positions(name, pos, pos)
        allowed = torch.ones(T, T, dtype=torch.bool) if allowed is None else allowed  # (T, T)
        newest = T - 1
        for j in range(newest):
            if allowed[newest, j] and allowed[j, j + 1 :].any():
                return False
    return True


@pytest.mark.parametrize("name", EVERY_MASK)
def test_cache_exact_matches_a_brute_force_check_of_the_matrix(name):
    assert parse_mask(name).cache_exact is cache_exact_by_brute_force(name)


def test_cache_exact_for_all_but_none():
    assert {name: parse_mask(name).cache_exact for name in EVERY_MASK} == {
        "causal": True,
        "none": False,
        "anticausal": True,  # the newest query sees only itself
        "window:1": True,
        "window:2": True,
        "window:3": True,
        "window:10": True,
    }
