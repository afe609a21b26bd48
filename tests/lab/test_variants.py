import pytest

from kqv.config import GPTConfig
from kqv.errors import UserError
from kqv.lab.variants import BASELINE, GRIDS, Variant, grid_variants, parse_variant


def test_parse_fills_missing_keys_from_the_baseline():
    v = parse_variant("score=dot;pos=rope")
    assert (v.score, v.mask, v.pos) == ("dot", "causal", "rope")
    assert parse_variant("") == Variant(**BASELINE)
    assert parse_variant(" mask = window:8 ; ").mask == "window:8"


def test_spec_round_trips_and_names_are_folder_safe():
    v = parse_variant("score=neg_distance;mask=window:8;pos=alibi")
    assert parse_variant(v.spec) == v
    assert v.slug == "neg_distance-window8-alibi" and v.label == "neg_distance · window:8 · alibi"
    assert v.overrides == ["score=neg_distance", "mask=window:8", "pos_encoding=alibi"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("score=dotty", ["unknown score", "scaled_dot"]),
        ("mask=diagonal", ["unknown mask", "anticausal"]),
        ("pos=spiral", ["unknown pos", "rope"]),
        ("colour=red", ["keys score, mask, pos"]),
        ("score", ["key=value"]),
    ],
)
def test_bad_variants_are_one_line_user_errors(text, words):
    with pytest.raises(UserError) as info:
        parse_variant(text)
    assert "\n" not in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_leaks_follows_the_mask():
    assert [parse_variant(f"mask={m}").leaks for m in ("causal", "anticausal", "none", "window:8")] == [
        False, True, True, False,
    ]  # fmt: skip


def test_grids_hold_what_the_issue_lists():
    names = lambda grid: {(v.score, v.mask, v.pos) for v in GRIDS[grid]}  # noqa: E731
    assert {v.score for v in GRIDS["scores"]} == {
        "scaled_dot", "dot", "squared_dot", "dot_squared", "negated_dot", "neg_distance", "cosine", "additive",
    }  # fmt: skip
    assert {v.mask for v in GRIDS["masks"]} == {"causal", "anticausal", "none", "window:8"}
    assert {v.pos for v in GRIDS["positions"]} == {"sinusoidal", "learned", "rope", "alibi", "none"}
    seed = names("seed-questions")
    assert ("squared_dot", "causal", "learned") in seed and ("negated_dot", "causal", "learned") in seed
    assert ("scaled_dot", "anticausal", "learned") in seed and ("scaled_dot", "causal", "sinusoidal") in seed
    assert ("scaled_dot", "causal", "learned") in seed  # the baseline every question is measured against
    assert all(v.question for v in GRIDS["seed-questions"])


@pytest.mark.parametrize("grid", list(GRIDS))
def test_every_grid_variant_is_a_valid_lab_model_and_unique(grid):
    variants = grid_variants(grid)
    assert len({v.spec for v in variants}) == len(variants)
    for v in variants:
        GPTConfig(block_size=64, n_layer=2, n_head=4, n_embd=64, score=v.score, mask=v.mask, pos_encoding=v.pos)


def test_unknown_grid():
    with pytest.raises(UserError, match="seed-questions"):
        grid_variants("everything")
