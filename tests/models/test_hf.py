"""GPT-2 checkpoints (PITFALL 13): kqv's GPT reproduces `transformers`' GPT2LMHeadModel from its
own files — logits to 1e-5 in float32, the same greedy tokens, the same BPE ids — and writes files
that transformers loads back. Every model and tokenizer here is built locally and tiny: random
weights drawn wide (std 0.3, LayerNorm parameters and biases included) so that a swapped,
untransposed or dropped tensor shows, and a byte-level BPE trained in the test.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kqv.config import ConfigError, GPTConfig, from_dict
from kqv.data.text import read_corpus
from kqv.errors import UserError
from kqv.generate.sampling import generate
from kqv.models.gpt import GPT
from kqv.models.hf import gpt2_problems, to_hf_tensors, weight_names
from kqv.models.hf_folder import load_hf_gpt2, save_hf_gpt2
from kqv.tokenizer import BPETokenizer, CharTokenizer
from kqv.tokenizer.bpe import GPT2_EOT, VocabMerges

transformers = pytest.importorskip("transformers")
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_POSITIONS = 64
UNICODE_HEAVY = (
    "Crème brûlée, naïve façade — 東京タワー 🦀🇪🇸👩‍💻 Ελληνικά ﷽ \x00\t\r\n  end<|endoftext|>"
    "The next document<|endoftext|><|endoftext|> 1234 don't   ¿qué?"
)
CORPUS = read_corpus(None).text[:30_000] + " Crème brûlée naïve façade 東京 Ελληνικά 🦀"
PROMPTS = ["ROMEO: wherefore art thou", "Crème brûlée 🦀", "a", UNICODE_HEAVY]


def gpt2_vocab_merges(vocab_size: int = 400) -> tuple[dict, list[str]]:
    """A GPT-2-style vocab.json and merges.txt: a byte-level BPE trained here, <|endoftext|> last (as GPT-2's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    hf.train_from_iterator([CORPUS], trainer=trainer)
    vocab = hf.get_vocab()
    vocab[GPT2_EOT] = len(vocab)
    merges = json.loads(hf.to_str())["model"]["merges"]
    return vocab, [m if isinstance(m, str) else " ".join(m) for m in merges]


VOCAB, MERGES = gpt2_vocab_merges()
V = len(VOCAB)


def write_gpt2_tokenizer(folder: Path) -> None:
    (folder / "vocab.json").write_text(json.dumps(VOCAB, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")


def widen(model: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    """Every parameter (biases and LayerNorms too) random and wide, so that nothing passes by being 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # a tied matrix is listed once
            p.copy_(torch.randn(p.shape, generator=g) * std)


def make_hf_gpt2(folder: Path, seed: int = 0, n_layer: int = 2, n_head: int = 2, n_embd: int = 32, **config):
    """A random transformers GPT-2 saved with save_pretrained (safetensors) plus vocab.json/merges.txt."""
    torch.manual_seed(seed)
    hf_config = GPT2Config(
        n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=V, n_positions=N_POSITIONS,
        bos_token_id=V - 1, eos_token_id=V - 1, **config,
    )  # fmt: skip
    model = GPT2LMHeadModel(hf_config).eval()
    widen(model, seed)
    model.save_pretrained(folder, safe_serialization=True)
    write_gpt2_tokenizer(folder)
    return model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    model = make_hf_gpt2(folder)
    return folder, model


@pytest.fixture(scope="module")
def imported(hf_dir):
    return load_hf_gpt2(hf_dir[0])


def hf_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]  # (T, V)


def kqv_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]  # (T, V)


def copy_with(src: Path, dst: Path, tensors: dict | None = None, config: dict | None = None) -> Path:
    """A copy of a checkpoint folder, with its weights or config.json replaced."""
    shutil.copytree(src, dst)
    if tensors is not None:
        save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    if config is not None:
        (dst / "config.json").write_text(json.dumps(config))
    return dst


# --- GPT-2 -> kqv


def test_the_imported_model_is_gpt2_shaped(imported, hf_dir):
    model, tokenizer, info = imported
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size) == (2, 2, 32, N_POSITIONS, V)
    assert (c.bias, c.activation, c.score, c.mask, c.pos_encoding) == (
        True,
        "gelu_tanh",
        "scaled_dot",
        "causal",
        "learned",
    )
    assert model.lm_head.weight is model.tok_emb.weight  # still tied
    assert not model.training and info.prefixed and info.tokenizer_files == ["vocab.json", "merges.txt"]
    assert gpt2_problems(c, tokenizer) == []


def test_logits_equal_transformers_on_several_prompts(imported, hf_dir):
    model, tokenizer, _ = imported
    reference = hf_dir[1]
    worst = 0.0
    for text in PROMPTS:
        ids = tokenizer.encode(text)[:N_POSITIONS]
        a, b = kqv_logits(model, ids), hf_logits(reference, ids)
        assert a.shape == b.shape == (len(ids), V)
        assert b.abs().max() > 1.0  # wide weights: logits far from uniform, so a mistake cannot hide
        worst = max(worst, (a - b).abs().max().item())
    assert worst <= 1e-5, worst


def test_greedy_generation_is_token_for_token_the_same(imported, hf_dir):
    model, tokenizer, _ = imported
    reference = hf_dir[1]
    for text in PROMPTS[:3]:
        prompt = tokenizer.encode(text)
        n_new = N_POSITIONS - len(prompt)  # transformers' GPT-2 cannot go past its context
        ours = list(generate(model, prompt, n_new, temperature=0))
        with torch.no_grad():
            theirs = reference.generate(
                torch.tensor([prompt]), do_sample=False, max_new_tokens=n_new, use_cache=True,
                eos_token_id=None, pad_token_id=V - 1,
            )[0, len(prompt) :].tolist()  # fmt: skip
        assert ours == theirs
        assert len(set(ours)) > 3  # not one token repeated: the weights say something


def test_names_without_the_transformer_prefix_and_with_mask_buffers_and_a_tied_head(hf_dir, imported, tmp_path):
    """OpenAI's conversions name weights h.0.attn.c_attn.weight and carry h.0.attn.bias mask buffers."""
    src, reference = hf_dir
    tensors = {k.removeprefix("transformer."): v for k, v in load_file(src / "model.safetensors").items()}
    for i in range(2):
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, N_POSITIONS, N_POSITIONS))
        tensors[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    tensors["lm_head.weight"] = tensors["wte.weight"].clone()
    folder = copy_with(src, tmp_path / "openai", tensors)
    model, _, info = load_hf_gpt2(folder)
    assert not info.prefixed and "lm_head.weight" in info.skipped and "h.1.attn.masked_bias" in info.skipped
    ids = imported.tokenizer.encode(PROMPTS[0])
    assert (kqv_logits(model, ids) - hf_logits(reference, ids)).abs().max() <= 1e-5


def hf_tensors(hf_dir) -> dict:
    return load_file(hf_dir[0] / "model.safetensors")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update({"transformer.h.0.attn.extra": torch.zeros(3)}), r"left over.*h\.0\.attn\.extra"),
        (lambda t: t.pop("transformer.h.1.mlp.c_fc.bias"), r"missing: h\.1\.mlp\.c_fc\.bias"),
        (
            lambda t: t.update({"transformer.h.0.attn.c_attn.weight": torch.zeros(32, 95)}),
            r"wrong shape: h\.0\.attn\.c_attn\.weight is \(32, 95\), expected \(32, 96\)",
        ),
        (
            lambda t: t.update(
                {"transformer.h.0.mlp.c_fc.weight": t["transformer.h.0.mlp.c_fc.weight"].t().contiguous()}
            ),
            r"h\.0\.mlp\.c_fc\.weight is \(128, 32\), expected \(32, 128\)",  # a Linear-layout (untransposed) file
        ),
        (
            lambda t: t.update({"lm_head.weight": torch.randn(V, 32)}),
            r"lm_head\.weight differs from wte\.weight.*ties",
        ),
        (
            lambda t: t.update({"h.0.ln_1.weight": torch.ones(32)}),
            r"h\.0\.ln_1\.weight appear both with and without",
        ),
    ],
    ids=["leftover", "missing", "shape", "untransposed", "untied-head", "duplicate"],
)
def test_weights_that_do_not_fit_are_a_loud_error_naming_them(hf_dir, tmp_path, change, message):
    tensors = hf_tensors(hf_dir)
    change(tensors)
    folder = copy_with(hf_dir[0], tmp_path / "bad", tensors)
    with pytest.raises(UserError, match=message):
        load_hf_gpt2(folder)


def test_many_leftovers_are_counted_not_all_listed(hf_dir, tmp_path):
    tensors = hf_tensors(hf_dir)
    tensors.update({f"transformer.extra.{i}": torch.zeros(1) for i in range(20)})
    with pytest.raises(UserError, match=r"left over.*and 12 more"):
        load_hf_gpt2(copy_with(hf_dir[0], tmp_path / "bad", tensors))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("layer_norm_epsilon", 1e-6, r"layer_norm_epsilon is 1e-06; kqv's GPT uses 1e-05"),
        ("activation_function", "relu", r"activation_function 'relu' is not GPT-2's"),
        ("activation_function", "gelu", r"activation_function 'gelu' is not GPT-2's"),
        ("n_inner", 100, r"n_inner is 100; kqv's MLP is 4 × n_embd = 128"),
        ("tie_word_embeddings", False, r"tie_word_embeddings is False \(an untied LM head\)"),
        ("scale_attn_by_inverse_layer_idx", True, r"scale_attn_by_inverse_layer_idx"),
        ("model_type", "llama", r"model_type is 'llama'"),
        ("n_head", 3, r"n_embd=32 is not divisible by n_head=3"),
        ("n_embd", None, r"no n_embd"),
    ],
)
def test_configs_that_are_not_gpt2_are_refused(hf_dir, tmp_path, key, value, message):
    config = json.loads((hf_dir[0] / "config.json").read_text())
    if value is None:
        del config[key]
    else:
        config[key] = value
    with pytest.raises(UserError, match=message):
        load_hf_gpt2(copy_with(hf_dir[0], tmp_path / "bad", config=config))


def test_gelu_pytorch_tanh_is_the_same_activation(hf_dir, imported, tmp_path):
    config = json.loads((hf_dir[0] / "config.json").read_text())
    config["activation_function"] = "gelu_pytorch_tanh"
    model, _, _ = load_hf_gpt2(copy_with(hf_dir[0], tmp_path / "tanh", config=config))
    assert model.config.activation == "gelu_tanh"


def test_pickles_are_refused_with_the_way_to_convert(hf_dir, tmp_path):
    folder = copy_with(hf_dir[0], tmp_path / "bin")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"pytorch_model\.bin.*pickle.*safetensors.*save_pretrained"):
        load_hf_gpt2(folder)


def test_truncated_weights_and_missing_files_are_user_errors(hf_dir, tmp_path):
    folder = copy_with(hf_dir[0], tmp_path / "cut")
    raw = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="truncated or not a safetensors file"):
        load_hf_gpt2(folder)
    with pytest.raises(UserError, match="no such directory"):
        load_hf_gpt2(tmp_path / "nowhere")
    (folder / "config.json").unlink()
    with pytest.raises(UserError, match="no config.json"):
        load_hf_gpt2(folder)
    folder = copy_with(hf_dir[0], tmp_path / "no-tok")
    (folder / "merges.txt").unlink()
    with pytest.raises(UserError, match="no tokenizer"):
        load_hf_gpt2(folder)


def test_sharded_safetensors_are_read(hf_dir, imported, tmp_path):
    folder = copy_with(hf_dir[0], tmp_path / "sharded")
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(folder / file), metadata={"format": "pt"})
    index = {"weight_map": {k: file for file, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    model, _, _ = load_hf_gpt2(folder)
    ids = imported.tokenizer.encode(PROMPTS[0])
    torch.testing.assert_close(kqv_logits(model, ids), kqv_logits(imported.model, ids), atol=0, rtol=0)


# --- the tokenizer


@pytest.fixture(scope="module")
def hf_tokenizer(hf_dir):
    return GPT2TokenizerFast.from_pretrained(hf_dir[0])


@pytest.mark.parametrize("text", [UNICODE_HEAVY, "<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ", "", "  \n\n"])
def test_bpe_ids_equal_transformers_gpt2_tokenizer(imported, hf_tokenizer, text):
    ids = imported.tokenizer.encode(text)
    assert ids == hf_tokenizer(text)["input_ids"]
    assert imported.tokenizer.decode(ids) == hf_tokenizer.decode(ids) == text  # <|endoftext|> is written out


def test_endoftext_is_one_token_with_gpt2s_id(imported):
    assert imported.tokenizer.encode("x<|endoftext|>") == [*imported.tokenizer.encode("x"), V - 1]
    assert imported.tokenizer.token_id(GPT2_EOT) == V - 1


def test_tokenizer_json_gives_the_same_tokenizer(hf_dir, imported, tmp_path):
    """transformers writes tokenizer.json; kqv reads it instead of vocab.json + merges.txt when present."""
    folder = copy_with(hf_dir[0], tmp_path / "tokjson")
    GPT2TokenizerFast.from_pretrained(hf_dir[0]).save_pretrained(folder)
    (folder / "vocab.json").unlink()
    (folder / "merges.txt").unlink()
    _, tokenizer, info = load_hf_gpt2(folder)
    assert info.tokenizer_files == ["tokenizer.json"]
    assert tokenizer.fingerprint() == imported.tokenizer.fingerprint()
    assert tokenizer.encode(UNICODE_HEAVY) == imported.tokenizer.encode(UNICODE_HEAVY)


def test_a_tokenizer_json_that_is_not_gpt2_style_is_refused(hf_dir, tmp_path):
    folder = copy_with(hf_dir[0], tmp_path / "wordpiece")
    tok = json.loads(GPT2TokenizerFast.from_pretrained(hf_dir[0]).backend_tokenizer.to_str())
    tok["normalizer"] = {"type": "Lowercase"}
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(UserError, match="not a GPT-2 style byte-level BPE: it has a normalizer"):
        load_hf_gpt2(folder)


def test_vocab_merges_round_trip_and_bad_merges():
    tok = BPETokenizer.from_vocab_merges(VocabMerges(dict(VOCAB), [tuple(m.split(" ")) for m in MERGES], [GPT2_EOT]))
    parts = tok.vocab_merges()
    assert parts.vocab == VOCAB and [" ".join(m) for m in parts.merges] == MERGES and parts.added_tokens == [GPT2_EOT]
    bad = VocabMerges(dict(VOCAB), [("zz", "qq")], [])
    with pytest.raises(ValueError, match="does not join two vocabulary tokens"):
        BPETokenizer.from_vocab_merges(bad)
    no_bytes = VocabMerges({k: i for i, k in enumerate(list(VOCAB)[10:])}, [], [])
    with pytest.raises(ValueError, match="byte tokens are missing"):
        BPETokenizer.from_vocab_merges(no_bytes)


# --- kqv -> GPT-2


def gpt2_like(seed: int = 0, vocab_size: int = V, **overrides) -> GPT:
    torch.manual_seed(seed)
    values = dict(
        vocab_size=vocab_size, block_size=48, n_layer=2, n_head=4, n_embd=32, bias=True, activation="gelu_tanh"
    )
    values.update(overrides)
    model = GPT(GPTConfig(**values)).eval()
    widen(model, seed + 1)
    return model


@pytest.fixture(scope="module")
def kqv_bpe():
    return BPETokenizer.train(CORPUS, vocab_size=300)  # kqv's own BPE: no <|endoftext|>


def test_export_loads_in_transformers_with_equal_logits_and_ids(kqv_bpe, tmp_path):
    model = gpt2_like(vocab_size=kqv_bpe.vocab_size)
    folder = save_hf_gpt2(model, kqv_bpe, tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "merges.txt", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json",
    ]  # fmt: skip
    assert not list(tmp_path.glob(".*"))  # the staging folder was renamed, nothing half-written left
    names = set(load_file(folder / "model.safetensors"))
    assert names == {"transformer." + w.hf for w in weight_names(2)}  # as transformers saves them: no lm_head
    reference = GPT2LMHeadModel.from_pretrained(folder).eval()
    assert reference.config.n_positions == 48 and reference.config.activation_function == "gelu_new"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = UNICODE_HEAVY.replace("<|endoftext|>", " ")
    ids = kqv_bpe.encode(text)
    assert tokenizer(text)["input_ids"] == ids and tokenizer.decode(ids) == text
    ids = ids[:48]
    assert (kqv_logits(model, ids) - hf_logits(reference, ids)).abs().max() <= 1e-5


def test_import_export_import_is_exact(hf_dir, imported, tmp_path):
    folder = save_hf_gpt2(imported.model, imported.tokenizer, tmp_path / "again")
    model, tokenizer, _ = load_hf_gpt2(folder)
    assert tokenizer.fingerprint() == imported.tokenizer.fingerprint()
    for name, t in imported.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], t), name
    theirs = AutoTokenizer.from_pretrained(folder)  # tokenizer.json + tokenizer_config.json, <|endoftext|> special
    assert theirs(UNICODE_HEAVY)["input_ids"] == imported.tokenizer.encode(UNICODE_HEAVY)
    assert theirs.eos_token == GPT2_EOT and theirs.eos_token_id == V - 1
    reference = GPT2LMHeadModel.from_pretrained(folder).eval()
    ids = tokenizer.encode(PROMPTS[1])
    assert (hf_logits(reference, ids) - hf_logits(hf_dir[1], ids)).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"score": "cosine"}, r"score is 'cosine' \(GPT-2 scales dot products"),
        ({"mask": "none"}, r"mask is 'none' \(GPT-2 is causal\)"),
        ({"pos_encoding": "rope"}, r"pos_encoding is 'rope'"),
        ({"bias": False}, r"bias is False \(GPT-2 has biases"),
        ({"activation": "gelu"}, r"activation is 'gelu' \(GPT-2's GELU is the tanh approximation\)"),
    ],
)
def test_models_that_are_not_gpt2_refuse_export(kqv_bpe, tmp_path, overrides, message):
    model = gpt2_like(vocab_size=kqv_bpe.vocab_size, **overrides)
    with pytest.raises(UserError, match="cannot be written as GPT-2: .*" + message):
        save_hf_gpt2(model, kqv_bpe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_char_tokenizer_or_a_vocabulary_mismatch_refuses_export(kqv_bpe, tmp_path):
    chars = CharTokenizer.train(CORPUS)
    with pytest.raises(UserError, match="tokenizer is 'char'; a GPT-2 checkpoint carries a byte-level BPE"):
        save_hf_gpt2(gpt2_like(vocab_size=chars.vocab_size), chars, tmp_path / "out")
    with pytest.raises(UserError, match="the tokenizer has 300 tokens, the model 301"):
        save_hf_gpt2(gpt2_like(vocab_size=301), kqv_bpe, tmp_path / "out")


def test_export_refuses_a_folder_that_holds_something(kqv_bpe, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists and is not empty"):
        save_hf_gpt2(gpt2_like(vocab_size=kqv_bpe.vocab_size), kqv_bpe, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    save_hf_gpt2(gpt2_like(vocab_size=kqv_bpe.vocab_size), kqv_bpe, tmp_path / "empty")  # an empty one is fine
    assert (tmp_path / "empty" / "model.safetensors").is_file()


def test_conversion_in_memory_round_trips(kqv_bpe):
    model = gpt2_like(vocab_size=kqv_bpe.vocab_size)
    tensors = to_hf_tensors(model)
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D: (in, out)
    assert torch.equal(tensors["transformer.h.0.attn.c_attn.weight"], model.blocks[0].attn.in_proj.weight.t())


# --- the config field


def test_activation_is_a_config_field_and_old_configs_default_to_gelu():
    old = {"vocab_size": 65, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, "bias": True}
    assert from_dict(GPTConfig, old).activation == "gelu"  # a run saved before the field existed
    config = from_dict(GPTConfig, {**old, "activation": "gelu_tanh"})
    assert GPT(config).blocks[0].mlp.act.approximate == "tanh"
    assert GPT(from_dict(GPTConfig, old)).blocks[0].mlp.act.approximate == "none"
    with pytest.raises(ConfigError, match="unknown activation 'swish'; choose one of gelu, gelu_tanh, relu"):
        GPTConfig(activation="swish")
