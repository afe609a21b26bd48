"""Frozen, validated configs: one dataclass per model, one for training, loadable from TOML.

A config is checked when it is made (`__post_init__`), so a bad value fails at
once with a message naming the field — `n_embd=100 is not divisible by n_head=3` —
instead of as a shape error deep inside a forward pass. Unknown keys are
rejected, never ignored. Presets live in `kqv/presets/*.toml`, each with a
`[model]` and a `[train]` table.
"""

import dataclasses
import math
import sys
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from kqv.nn.block import FeedForward
from kqv.nn.masks import parse_mask
from kqv.nn.positional import POSITIONAL
from kqv.nn.scores import SCORES

C = TypeVar("C")
MAX_SEED = 2**63 - 1  # torch.manual_seed takes up to 2^64 − 1; the evaluation batches use seed + 1 and seed + 2


def _short(value: Any, limit: int = 40) -> str:
    """repr(value), cut to `limit` characters: a message names a bad value without echoing a whole file."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ConfigError(ValueError):
    """An invalid configuration value; its message is one line a user can act on."""


def _check_positive(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a whole number ≥ 1, got {_short(value)}")


@dataclass(frozen=True)
class GPTConfig:
    """A decoder-only transformer (GPT-2 layout, pre-LayerNorm)."""

    vocab_size: int = 65
    block_size: int = 128  # longest context the model reads, in tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm layers
    score: str = "scaled_dot"  # kqv.nn.scores
    mask: str = "causal"  # kqv.nn.masks
    pos_encoding: str = "learned"  # kqv.nn.positional
    activation: str = "gelu"  # the MLP's (kqv.nn.block.FeedForward.ACTIVATIONS); GPT-2 uses gelu_tanh

    def __post_init__(self) -> None:
        _check_positive(self, "vocab_size", "block_size", "n_layer", "n_head", "n_embd")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "each head gets n_embd / n_head dimensions, so pick values that divide"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {_short(self.dropout)}")
        if self.score not in SCORES:
            raise ConfigError(f"unknown score {_short(self.score)}; choose one of {', '.join(SCORES)}")
        if self.pos_encoding not in POSITIONAL:
            raise ConfigError(
                f"unknown pos_encoding {_short(self.pos_encoding)}; choose one of {', '.join(POSITIONAL)}"
            )
        if self.activation not in FeedForward.ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {_short(self.activation)}; choose one of {', '.join(FeedForward.ACTIVATIONS)}"
            )
        if self.pos_encoding == "sinusoidal" and self.n_embd % 2:
            raise ConfigError(f"sinusoidal positions need an even n_embd (sin and cos pairs), got {self.n_embd}")
        if self.pos_encoding == "rope" and self.head_size % 2:
            raise ConfigError(f"rope needs an even head size, got n_embd / n_head = {self.head_size}")
        try:
            parse_mask(self.mask)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


@dataclass(frozen=True)
class TransformerConfig:
    """The encoder–decoder Transformer (Vaswani et al. 2017); the defaults are a model that trains on 2 CPU cores.

    One vocabulary serves source and target; its embedding is also the output projection.
    """

    vocab_size: int = 8000  # shared source/target BPE vocabulary, special tokens included
    max_len: int = 256  # longest source or target, in tokens (the sinusoid table's length)
    n_layer_enc: int = 3
    n_layer_dec: int = 3
    n_head: int = 4
    n_embd: int = 256  # model width (d_model in the paper)
    d_ff: int = 1024  # hidden width of the position-wise feed-forward network
    dropout: float = 0.1  # on sublayer outputs and on embeddings + positions (the paper's "residual dropout")
    attn_dropout: float = 0.0  # on attention weights (not in the paper; > 0 also rules out the fused kernel on CPU)
    norm_first: bool = False  # False: post-LN as in the paper; True: pre-LN (LayerNorm inside each residual branch)
    activation: str = "relu"
    bias: bool = True
    label_smoothing: float = 0.1  # the training loss only; perplexity comes from plain NLL
    pos_encoding: str = "sinusoidal"  # kqv.nn.positional: sinusoidal | learned | none
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        _check_positive(self, "vocab_size", "max_len", "n_layer_enc", "n_layer_dec", "n_head", "n_embd", "d_ff")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "each head gets n_embd / n_head dimensions, so pick values that divide"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {_short(self.dropout)}")
        if not 0.0 <= float(self.attn_dropout) < 1.0:
            raise ConfigError(f"attn_dropout must be in [0, 1), got {_short(self.attn_dropout)}")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {_short(self.label_smoothing)}")
        if self.activation not in ("relu", "gelu", "gelu_tanh"):
            raise ConfigError(f"activation must be relu, gelu or gelu_tanh, got {_short(self.activation)}")
        if self.pos_encoding not in POSITIONAL or POSITIONAL[self.pos_encoding].kind not in ("additive", "none"):
            raise ConfigError(
                f"pos_encoding {_short(self.pos_encoding)} is not available here; the encoder–decoder adds "
                "positions to its embeddings: choose sinusoidal, learned or none"
            )
        if self.pos_encoding == "sinusoidal" and self.n_embd % 2:
            raise ConfigError(f"sinusoidal positions need an even n_embd (sin and cos pairs), got {self.n_embd}")
        specials = (self.pad_id, self.bos_id, self.eos_id)
        if len(set(specials)) != 3 or not all(0 <= i < self.vocab_size for i in specials):
            raise ConfigError(f"pad_id, bos_id, eos_id must be distinct ids below vocab_size, got {specials}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimiser, schedule, batches, evaluation, tokenizer."""

    batch_size: int = 16  # sequences per micro-step
    grad_accum: int = 1  # micro-steps per optimiser step
    max_iters: int = 2000  # optimiser steps
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # learning rate at the end of the cosine
    warmup_iters: int = 100  # linear warm-up from 0 to lr
    lr_decay_iters: int = 0  # cosine from lr to min_lr ends here (0: at max_iters)
    weight_decay: float = 0.1  # AdamW, matrices only
    decay_embeddings: bool = False  # decay the embedding tables too (nanoGPT decays every 2-D tensor)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0: no clipping
    eval_interval: int = 250  # evaluate every this many steps (and at the end)
    eval_iters: int = 20  # batches per evaluation, fixed for the whole run
    state_every_s: float = 60.0  # also write the trainer state after this many seconds of wall time (0: never)
    seed: int = 1337
    tokenizer: str = "char"  # char | bpe
    bpe_vocab_size: int = 512
    schedule: str = "cosine"  # cosine (warm-up, cosine to min_lr) | inverse_sqrt (warm-up, then lr·√(warmup/step))
    eps: float = 1e-8  # Adam's ε
    batch_tokens: int = 4096  # translation: a batch holds sentences of similar length up to this many tokens

    def __post_init__(self) -> None:
        _check_positive(self, "batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "state_every_s"):
            if not math.isfinite(float(getattr(self, name))):
                raise ConfigError(f"{name} must be a finite number, got {_short(getattr(self, name))}")
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be ≥ 0, got {_short(getattr(self, name))}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {_short(self.lr)}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"beta1 and beta2 must be in [0, 1), got {_short(self.beta1)}, {_short(self.beta2)}")
        if self.warmup_iters < 0 or self.lr_decay_iters < 0:
            raise ConfigError("warmup_iters and lr_decay_iters must be ≥ 0")
        if self.schedule not in ("cosine", "inverse_sqrt"):
            raise ConfigError(f"schedule must be 'cosine' or 'inverse_sqrt', got {_short(self.schedule)}")
        if not (math.isfinite(float(self.eps)) and self.eps > 0):
            raise ConfigError(f"eps must be a finite number > 0, got {_short(self.eps)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be a whole number 0 … 2^63 − 1, got {_short(self.seed)}")
        _check_positive(self, "batch_tokens")
        if self.tokenizer not in ("char", "bpe"):
            raise ConfigError(f"tokenizer must be 'char' or 'bpe', got {_short(self.tokenizer)}")
        if self.tokenizer == "bpe" and self.bpe_vocab_size < 257:
            raise ConfigError(f"bpe_vocab_size must be ≥ 257 (256 bytes + merges), got {self.bpe_vocab_size}")


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


# earlier names of config keys, still read (old run directories, --set): {config class name: {old: new}}
ALIASES = {"TransformerConfig": {"d_model": "n_embd"}}


def _renamed(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """`values` with earlier key names (ALIASES) spelled as they are now."""
    aliases, out, spelled = ALIASES.get(cls.__name__, {}), {}, {}
    for key, value in values.items():
        name = aliases.get(key, key)
        if name in out:
            first, second = sorted((spelled[name], key))
            raise ConfigError(f"{where}: {first} and {second} are the same setting; give it once")
        out[name], spelled[name] = value, key
    return out


def from_dict(cls: type[C], values: dict[str, Any], where: str = "config") -> C:
    """Build `cls` from a dict, rejecting unknown keys and coercing TOML/CLI types (earlier key names: ALIASES)."""
    values = _renamed(cls, values, where)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
    coerced = {}
    for key, value in values.items():
        coerced[key] = _coerce(value, type(known[key].default), f"{where}: {key}")
    return cls(**coerced)


def _coerce(value: Any, kind: type, where: str) -> Any:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if isinstance(value, str):
        try:
            if kind is bool:
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError
            return kind(value)
        except ValueError:
            raise ConfigError(f"{where} expects {kind.__name__}, got {_short(value)}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where} expects a float, got an integer too large for one") from None
    raise ConfigError(f"{where} expects {kind.__name__}, got {_short(value)}")


PRESET_FOLDERS = {"gpt": "", "translation": "translation", "translate": "translation"}  # under kqv/presets/


def _preset_folder(family: str):
    """GPT presets sit in kqv/presets/, the translation Transformer's in kqv/presets/translation/."""
    if family not in PRESET_FOLDERS:
        raise ConfigError(f"unknown model family {family!r}; choose one of {', '.join(PRESET_FOLDERS)}")
    folder = resources.files("kqv.presets")
    return folder / PRESET_FOLDERS[family] if PRESET_FOLDERS[family] else folder


def preset_names(family: str = "gpt") -> list[str]:
    folder = _preset_folder(family)
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str, family: str = "gpt") -> dict[str, dict[str, Any]]:
    """The raw `{"model": {...}, "train": {...}}` tables of a shipped preset."""
    path = _preset_folder(family) / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(preset_names(family))}")
    tables = tomllib.loads(path.read_text(encoding="utf-8"))
    extra = sorted(set(tables) - {"model", "train", "description"})
    if extra:
        raise ConfigError(f"preset {name}: unknown table(s) {', '.join(extra)}")
    return {"model": dict(tables.get("model", {})), "train": dict(tables.get("train", {}))}


def apply_overrides(
    tables: dict[str, dict[str, Any]], assignments: list[str], model_cls: type = GPTConfig
) -> dict[str, dict[str, Any]]:
    """`--set n_layer=6 --set train.lr=3e-4`: bare keys go to whichever table owns them (the model's first)."""
    model_keys = {f.name for f in fields(model_cls)}
    train_keys = {f.name for f in fields(TrainConfig)}
    out = {"model": dict(tables["model"]), "train": dict(tables["train"])}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        table, _, name = key.rpartition(".")
        if table in ("", "model"):
            name = ALIASES.get(model_cls.__name__, {}).get(name, name)  # --set d_model=… still works
        if not table:
            table = "model" if name in model_keys else "train" if name in train_keys else ""
        if table not in ("model", "train") or name not in (model_keys if table == "model" else train_keys):
            raise ConfigError(
                f"--set {key}: unknown key; model keys: {', '.join(sorted(model_keys))}; "
                f"train keys: {', '.join(sorted(train_keys))}"
            )
        out[table][name] = value.strip()
    return out
