"""Loading a run back: any run directory (a GPT, a translation model, an imported GPT-2) into one `Run`.

Every file is checked on the way in (kqv.runs.config_file, kqv.runs.weights): config.json field by
field, the tokenizer against the fingerprint config.json recorded and against the model's vocabulary,
the weights against their own sha256 and config.json's, and against NaN. The model is built only once
the memory check says its weights fit.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from kqv.config import TrainConfig
from kqv.errors import UserError
from kqv.runs.config_file import checksummed, read_config, saved_configs, verify_config, verify_files
from kqv.runs.directory import run_status
from kqv.runs.weights import load_model_tensors, read_safetensors
from kqv.tokenizer import load_tokenizer


@dataclass
class Run:
    """A model with what it came with, wherever it came from."""

    model: nn.Module  # in eval mode, on the device asked for
    tokenizer: object
    model_config: object  # GPTConfig | TransformerConfig
    train_config: TrainConfig
    info: dict  # the whole config.json (or, for a Hugging Face folder read in place, the same tables)
    run_dir: Path

    @property
    def kind(self) -> str:
        return self.info.get("kind", "gpt")


def run_tokenizer(run_dir: Path, info: dict):
    """tokenizer.json, which must be the tokenizer config.json recorded the fingerprint of."""
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    if tokenizer.fingerprint() != info["tokenizer"]["fingerprint"]:
        raise UserError(f"{run_dir}/tokenizer.json is not the tokenizer this model was trained with")
    return tokenizer


# what each kind of run is, and the command group that uses it
KIND_WORDS = {
    "gpt": ("a GPT run (a decoder-only model)", "kqv gpt"),
    "translation": ("a translation run (an encoder–decoder)", "kqv translate"),
}


def check_kind(run_dir: Path, kind: str) -> None:
    """A run of another kind than `kind` -> one line naming what it is and the command group for it.

    Only config.json's "kind" is read here; anything wrong with the file is left to read_config."""
    try:
        found = json.loads((run_dir / "config.json").read_bytes()).get("kind", "gpt")
    except (OSError, ValueError, AttributeError):
        return
    if found != kind and found in KIND_WORDS and kind in KIND_WORDS:
        what, command = KIND_WORDS[found]
        raise UserError(f"{run_dir} is {what}; use `{command} …`")


def load_run_dir(
    run_dir: str | Path,
    kind: str,
    config_cls: type,
    model_cls: type,
    check_memory: Callable[[object, str, str], None],
    train_command: str,
    device: str = "cpu",
    weights: str = "model.safetensors",
) -> Run:
    """A run of `kind` with its best weights (or `weights`), and its tokenizer; every file is checked.

    `check_memory(config, where, device)` refuses a model too big to load; `train_command`
    ("kqv gpt train") is named in the message for a folder that is not there yet."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory; train one with `{train_command} --out {run_dir}`")
    check_kind(run_dir, kind)
    info = read_config(run_dir, kind)
    model_cfg, train_cfg = saved_configs(run_dir, info, config_cls)
    check_memory(model_cfg, str(run_dir), device)
    tokenizer = run_tokenizer(run_dir, info)
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise UserError(
            f"{run_dir}: tokenizer has {tokenizer.vocab_size} tokens but the model expects {model_cfg.vocab_size}"
        )
    path = run_dir / weights
    if not path.exists() and run_status(run_dir) == "started":
        raise UserError(
            f"{run_dir}: no weights yet (its start was stopped); train it: {train_command} --resume {run_dir}"
        )
    tensors, meta = read_safetensors(path, require_checksum=checksummed(info))
    verify_files(run_dir, info)
    verify_config(run_dir, meta, weights)
    model = model_cls(model_cfg)
    load_model_tensors(model, tensors, str(path))
    return Run(model.to(device).eval(), tokenizer, model_cfg, train_cfg, info, run_dir)
