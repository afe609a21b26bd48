"""Configs: validation at construction with messages a user can act on, unknown keys rejected,
string coercion from the CLI, `--set` routing, and every shipped preset loads and builds."""

import dataclasses

import pytest

from kqv.config import (
    ConfigError,
    GPTConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_preset,
    preset_names,
    to_dict,
)
from kqv.nn.positional import POSITIONAL
from kqv.nn.scores import SCORES


def test_defaults_are_valid_and_frozen():
    c = GPTConfig()
    assert c.head_size == c.n_embd // c.n_head
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_layer = 3
    TrainConfig()


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("n_embd, n_head", [(100, 3), (10, 4), (7, 2)])
def test_n_embd_not_divisible_by_n_head_names_both_numbers(n_embd, n_head):
    with pytest.raises(ConfigError, match=rf"n_embd={n_embd} is not divisible by n_head={n_head}"):
        GPTConfig(n_embd=n_embd, n_head=n_head)


@pytest.mark.parametrize("field", ["vocab_size", "block_size", "n_layer", "n_head", "n_embd"])
@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "4"])
def test_sizes_must_be_positive_whole_numbers(field, bad):
    with pytest.raises(ConfigError, match=field):
        GPTConfig(**{field: bad})


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_dropout_range(dropout):
    with pytest.raises(ConfigError, match="dropout"):
        GPTConfig(dropout=dropout)


def test_unknown_score_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown score 'scaled'") as info:
        GPTConfig(score="scaled")
    for name in SCORES:
        assert name in str(info.value)


def test_unknown_positional_encoding_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown pos_encoding 'rotary'") as info:
        GPTConfig(pos_encoding="rotary")
    for name in POSITIONAL:
        assert name in str(info.value)


@pytest.mark.parametrize("mask", ["casual", "window", "window:0", "window:-1", "window:x", ""])
def test_bad_mask_lists_the_forms(mask):
    with pytest.raises(ConfigError, match="causal.*none.*anticausal.*window:N"):
        GPTConfig(mask=mask)


@pytest.mark.parametrize("mask", ["causal", "none", "anticausal", "window:1", "window:64"])
def test_good_masks(mask):
    assert GPTConfig(mask=mask).mask == mask


def test_rope_needs_an_even_head_size():
    with pytest.raises(ConfigError, match="rope.*even head size.*3"):
        GPTConfig(n_embd=12, n_head=4, pos_encoding="rope")  # head size 3
    assert GPTConfig(n_embd=12, n_head=3, pos_encoding="rope").head_size == 4
    assert GPTConfig(n_embd=12, n_head=4, pos_encoding="learned").head_size == 3  # fine without rope


def test_from_dict_rejects_unknown_keys_and_names_them():
    with pytest.raises(ConfigError, match="model config: unknown key.*n_heads.*known keys.*n_head") as info:
        from_dict(GPTConfig, {"n_heads": 4, "n_layer": 2}, "model config")
    assert "n_layer" in str(info.value)  # the known keys are listed
    with pytest.raises(ConfigError, match="unknown key.*learning_rate"):
        from_dict(TrainConfig, {"learning_rate": 1e-3})


@pytest.mark.parametrize(
    "cls, key, text, value",
    [
        (GPTConfig, "n_layer", "6", 6),
        (GPTConfig, "bias", "true", True),
        (GPTConfig, "bias", "True", True),
        (GPTConfig, "bias", "false", False),
        (GPTConfig, "bias", "0", False),
        (GPTConfig, "dropout", "0.1", 0.1),
        (GPTConfig, "mask", "window:4", "window:4"),
        (TrainConfig, "lr", "3e-4", 0.0003),
        (TrainConfig, "lr", 1, 1.0),  # a TOML int where a float is expected
        (TrainConfig, "batch_size", "32", 32),
    ],
)
def test_strings_are_coerced_to_the_field_type(cls, key, text, value):
    config = from_dict(cls, {key: text})
    got = getattr(config, key)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "cls, key, bad",
    [
        (GPTConfig, "n_layer", "six"),
        (GPTConfig, "n_layer", "6.0"),
        (GPTConfig, "n_layer", 6.0),
        (GPTConfig, "n_layer", True),
        (GPTConfig, "bias", "maybe"),
        (GPTConfig, "bias", 1),
        (TrainConfig, "lr", "fast"),
        (TrainConfig, "lr", False),
    ],
)
def test_values_that_cannot_be_coerced_are_rejected(cls, key, bad):
    with pytest.raises(ConfigError, match=rf"{key} expects"):
        from_dict(cls, {key: bad})


def test_train_config_validation():
    for kw in (dict(lr=0.0), dict(lr=-1e-3), dict(beta1=1.0), dict(beta2=-0.1), dict(grad_accum=0)):
        with pytest.raises(ConfigError):
            TrainConfig(**kw)
    with pytest.raises(ConfigError, match="tokenizer"):
        TrainConfig(tokenizer="word")
    with pytest.raises(ConfigError, match="bpe_vocab_size"):
        TrainConfig(tokenizer="bpe", bpe_vocab_size=100)


def test_round_trip_through_a_dict():
    c = GPTConfig(n_layer=3, mask="window:5", pos_encoding="alibi", bias=True)
    assert from_dict(GPTConfig, to_dict(c)) == c
    t = TrainConfig(lr=3e-4, grad_accum=4)
    assert from_dict(TrainConfig, to_dict(t)) == t


def tables():
    return {"model": {"n_layer": 4}, "train": {"lr": 1e-3}}


def test_apply_overrides_routes_bare_keys_to_their_table():
    out = apply_overrides(tables(), ["n_layer=6", "lr=3e-4", "pos_encoding=rope", "grad_accum = 2"])
    assert out == {
        "model": {"n_layer": "6", "pos_encoding": "rope"},
        "train": {"lr": "3e-4", "grad_accum": "2"},
    }
    assert from_dict(GPTConfig, out["model"]).n_layer == 6
    assert from_dict(TrainConfig, out["train"]).lr == 0.0003


def test_apply_overrides_accepts_qualified_keys_and_leaves_its_input_alone():
    original = tables()
    out = apply_overrides(original, ["model.n_head=2", "train.seed=7"])
    assert out["model"]["n_head"] == "2" and out["train"]["seed"] == "7"
    assert original == tables()  # a copy, not modified in place


@pytest.mark.parametrize(
    "assignment",
    ["n_layers=6", "train.n_layer=6", "model.lr=1e-3", "optim.lr=1e-3", "nonsense=1"],
)
def test_apply_overrides_rejects_unknown_keys(assignment):
    with pytest.raises(ConfigError, match="unknown key.*model keys.*n_layer.*train keys.*lr"):
        apply_overrides(tables(), [assignment])


@pytest.mark.parametrize("assignment", ["n_layer", "=6", ""])
def test_apply_overrides_needs_key_equals_value(assignment):
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(tables(), [assignment])


def test_there_are_presets():
    names = preset_names()
    assert {"default", "tiny"} <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_builds_its_configs(name):
    raw = load_preset(name)
    assert set(raw) == {"model", "train"}
    model = from_dict(GPTConfig, {**raw["model"], "vocab_size": 65}, f"preset {name} model")
    train = from_dict(TrainConfig, raw["train"], f"preset {name} train")
    assert model.vocab_size == 65 and model.n_embd % model.n_head == 0
    assert isinstance(train, TrainConfig)
    for key, value in raw["model"].items():  # nothing in the preset is silently dropped
        assert getattr(model, key) == value


def test_unknown_preset_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*tiny"):
        load_preset("huge")


@pytest.mark.parametrize(
    "key, text", [("lr", "nan"), ("lr", "inf"), ("min_lr", "nan"), ("weight_decay", "nan"), ("grad_clip", "nan")]
)
def test_non_finite_train_values_are_rejected(key, text):
    with pytest.raises(ConfigError, match=key):
        from_dict(TrainConfig, {key: text})


def test_sinusoidal_with_odd_width_is_rejected_by_the_config():
    with pytest.raises(ConfigError, match="sinusoidal.*even"):
        GPTConfig(n_embd=9, n_head=3, pos_encoding="sinusoidal")


def test_translation_presets_build_valid_configs_and_base_is_the_papers_size():
    from kqv.config import TrainConfig, TransformerConfig, from_dict, load_preset, preset_names
    from kqv.models.transformer import Transformer

    assert set(preset_names("translate")) >= {"small", "base", "tiny"}
    for name in preset_names("translate"):
        tables = load_preset(name, "translate")
        from_dict(TransformerConfig, tables["model"])
        from_dict(TrainConfig, tables["train"])
    base = from_dict(TransformerConfig, load_preset("base", "translate")["model"])
    assert (base.n_layer_enc, base.n_layer_dec, base.n_embd, base.d_ff, base.n_head) == (6, 6, 512, 2048, 8)
    assert not base.norm_first and base.dropout == 0.1 and base.label_smoothing == 0.1
    n = Transformer(base).num_parameters()
    assert 60e6 < n < 66e6  # the paper's table 3 gives 65M for base with a 37k shared vocabulary
