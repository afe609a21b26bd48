"""Run directories shared by every kind of training run: choosing, checking and reopening them.

A run directory holds config.json (with "kind": "gpt" or "translation"), the tokenizer,
the weights, the trainer state and the log (kqv.train.checkpoint describes the files).
"""

import json
from pathlib import Path

import torch

from kqv.config import ConfigError, TrainConfig, from_dict
from kqv.errors import UserError

RUN_FILES = ("config.json", "tokenizer.json", "model.safetensors", "trainer.safetensors")


def pick_device(name: str) -> str:
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps: Apple's Metal backend is not available here; use --device cpu or auto")
    return name


def configure_device(device: str) -> None:
    """CUDA: float32 matmuls and convolutions in TF32 (tensor cores; a 10-bit mantissa, which
    training does not notice). Other devices are left as they are."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def gpt_amp(device: str) -> torch.dtype | None:
    """The GPT's autocast dtype: bf16 on a CUDA GPU that has it, else None (fp32).

    The CPU stays fp32, as the GPT always has, so CPU runs stay comparable with earlier ones.
    (The translation trainer chooses for itself: kqv.train.translate_run.pick_amp.)
    """
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES)


def first_missing(path: Path) -> Path | None:
    """The outermost of `path` and its parents that does not exist yet (None if `path` exists)."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            return missing
        missing = p
    return missing


def free_run_dir(base: Path) -> Path:
    """`base` if it holds no run, else base-2, base-3, …: a default never overwrites a run."""
    if not is_run_dir(base):
        return base
    n = 2
    while is_run_dir(base.with_name(f"{base.name}-{n}")):
        n += 1
    return base.with_name(f"{base.name}-{n}")


def read_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: not a kqv run directory (no config.json)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        info["model"], info["train"]  # noqa: B018 - both tables must be there
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: damaged or incomplete ({exc!r}); it cannot be loaded") from None
    return info


def new_run_dir(out: str | None, default: str) -> Path:
    """--out, which must not hold a run already, or runs/DEFAULT (runs/DEFAULT-2, … if taken)."""
    if out is None:
        return free_run_dir(Path("runs") / default)
    run_dir = Path(out)
    if is_run_dir(run_dir):
        raise UserError(
            f"--out {run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out"
        )
    return run_dir


def open_for_resume(resume: str, kind: str, needed: tuple[str, ...]) -> tuple[Path, dict]:
    """The run directory to continue and its config.json, once every file a resume reads is there."""
    run_dir = Path(resume)
    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir}: no such run directory")
    info = read_config(run_dir)
    if info.get("kind", "gpt") != kind:
        raise UserError(f"--resume {run_dir}: not a {kind} run (it is a {info.get('kind')} run)")
    for name in ("trainer.safetensors", "tokenizer.json", *needed):
        if not (run_dir / name).is_file():
            raise UserError(f"--resume {run_dir}: {name} is missing, so the run cannot continue exactly")
    return run_dir, info


def saved_configs(run_dir: Path, info: dict, model_cls: type):
    """(model config, TrainConfig) from a run's config.json; damage is a UserError naming the file."""
    try:
        return (
            from_dict(model_cls, info["model"], f"{run_dir}/config.json model"),
            from_dict(TrainConfig, info["train"], f"{run_dir}/config.json train"),
        )
    except ConfigError as exc:
        raise UserError(str(exc)) from None
