"""A Hugging Face GPT-2 folder as a kqv run: imported into a run directory, exported from one, or read in place.

An imported run directory holds config.json (kind "gpt", with "imported_from" naming the folder), the
tokenizer and model.safetensors — everything `kqv gpt sample|eval`, `inspect` and `serve` read — and
no trainer state: it samples, it does not resume.
"""

import hashlib
from pathlib import Path

from kqv import __version__
from kqv.config import TrainConfig, to_dict
from kqv.errors import UserError
from kqv.fileio import atomic_write_folder
from kqv.models.hf_folder import load_hf_gpt2, save_hf_gpt2
from kqv.runs.config_file import config_bytes
from kqv.runs.hub import resolve_hf_source
from kqv.runs.load import Run
from kqv.runs.weights import model_tensors, safetensors_bytes
from kqv.tokenizer import save_tokenizer


def _train_table(tokenizer) -> TrainConfig:
    return TrainConfig(tokenizer="bpe", bpe_vocab_size=max(tokenizer.vocab_size, 257))  # the table must be valid


def import_hf_run(hf_dir: str | Path, run_dir: str | Path) -> Path:
    """A Hugging Face GPT-2 folder or hub name (kqv.runs.hub) -> a kqv run directory that `kqv gpt sample|eval`,
    `inspect`, `why`, `serve` read."""
    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UserError(f"{run_dir}: already exists and is not empty; choose a new run directory")
    model, tokenizer, info = load_hf_gpt2(resolve_hf_source(hf_dir))
    config = {
        "kqv_version": __version__,
        "kind": "gpt",
        "preset": None,
        "model": to_dict(model.config),
        "train": to_dict(_train_table(tokenizer)),
        "tokenizer": {"kind": "bpe", "fingerprint": tokenizer.fingerprint()},
        "imported_from": {
            "format": "huggingface-gpt2",
            "hf_dir": info.hf_dir,
            "dtype": info.dtype,
            "tokenizer_files": info.tokenizer_files,
            "skipped": info.skipped,
        },
        "checksums": "sha256",  # model.safetensors carries its own sha256 and config.json's
    }
    written = config_bytes(config)
    meta = {"imported_from": info.hf_dir, "config_sha256": hashlib.sha256(written).hexdigest()}
    files = {"config.json": written, "model.safetensors": safetensors_bytes(model_tensors(model), meta)}
    return atomic_write_folder(run_dir, files, lambda d: save_tokenizer(tokenizer, d / "tokenizer.json"))


def export_hf_run(run: Run, hf_dir: str | Path) -> Path:
    """A loaded kqv run -> a Hugging Face GPT-2 folder (see kqv.models.hf_folder.save_hf_gpt2)."""
    return save_hf_gpt2(run.model, run.tokenizer, hf_dir)


def load_hf_run(hf_dir: str | Path, device: str = "cpu") -> Run:
    """A Hugging Face GPT-2 folder, or a hub model name (kqv.runs.hub), as a kqv `Run` (for `--from-hf`)."""
    model, tokenizer, info = load_hf_gpt2(resolve_hf_source(hf_dir))
    train = _train_table(tokenizer)
    meta = {"kind": "gpt", "model": to_dict(model.config), "train": to_dict(train), "imported_from": info.hf_dir}
    return Run(model.to(device), tokenizer, model.config, train, meta, Path(info.hf_dir))
