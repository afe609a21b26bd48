"""Run directories: weights, optimiser and trainer state as safetensors + JSON, never pickles.

    RUN_DIR/
      config.json          model + train config, data source, kqv version
      tokenizer.json       the tokenizer the model was trained with
      model.safetensors    the weights with the best validation loss (for sampling, eval)
      trainer.safetensors  everything needed to resume exactly: latest weights ("model.*"),
                           AdamW moments ("optim.*"), RNG state ("rng.*"), and in its
                           metadata the step, the data position and the best loss
      log.csv              step, train_loss, val_loss, lr, tokens_per_s, elapsed_s

Each file is written to a temporary name and renamed, so a run killed at any moment
leaves every file whole: the old version or the new one. Weight names are the
module's own (`blocks.0.attn.in_proj.weight`), without `_orig_mod.` (torch.compile) or
`module.` (DDP) prefixes; the tied LM head is stored once, as the embedding.
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from kqv.errors import UserError
from kqv.fileio import atomic_write_bytes

PREFIXES = ("_orig_mod.", "module.")


def clean_name(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name.replace("._orig_mod.", ".")


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with clean names, each shared tensor once (the first name wins)."""
    out, seen = {}, set()
    for name, tensor in model.state_dict(keep_vars=False).items():
        key = (tensor.data_ptr(), tensor.shape) if tensor.numel() else None
        if key is not None and key in seen:
            continue
        seen.add(key)
        out[clean_name(name)] = tensor.detach().contiguous().cpu()
    return out


def load_model_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy weights in by name, allowing only tied duplicates to be absent; shapes must match."""
    own = model.state_dict()
    expected = model_tensors(model).keys()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise UserError(f"{where}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    for name, t in tensors.items():
        if own[name].shape != t.shape:
            raise UserError(f"{where}: {name} has shape {tuple(t.shape)}, the model expects {tuple(own[name].shape)}")
    model.load_state_dict(tensors, strict=False)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """-> (tensors, JSON metadata under key 'kqv'). Damage is a UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: missing; is {path.parent} a kqv run directory?")
    raw = path.read_bytes()
    try:
        tensors = load_tensors(raw)
        header_len = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8 : 8 + header_len]).get("__metadata__") or {}
        meta = json.loads(metadata.get("kqv", "{}"))
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: truncated or not a safetensors file ({exc}); it cannot be loaded") from None
    return tensors, meta


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    return atomic_write_bytes(path, save_tensors(tensors, metadata={"kqv": json.dumps(meta)}))


def save_weights(path: Path, model: nn.Module, meta: dict | None = None) -> Path:
    return write_safetensors(path, model_tensors(model), meta or {})


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """AdamW state as flat tensors 'optim.{param index}.{exp_avg|exp_avg_sq|step}' + JSON param groups.

    Before the first step AdamW has no state; `n_states` records how many parameters have one,
    so a resume can tell "nothing yet" from "lost".
    """
    state = optimizer.state_dict()
    tensors = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().clone().cpu()
    keys = sorted({k for entry in state["state"].values() for k in entry})
    return tensors, {"param_groups": state["param_groups"], "n_states": len(state["state"]), "keys": keys}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, where: str) -> None:
    """Restore AdamW exactly; any missing piece of its state is a loud error, never a silent reset."""
    info = meta.get("optimizer")
    if not info or "n_states" not in info:
        raise UserError(f"{where}: no optimizer state in the checkpoint; it cannot resume exactly")
    indices = [i for group in info["param_groups"] for i in group["params"]]
    expected_states = len(indices) if info["n_states"] else 0
    if expected_states and not any(k.startswith("optim.") for k in tensors):
        raise UserError(f"{where}: no optimizer state in the checkpoint; it cannot resume exactly")
    if info["n_states"] != expected_states:
        raise UserError(f"{where}: optimizer state covers {info['n_states']} of {len(indices)} parameters")
    state: dict[int, dict] = {}
    for index in indices[:expected_states]:
        entry = {}
        for key in info["keys"]:
            name = f"optim.{index}.{key}"
            if name not in tensors:
                raise UserError(f"{where}: optimizer state {name} is missing; it cannot resume exactly")
            entry[key] = tensors[name]
        state[index] = entry
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
