"""The weights half of checkpointing: tensor files as safetensors + JSON metadata, never pickles.

    RUN_DIR/
      config.json          model + train config, data source, kqv version
      tokenizer.json       the tokenizer the model was trained with
      model.safetensors    the weights with the best validation loss (for sampling, eval)
      trainer.safetensors  everything needed to resume exactly: latest weights ("model.*"),
                           AdamW moments ("optim.*"), RNG state ("rng.*"), and in its
                           metadata the step, the data position and the best loss
      log.csv              step, train_loss, val_loss, lr, tokens_per_s, elapsed_s

Each file is written to a temporary name and renamed, so a run killed at any moment
leaves every file whole: the old version or the new one.

Damage is detected, not loaded. safetensors checks a file's layout but not its bytes: a
flipped bit in a weight loads silently. So each tensor file carries, in its metadata, the
sha256 of its tensors (names, dtypes, shapes, bytes) and of its kqv metadata, and reading
it checks that digest; weights that hold NaN or ±inf are refused as well. Weight names are the
module's own (`blocks.0.attn.in_proj.weight`), without `_orig_mod.` (torch.compile) or
`module.` (DDP) prefixes; the tied LM head is stored once, as the embedding.
"""

import hashlib
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
CHECKSUM_KEY = "kqv_sha256"  # in the safetensors metadata, beside "kqv" (the JSON metadata)


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
    check_finite(tensors, where)
    model.load_state_dict(tensors, strict=False)


def tensors_digest(tensors: dict[str, torch.Tensor], meta_json: str) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (in name order), then the JSON metadata."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    h.update(meta_json.encode())
    return h.hexdigest()


def read_safetensors(path: Path, require_checksum: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """-> (tensors, JSON metadata under key 'kqv'). Damage is a UserError naming the file.

    A file written by kqv carries the sha256 of its contents (`tensors_digest`), and it must
    match. `require_checksum`: a file without one is refused too (a run that kqv wrote with
    checksums lost it, so the file was changed).
    """
    if path.is_dir():
        raise UserError(f"{path}: a folder is where this file belongs; move it aside")
    if not path.is_file():
        raise UserError(f"{path}: missing; is {path.parent} a kqv run directory?")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        tensors = load_tensors(raw)
        metadata, meta_json, meta = _metadata(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    except (SafetensorError, ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise UserError(f"{path}: truncated or not a safetensors file ({exc}); it cannot be loaded") from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is None and require_checksum:
        raise UserError(f"{path}: damaged: its checksum is missing, so its contents cannot be trusted")
    if expected is not None and tensors_digest(tensors, meta_json) != expected:
        raise UserError(
            f"{path}: damaged: its bytes do not match the sha256 written with it; "
            "it cannot be used (restore the file from a copy, or train again)"
        )
    return tensors, meta


def _metadata(header: bytes) -> tuple[dict, str, dict]:
    """A safetensors header -> (its __metadata__, the kqv JSON text in it, that JSON read); ValueError if malformed."""
    metadata = json.loads(header).get("__metadata__") or {}
    meta_json = metadata.get("kqv", "{}")
    meta = json.loads(meta_json)
    if not isinstance(meta, dict):
        raise ValueError("its kqv metadata is not a JSON object")
    return metadata, meta_json, meta


def read_metadata(path: Path) -> dict | None:
    """The kqv metadata of a safetensors file, from its header alone (no tensor is read); None if unreadable."""
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100_000_000:
                return None
            return _metadata(f.read(n))[2]
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return None


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """Refuse NaN and ±inf in any floating-point tensor: such weights give NaN losses and broken samples."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UserError(f"{where}: {name} holds NaN or infinite values; these weights are unusable")


def safetensors_bytes(tensors: dict[str, torch.Tensor], meta: dict) -> bytes:
    """A safetensors file's bytes: the tensors, the JSON metadata, and the sha256 that `read_safetensors` checks."""
    meta_json = json.dumps(meta)
    return save_tensors(tensors, metadata={"kqv": meta_json, CHECKSUM_KEY: tensors_digest(tensors, meta_json)})


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write tensors and JSON metadata, with their sha256, atomically."""
    return atomic_write_bytes(path, safetensors_bytes(tensors, meta))


def save_weights(path: Path, model: nn.Module, meta: dict | None = None) -> Path:
    return write_safetensors(path, model_tensors(model), meta or {})
