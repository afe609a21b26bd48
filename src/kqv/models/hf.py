"""GPT-2 checkpoints in Hugging Face's layout, converted to and from kqv's GPT key by key.

GPT-2 (Radford et al. 2019) is kqv's GPT with these settings: biases in every Linear and
LayerNorm (`bias = true`), GELU's tanh approximation (`activation = "gelu_tanh"`), LayerNorm
ε = 1e-5 (torch's default), learned positions, scaled dot-product causal attention and the
LM head tied to the token embedding. A Hugging Face GPT-2 directory holds

    config.json                    n_embd, n_layer, n_head, n_positions, vocab_size, activation_function, …
    model.safetensors              the weights (never a pickle: pytorch_model.bin is refused)
    tokenizer.json, or vocab.json + merges.txt     the byte-level BPE (kqv.tokenizer.bpe)

The names, for block i (HF's files say `transformer.h.0…`, OpenAI's conversions `h.0…`):

    kqv                            GPT-2                     kqv shape        how
    tok_emb.weight                 wte.weight                (V, C)           as is; also the LM head (tied)
    positional.embedding.weight    wpe.weight                (block_size, C)  as is
    blocks.i.ln_1.{weight,bias}    h.i.ln_1.{weight,bias}    (C,)             as is
    blocks.i.attn.in_proj.weight   h.i.attn.c_attn.weight    (3C, C)          transposed from (C, 3C)
    blocks.i.attn.in_proj.bias     h.i.attn.c_attn.bias      (3C,)            as is
    blocks.i.attn.proj.weight      h.i.attn.c_proj.weight    (C, C)           transposed
    blocks.i.attn.proj.bias        h.i.attn.c_proj.bias      (C,)             as is
    blocks.i.ln_2.{weight,bias}    h.i.ln_2.{weight,bias}    (C,)             as is
    blocks.i.mlp.fc.weight         h.i.mlp.c_fc.weight       (4C, C)          transposed from (C, 4C)
    blocks.i.mlp.fc.bias           h.i.mlp.c_fc.bias         (4C,)            as is
    blocks.i.mlp.proj.weight       h.i.mlp.c_proj.weight     (C, 4C)          transposed from (4C, C)
    blocks.i.mlp.proj.bias         h.i.mlp.c_proj.bias       (C,)             as is
    ln_f.{weight,bias}             ln_f.{weight,bias}        (C,)             as is

Why transposed: GPT-2's `Conv1D` is a Linear that stores its weight as (in, out) and computes
x·W + b; torch's Linear stores (out, in) and computes x·Wᵀ + b. Nothing else changes: c_attn's
3C outputs are q, k, v in thirds and each third is nh heads of hs consecutive features, which
is exactly how kqv's in_proj rows are read (MultiHeadAttention.project_qkv views (B, T, 3, nh, hs)).
`h.i.attn.bias` and `h.i.attn.masked_bias`, causal-mask buffers that older files carry, are
skipped; an `lm_head.weight` must equal `wte.weight`. Every other name must be used exactly once:
a missing name, a leftover or a wrong shape is an error that lists them.

Reading and writing the folder itself is kqv.models.hf_folder; a kqv run directory made from one
is kqv.runs.imported.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from kqv.config import ConfigError, GPTConfig
from kqv.errors import UserError
from kqv.models.gpt import GPT
from kqv.tokenizer.bpe import BPETokenizer

HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}  # GPT-2's GELU, tanh approximation
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which kqv's GPT uses
PREFIX = "transformer."
SKIPPED = (".attn.bias", ".attn.masked_bias")  # mask buffers, not weights
MAX_LISTED = 8  # names listed in an error before "and N more"


@dataclass(frozen=True)
class WeightName:
    kqv: str
    hf: str  # without the "transformer." prefix
    conv1d: bool  # stored (in, out) by GPT-2: transposed on the way


def weight_names(n_layer: int) -> list[WeightName]:
    """Every kqv weight and its GPT-2 name, in file order (the tied LM head is `wte`)."""
    names = [WeightName("tok_emb.weight", "wte.weight", False)]
    names.append(WeightName("positional.embedding.weight", "wpe.weight", False))
    for i in range(n_layer):
        for kqv_part, hf_part, conv1d in (
            ("ln_1", "ln_1", False),
            ("attn.in_proj", "attn.c_attn", True),
            ("attn.proj", "attn.c_proj", True),
            ("ln_2", "ln_2", False),
            ("mlp.fc", "mlp.c_fc", True),
            ("mlp.proj", "mlp.c_proj", True),
        ):
            names.append(WeightName(f"blocks.{i}.{kqv_part}.weight", f"h.{i}.{hf_part}.weight", conv1d))
            names.append(WeightName(f"blocks.{i}.{kqv_part}.bias", f"h.{i}.{hf_part}.bias", False))
    names += [WeightName("ln_f.weight", "ln_f.weight", False), WeightName("ln_f.bias", "ln_f.bias", False)]
    return names


@dataclass
class HFInfo:
    """Where an imported model came from and what the conversion skipped."""

    hf_dir: str
    hf_config: dict  # config.json as read
    prefixed: bool  # the weight names began with "transformer."
    skipped: list[str] = field(default_factory=list)  # mask buffers and a tied lm_head.weight
    dtype: str = "float32"  # of the file; kqv computes in float32
    tokenizer_files: list[str] = field(default_factory=list)


class HFModel(NamedTuple):
    model: GPT
    tokenizer: BPETokenizer
    info: HFInfo


# --- config.json


def gpt_config_from_hf(hf: dict, where: str = "config.json") -> GPTConfig:
    """kqv's GPTConfig for a GPT-2 config.json; anything GPT-2 kqv cannot reproduce exactly is a UserError."""
    if not isinstance(hf, dict):
        raise UserError(f"{where}: expected a JSON object")
    if hf.get("model_type", "gpt2") != "gpt2":
        raise UserError(f"{where}: model_type is {hf.get('model_type')!r}; kqv imports GPT-2 checkpoints (gpt2)")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in HF_ACTIVATIONS:
        raise UserError(
            f"{where}: activation_function {activation!r} is not GPT-2's; kqv reproduces "
            f"{' and '.join(HF_ACTIVATIONS)} (GELU, tanh approximation)"
        )
    eps = hf.get("layer_norm_epsilon", LAYER_NORM_EPS)
    if eps != LAYER_NORM_EPS:
        raise UserError(f"{where}: layer_norm_epsilon is {eps}; kqv's GPT uses {LAYER_NORM_EPS} (as GPT-2 does)")
    unsupported = {
        "tie_word_embeddings": (True, "an untied LM head"),
        "scale_attn_weights": (True, "attention scores not scaled by 1/√hs"),
        "scale_attn_by_inverse_layer_idx": (False, "scores scaled by 1/layer"),
        "add_cross_attention": (False, "cross-attention"),
    }
    for key, (wanted, what) in unsupported.items():
        if hf.get(key, wanted) != wanted:
            raise UserError(f"{where}: {key} is {hf[key]!r} ({what}); kqv's GPT does not have that")
    missing = [k for k in ("n_embd", "n_layer", "n_head", "vocab_size") if k not in hf]
    if "n_positions" not in hf and "n_ctx" not in hf:
        missing.append("n_positions")
    if missing:
        raise UserError(f"{where}: no {', '.join(missing)}; is this a GPT-2 config.json?")
    n_inner = hf.get("n_inner")
    if n_inner is not None and n_inner != 4 * hf["n_embd"]:
        raise UserError(f"{where}: n_inner is {n_inner}; kqv's MLP is 4 × n_embd = {4 * hf['n_embd']} wide")
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            block_size=hf.get("n_positions", hf.get("n_ctx")),
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_embd=hf["n_embd"],
            dropout=0.0,  # kqv reads GPT-2 to sample and score it; dropout acts in training only
            bias=True,
            score="scaled_dot",
            mask="causal",
            pos_encoding="learned",
            activation=HF_ACTIVATIONS[activation],
        )
    except (ConfigError, TypeError) as exc:
        raise UserError(f"{where}: {exc}") from None


def gpt2_problems(config: GPTConfig, tokenizer=None) -> list[str]:
    """Why a kqv GPT (and its tokenizer) cannot be written as GPT-2; empty when it can."""
    c = config
    wanted = {
        "score": ("scaled_dot", "GPT-2 scales dot products by 1/√hs"),
        "mask": ("causal", "GPT-2 is causal"),
        "pos_encoding": ("learned", "GPT-2 adds learned positions (wpe)"),
        "bias": (True, "GPT-2 has biases in every Linear and LayerNorm"),
        "activation": ("gelu_tanh", "GPT-2's GELU is the tanh approximation"),
    }
    problems = [
        f"{key} is {getattr(c, key)!r} ({why})" for key, (value, why) in wanted.items() if getattr(c, key) != value
    ]
    if tokenizer is None:
        return problems
    if not isinstance(tokenizer, BPETokenizer):
        problems.append(
            f"its tokenizer is {getattr(tokenizer, 'kind', type(tokenizer).__name__)!r}; a GPT-2 checkpoint carries "
            "a byte-level BPE (train with --set tokenizer=bpe)"
        )
    else:
        try:
            tokenizer.vocab_merges()
        except ValueError as exc:
            problems.append(f"its tokenizer is {exc}")
        if tokenizer.vocab_size != c.vocab_size:
            problems.append(f"the tokenizer has {tokenizer.vocab_size} tokens, the model {c.vocab_size}")
    return problems


def hf_config_from_gpt(config: GPTConfig, eot_id: int | None) -> dict:
    """config.json for `transformers.GPT2LMHeadModel`."""
    c = config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,  # 4 × n_embd
        "activation_function": "gelu_new",
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
    }


# --- weights


def read_hf_tensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, or the shards a model.safetensors.index.json lists; never a pickle."""
    single, index = hf_dir / "model.safetensors", hf_dir / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            files = [hf_dir / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{index}: damaged ({exc!r})") from None
    else:
        pickles = [p.name for p in hf_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        if pickles:
            raise UserError(
                f"{hf_dir}: the weights are {', '.join(sorted(pickles))} (a pickle, which can run code when "
                "loaded); kqv reads safetensors only: convert it with transformers, "
                "`GPT2LMHeadModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)`"
            )
        raise UserError(f"{hf_dir}: no model.safetensors")
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            tensors.update(load_file(path))
        except FileNotFoundError:
            raise UserError(f"{path}: missing (listed in model.safetensors.index.json)") from None
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{path}: truncated or not a safetensors file ({exc})") from None
    return tensors


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def to_kqv_tensors(
    hf_tensors: dict[str, torch.Tensor], config: GPTConfig, where: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """GPT-2's tensors -> (kqv's float32 tensors, the names skipped), name by name, asserting every shape.

    Leftovers, gaps and wrong shapes are one UserError that lists them all."""
    tensors, duplicates, skipped = {}, [], []
    for name, t in hf_tensors.items():
        short = name.removeprefix(PREFIX)
        if short in tensors:
            duplicates.append(short)
        tensors[short] = t
    if duplicates:
        raise UserError(f"{where}: {_listed(duplicates)} appear both with and without the {PREFIX!r} prefix")
    if "lm_head.weight" in tensors:
        head, wte = tensors.pop("lm_head.weight"), tensors.get("wte.weight")
        if wte is not None and not (head.shape == wte.shape and torch.equal(head, wte)):
            raise UserError(f"{where}: lm_head.weight differs from wte.weight (an untied LM head); kqv's GPT ties them")
        skipped.append("lm_head.weight")
    for name in [n for n in tensors if n.endswith(SKIPPED)]:
        del tensors[name]
        skipped.append(name)

    shapes = _kqv_shapes(config)
    out, missing, wrong = {}, [], []
    for w in weight_names(config.n_layer):
        t = tensors.pop(w.hf, None)
        if t is None:
            missing.append(w.hf)
            continue
        t = t.t() if w.conv1d else t  # Conv1D (in, out) -> Linear (out, in)
        if tuple(t.shape) != shapes[w.kqv]:
            stored = tuple(t.t().shape) if w.conv1d else tuple(t.shape)
            expected = shapes[w.kqv][::-1] if w.conv1d else shapes[w.kqv]
            wrong.append(f"{w.hf} is {stored}, expected {expected}")
            continue
        out[w.kqv] = t.to(torch.float32)  # a view when the file is float32: copied once, into the model
    leftovers = sorted(tensors)
    if missing or leftovers or wrong:
        parts = []
        if wrong:
            parts.append(f"wrong shape: {_listed(wrong)}")
        if missing:
            parts.append(f"missing: {_listed(missing)}")
        if leftovers:
            parts.append(f"left over (not part of GPT-2 as kqv knows it): {_listed(leftovers)}")
        raise UserError(f"{where}: the weights do not fit config.json's GPT-2 — " + "; ".join(parts))
    return out, skipped


def _kqv_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes without allocating or initialising anything
        model = GPT(config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items() if name != "lm_head.weight"}
    expected = {w.kqv for w in weight_names(config.n_layer)}
    assert set(shapes) == expected, f"kqv's GPT names changed: {sorted(set(shapes) ^ expected)}"  # a kqv bug
    return shapes


def to_hf_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """kqv's weights under the names and layout `transformers` saves GPT-2 with (the tied head once, as wte)."""
    own = model.state_dict()
    return {
        PREFIX + w.hf: (own[w.kqv].t() if w.conv1d else own[w.kqv]).detach().cpu().contiguous()
        for w in weight_names(model.config.n_layer)
    }
