"""The family adapters: one per model family, registered once, answering what differs between a GPT and a
translation model — and the names that are now one way (--steps, n_embd, translation/NAME) with their old
spellings still read."""

import hashlib
import json
import shutil

import pytest
import torch

from kqv.cli import build_parser, main
from kqv.config import TransformerConfig, apply_overrides, from_dict, load_preset
from kqv.errors import UserError
from kqv.families import FAMILIES, Family, family, family_of, load, load_subject, parse_preset
from kqv.families.gpt import GPT_FAMILY
from kqv.families.translation import TRANSLATION_FAMILY
from kqv.runs.weights import read_safetensors, write_safetensors
from tests.commands.running import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_family_is_registered_once_and_answers_everything():
    assert FAMILIES == {"gpt": GPT_FAMILY, "translation": TRANSLATION_FAMILY}
    methods = [n for n, v in vars(Family).items() if callable(v) and not n.startswith("_")]
    for fam in FAMILIES.values():
        assert family(fam.name) is fam
        for name in ("name", "title", "config_class", "model_class", "train_command", "text_word", "lengths"):
            assert getattr(fam, name) is not None, (fam.name, name)
        for name in methods:  # every method is the family's own, or a default of the base that does nothing
            assert callable(getattr(fam, name)), (fam.name, name)
    with pytest.raises(UserError, match="unknown model family 'diffusion'"):
        family("diffusion")


@pytest.mark.parametrize("preset", ["tiny", "translation/tiny"])
def test_a_preset_subject_answers_through_its_family(preset):
    subject = load_subject(preset=preset)
    fam, model, tok = subject.family, subject.model, subject.tokenizer
    layers = fam.layers(model.config)
    maps, _ = fam.attention_maps(model, tok, "The pizza came out", None)
    assert list(maps) == list(layers)  # one map per kind of attention, in the order they run
    for kind, n in layers.items():
        assert maps[kind].patterns.shape[0] == n
        rows = torch.tensor(maps[kind].patterns).sum(-1)
        torch.testing.assert_close(rows, torch.ones_like(rows), atol=1e-6, rtol=0)
    ids = tok.encode("The pizza")
    logits = fam.next_logits(model, ids, None)
    assert logits.shape == (model.config.vocab_size,)
    steps = fam.decoder(model, ids, 5)
    first = steps.next_logits()
    torch.testing.assert_close(first, logits, atol=1e-5, rtol=1e-5)  # the decoder's first step = the forward pass
    assert fam.max_tokens(model.config) >= fam.text_room(model.config) > 0
    assert set(fam.never_drawn(model.config)) == (set() if fam is GPT_FAMILY else {0, 1})
    explanation = fam.explain(model, ids, None)
    assert explanation.family == fam.name and explanation.total_parameters == model.num_parameters()


def test_a_gpt_refuses_a_target_and_a_translation_reads_one():
    gpt = load_subject(preset="tiny")
    with pytest.raises(UserError, match="target is for translation models"):
        GPT_FAMILY.attention_maps(gpt.model, gpt.tokenizer, "text", "a target")
    TRANSLATION_FAMILY.check_target("una traducción")  # nothing to refuse


def test_presets_are_named_translation_slash_name_and_translate_still_works():
    assert parse_preset("tiny") == (GPT_FAMILY, "tiny")
    assert parse_preset("translation/tiny") == parse_preset("translate/tiny") == (TRANSLATION_FAMILY, "tiny")
    assert load_preset("small", "translation") == load_preset("small", "translate")
    with pytest.raises(UserError, match="no such preset; choose one of .*translation/small"):
        parse_preset("translation/huge")
    with pytest.raises(UserError, match="use NAME for a GPT preset or translation/NAME"):
        parse_preset("vision/tiny")


def test_the_width_is_n_embd_in_every_config_and_d_model_is_still_read():
    assert from_dict(TransformerConfig, {"d_model": 64, "n_head": 4}).n_embd == 64
    tables = apply_overrides(load_preset("tiny", "translation"), ["d_model=48"], TransformerConfig)
    assert tables["model"]["n_embd"] == "48" and "d_model" not in tables["model"]
    with pytest.raises(ValueError, match="d_model and n_embd are the same setting"):
        from_dict(TransformerConfig, {"d_model": 64, "n_embd": 64})


@pytest.mark.parametrize(
    "command, flag",
    [(["gpt", "train"], "--max-iters"), (["translate", "train"], "--max-iters"), (["lab", "run"], "--iters"),
     (["bench", "gpt"], "--iters")],
)  # fmt: skip
def test_steps_is_the_one_flag_and_the_old_spellings_still_work_unlisted(command, flag, capsys):
    parser = build_parser()
    assert parser.parse_args([*command, "--steps", "7"]).steps == 7
    assert parser.parse_args([*command, flag, "7"]).steps == 7
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--help"])
    shown = capsys.readouterr().out
    assert "--steps" in shown and "--max-iters" not in shown and "--iters" not in shown


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory, corpus_pairs):
    out = tmp_path_factory.mktemp("families") / "tr"
    args = ["translate", "train", "--preset", "tiny", "--data", corpus_pairs, "--steps", "2", "--out", out]
    assert main([str(a) for a in args + ["--set", "train.eval_interval=2"]]) == 0
    return out


@pytest.fixture(scope="module")
def corpus_pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.tsv"
    words = "one two three four five six seven eight nine ten".split()
    lines = [
        f"{' '.join(words[i % 7 : i % 7 + 3])}\t{' '.join(reversed(words[i % 7 : i % 7 + 3]))}" for i in range(400)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_an_old_run_that_says_d_model_still_loads(translation_run, tmp_path):
    old = shutil.copytree(translation_run, tmp_path / "old")
    info = json.loads((old / "config.json").read_text())
    info["model"]["d_model"] = info["model"].pop("n_embd")  # as runs were written before the rename
    (old / "config.json").write_text(json.dumps(info))
    tensors, meta = read_safetensors(old / "model.safetensors")
    meta["config_sha256"] = hashlib.sha256((old / "config.json").read_bytes()).hexdigest()
    write_safetensors(old / "model.safetensors", tensors, meta)
    assert family_of(old) is TRANSLATION_FAMILY
    run = load(old)
    assert run.kind == "translation" and run.model_config.n_embd == info["model"]["d_model"]


def test_the_translate_commands_read_a_run_through_its_family(translation_run, capsys):
    code, out, err = cli(capsys, "translate", str(translation_run), "one two three")
    assert code == 0 and out.strip(), err
    code, _, err = cli(capsys, "gpt", "sample", str(translation_run))
    assert code == 2 and "is a translation run (an encoder–decoder); use `kqv translate …`" in err
