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
"""

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from kqv.config import ConfigError, GPTConfig
from kqv.errors import UserError
from kqv.fileio import atomic_write_bytes
from kqv.models.gpt import GPT
from kqv.tokenizer.bpe import GPT2_EOT, BPETokenizer, VocabMerges, vocab_merges_of

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


# --- tokenizer files


def read_hf_tokenizer(hf_dir: Path) -> tuple[BPETokenizer, list[str]]:
    """tokenizer.json, else vocab.json + merges.txt -> (kqv's BPETokenizer, the files read)."""
    tokenizer_json, vocab_json, merges_txt = hf_dir / "tokenizer.json", hf_dir / "vocab.json", hf_dir / "merges.txt"
    files = ["tokenizer_config.json"]
    try:
        if tokenizer_json.is_file():
            files = [tokenizer_json.name]
            parts = vocab_merges_of(json.loads(tokenizer_json.read_text(encoding="utf-8")))
        elif vocab_json.is_file() and merges_txt.is_file():
            files = [vocab_json.name, merges_txt.name]
            parts = _read_vocab_merges(vocab_json, merges_txt)
        else:
            raise UserError(f"{hf_dir}: no tokenizer; a GPT-2 checkpoint has tokenizer.json or vocab.json + merges.txt")
        _check_tokenizer_config(hf_dir / "tokenizer_config.json")
        return BPETokenizer.from_vocab_merges(parts), files
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise UserError(f"{hf_dir}/{files[0]}: cannot read the tokenizer ({exc})") from None


def _read_vocab_merges(vocab_json: Path, merges_txt: Path) -> VocabMerges:
    vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise ValueError("vocab.json must map each token to an integer id")
    merges = []
    for n, line in enumerate(merges_txt.read_text(encoding="utf-8").splitlines(), 1):
        if not line or (n == 1 and line.startswith("#version")):
            continue
        pair = tuple(line.split(" "))
        if len(pair) != 2:
            raise ValueError(f"merges.txt line {n} is not two tokens separated by a space: {line!r}")
        merges.append(pair)
    added = [GPT2_EOT] if GPT2_EOT in vocab else []  # transformers' GPT-2 tokenizer finds it whole in any text
    return VocabMerges(vocab, merges, added)


def _check_tokenizer_config(path: Path) -> None:
    """Settings in tokenizer_config.json that would change the ids are refused, not ignored."""
    if not path.is_file():
        return
    settings = json.loads(path.read_text(encoding="utf-8"))
    for key in ("add_prefix_space", "add_bos_token", "add_eos_token"):
        if settings.get(key):
            raise ValueError(f"tokenizer_config.json sets {key}, which kqv's tokenizer does not do")


def write_hf_tokenizer(tokenizer: BPETokenizer, hf_dir: Path, model_max_length: int) -> list[Path]:
    """vocab.json, merges.txt, tokenizer.json and tokenizer_config.json as `transformers` writes GPT-2's."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    parts = tokenizer.vocab_merges()
    hf = Tokenizer(
        models.BPE(vocab=parts.vocab, merges=parts.merges, continuing_subword_prefix="", end_of_word_suffix="")
    )
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = processors.ByteLevel(trim_offsets=False)
    hf.add_special_tokens([AddedToken(a, special=True, normalized=False) for a in parts.added_tokens])
    eot = GPT2_EOT if GPT2_EOT in parts.vocab else None  # a kqv-trained BPE has none
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": model_max_length,
        "add_prefix_space": False,
        "errors": "replace",
        "bos_token": eot,
        "eos_token": eot,
        "unk_token": eot,
        "pad_token": None,
    }
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in parts.merges)
    files = {
        "vocab.json": json.dumps(parts.vocab, ensure_ascii=False),
        "merges.txt": merges,
        "tokenizer.json": hf.to_str(),
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
    }
    return [atomic_write_bytes(hf_dir / name, text.encode("utf-8")) for name, text in files.items()]


# --- whole checkpoints


def _hf_dir(hf_dir: str | Path) -> Path:
    path = Path(hf_dir)
    if not path.is_dir():
        raise UserError(f"{path}: no such directory; give a Hugging Face GPT-2 folder (config.json, model.safetensors)")
    return path


def read_hf_config(hf_dir: Path) -> dict:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{hf_dir}: no config.json; is this a Hugging Face model folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def load_hf_gpt2(hf_dir: str | Path) -> HFModel:
    """A Hugging Face GPT-2 folder -> (kqv GPT in eval mode, its BPETokenizer, HFInfo); the same logits, fp32."""
    path = _hf_dir(hf_dir)
    hf_config = read_hf_config(path)
    config = gpt_config_from_hf(hf_config, str(path / "config.json"))
    tokenizer, tokenizer_files = read_hf_tokenizer(path)
    if tokenizer.vocab_size != config.vocab_size:
        raise UserError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model {config.vocab_size} embeddings; "
            "kqv needs them equal"
        )
    hf_tensors = read_hf_tensors(path)
    tensors, skipped = to_kqv_tensors(hf_tensors, config, str(path))
    info = HFInfo(
        hf_dir=str(path.resolve()),
        hf_config=hf_config,
        prefixed=any(name.startswith(PREFIX) for name in hf_tensors),
        skipped=skipped,
        dtype=", ".join(sorted({str(t.dtype).removeprefix("torch.") for t in hf_tensors.values()})),
        tokenizer_files=tokenizer_files,
    )
    model = GPT(config)
    own = model.state_dict()
    with torch.no_grad():
        for name, t in tensors.items():  # shapes were checked name by name above
            own[name].copy_(t)
    return HFModel(model.eval(), tokenizer, info)


def save_hf_gpt2(model: GPT, tokenizer, hf_dir: str | Path) -> Path:
    """Write `model` as a GPT-2 checkpoint that `transformers` loads (GPT2LMHeadModel, AutoTokenizer).

    Refuses (UserError, every reason listed) a model that is not GPT-2 and a HF_DIR that holds
    anything. The files are written into a temporary folder beside HF_DIR, which is renamed to
    HF_DIR once complete: a crash leaves no half-written checkpoint.
    """
    problems = gpt2_problems(model.config, tokenizer)
    if problems:
        raise UserError("this model cannot be written as GPT-2: " + "; ".join(problems))
    eot = tokenizer.hf.token_to_id(GPT2_EOT)
    files = {
        "config.json": (json.dumps(hf_config_from_gpt(model.config, eot), indent=2) + "\n").encode(),
        "model.safetensors": save_tensors(to_hf_tensors(model), metadata={"format": "pt"}),  # transformers checks it
    }
    return _write_folder(Path(hf_dir), files, lambda d: write_hf_tokenizer(tokenizer, d, model.config.block_size))


def _write_folder(target: Path, files: dict[str, bytes], more=None) -> Path:
    """Write `files` (and whatever `more(folder)` writes) to a new folder `target`, all or nothing."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target}: already exists and is not empty; choose a new folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    except OSError as exc:
        raise UserError(f"{target}: cannot write there ({exc.strerror})") from None
    try:
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)
        if more is not None:
            more(staging)
        os.chmod(staging, 0o777 & ~_umask())
        os.replace(staging, target)  # an empty target folder is replaced; a non-empty one was refused above
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- kqv run directories


def import_hf_run(hf_dir: str | Path, run_dir: str | Path) -> Path:
    """A Hugging Face GPT-2 folder -> a kqv run directory that `kqv gpt sample|eval`, `inspect`, `serve` read."""
    from kqv import __version__
    from kqv.config import TrainConfig, to_dict
    from kqv.tokenizer import save_tokenizer
    from kqv.train.checkpoint import CHECKSUM_KEY, model_tensors, tensors_digest

    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UserError(f"{run_dir}: already exists and is not empty; choose a new run directory")
    model, tokenizer, info = load_hf_gpt2(hf_dir)
    train = TrainConfig(tokenizer="bpe", bpe_vocab_size=max(tokenizer.vocab_size, 257))  # the table must be valid
    config = {
        "kqv_version": __version__,
        "kind": "gpt",
        "preset": None,
        "model": to_dict(model.config),
        "train": to_dict(train),
        "tokenizer": {"kind": "bpe", "fingerprint": tokenizer.fingerprint()},
        "imported_from": {
            "format": "huggingface-gpt2",
            "hf_dir": info.hf_dir,
            "dtype": info.dtype,
            "tokenizer_files": info.tokenizer_files,
            "skipped": info.skipped,
        },
    }
    config["checksums"] = "sha256"  # model.safetensors carries its own sha256 and config.json's
    config_bytes = (json.dumps(config, indent=2) + "\n").encode()
    tensors = model_tensors(model)
    meta = json.dumps({"imported_from": info.hf_dir, "config_sha256": hashlib.sha256(config_bytes).hexdigest()})
    weights = save_tensors(tensors, metadata={"kqv": meta, CHECKSUM_KEY: tensors_digest(tensors, meta)})
    files = {"config.json": config_bytes, "model.safetensors": weights}
    return _write_folder(run_dir, files, lambda d: save_tokenizer(tokenizer, d / "tokenizer.json"))


def export_hf_run(run_dir: str | Path, hf_dir: str | Path) -> Path:
    """A kqv run directory -> a Hugging Face GPT-2 folder (see `save_hf_gpt2`)."""
    from kqv.train.gpt_run import load_run

    run = load_run(run_dir)
    return save_hf_gpt2(run.model, run.tokenizer, hf_dir)


def load_hf_run(hf_dir: str | Path, device: str = "cpu"):
    """A Hugging Face GPT-2 folder as a kqv `Run` (for `kqv gpt sample|eval --from-hf`), nothing written."""
    from kqv.config import TrainConfig, to_dict
    from kqv.train.gpt_run import Run

    model, tokenizer, info = load_hf_gpt2(hf_dir)
    train = TrainConfig(tokenizer="bpe", bpe_vocab_size=max(tokenizer.vocab_size, 257))
    meta = {"kind": "gpt", "model": to_dict(model.config), "train": to_dict(train), "imported_from": info.hf_dir}
    return Run(model.to(device), tokenizer, model.config, train, meta, Path(info.hf_dir))
