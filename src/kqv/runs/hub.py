"""`--from-hf NAME_OR_DIR`: a Hugging Face GPT-2 folder, or a hub model name found in (or fetched into) the cache.

An existing path, or anything that looks like one (it starts with `.`, `~` or `/`, ends with `/`, or has
more than one `/`), is a folder and is returned as given: kqv.models.hf_folder reads it and names what
is wrong. Anything else (`gpt2`, `openai-community/gpt2`) is a hub repo id, looked up in the standard
Hugging Face cache exactly as `huggingface_hub` does (HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE honoured):
first without the network; if it is not there and the hub is not switched off, downloaded — only the
files kqv reads (config.json, safetensors weights, tokenizer files), never a pickle.
"""

import sys
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client: its connection errors are not OSErrors
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)
from huggingface_hub.utils import filter_repo_objects, validate_repo_id

from kqv.errors import UserError

# What kqv.models.hf_folder reads from a GPT-2 checkpoint; nothing else is fetched.
HF_FILES = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
]
PICKLES = (".bin", ".pt", ".pth", ".ckpt")


def looks_like_path(text: str) -> bool:
    """A name no hub repo id can have: read as a folder even when it does not exist."""
    return not text or text.startswith((".", "~", "/")) or text.endswith("/") or text.count("/") > 1 or "\\" in text


def fetch_command(name: str) -> str:
    """The `hf` command (installed with huggingface_hub) that puts what kqv reads into the cache."""
    return f"hf download {name} --include '*.json' --include '*.safetensors' --include merges.txt"


def resolve_hf_source(name_or_dir: str | Path) -> Path:
    """`--from-hf`'s argument -> the folder to read: the path itself, or the cached snapshot of a hub model.

    A `Path`, an existing path or a path-like string comes back unchanged (a missing one is reported by
    kqv.models.hf_folder, as before). A hub name is found in the Hugging Face cache, or downloaded into it
    (one line on stderr says so) unless HF_HUB_OFFLINE is set. Every failure is one UserError line.
    """
    if isinstance(name_or_dir, Path):
        return name_or_dir
    text = str(name_or_dir)
    path = Path(text)
    if path.exists() or looks_like_path(text):
        return path
    try:
        validate_repo_id(text)
    except HFValidationError:
        raise UserError(
            f"{text}: no such folder, and not a Hugging Face model name (like gpt2 or openai-community/gpt2)"
        ) from None
    return _hub_snapshot(text)


def _hub_snapshot(name: str) -> Path:
    cache = constants.HF_HUB_CACHE
    folder = _cached(name)
    if folder is not None and _complete(folder):
        return folder
    if constants.is_offline_mode():
        if folder is not None:
            _refuse_pickles(name, [p.name for p in folder.iterdir()])
        if folder is None:
            held = "no such folder, and not in the Hugging Face cache"
        else:
            held = f"only partly in the Hugging Face cache (no {_missing(p.name for p in folder.iterdir())})"
        raise UserError(
            f"{name}: {held} ({cache}), and HF_HUB_OFFLINE is set; "
            f"fetch it where there is network: {fetch_command(name)}"
        )
    sizes = _hub_files(name, cache)  # asked first, so that a wrong name is one line and nothing is fetched
    _refuse_pickles(name, list(sizes))
    wanted = list(filter_repo_objects(sizes, allow_patterns=HF_FILES))
    missing = _missing(wanted)
    if missing:
        raise UserError(
            f"{name}: the model on the Hugging Face hub has no {missing}, which kqv needs (a GPT-2 checkpoint "
            "in safetensors)"
        )
    size = sum(sizes[f] or 0 for f in wanted)
    print(f"kqv: downloading {name} from the Hugging Face hub into {cache} ({len(wanted)} files, {_megabytes(size)})",
          file=sys.stderr, flush=True)  # fmt: skip
    return _download(name, cache)  # what is wrong inside the files, kqv.models.hf_folder says


def _cached(name: str) -> Path | None:
    try:
        return Path(snapshot_download(name, allow_patterns=HF_FILES, local_files_only=True))
    except LocalEntryNotFoundError:  # not cached, or known (from the cached file list) to be partly cached
        return None


def _hub_files(name: str, cache: str) -> dict[str, int | None]:
    """The repo's files and their sizes in bytes, from the hub (one request); every failure one UserError."""
    try:
        info = HfApi().model_info(name, files_metadata=True)
    except GatedRepoError:
        raise UserError(
            f"{name}: a gated model on the Hugging Face hub; accept its terms at https://huggingface.co/{name} "
            "and log in with `hf auth login`"
        ) from None
    except RepositoryNotFoundError:
        raise UserError(
            f"{name}: no such folder, and no such model on the Hugging Face hub (a private one needs `hf auth login`)"
        ) from None
    except HfHubHTTPError as exc:
        raise UserError(f"{name}: the Hugging Face hub answered {_first_line(exc)}") from None
    except (httpx2.TransportError, OSError) as exc:  # no network, a proxy, a timeout
        raise UserError(
            f"{name}: no such folder, and not in the Hugging Face cache ({cache}), and the hub cannot be reached "
            f"({type(exc).__name__}); fetch it where there is network: {fetch_command(name)}"
        ) from None
    return {s.rfilename: s.size for s in info.siblings or []}


def _download(name: str, cache: str) -> Path:
    try:
        return Path(snapshot_download(name, allow_patterns=HF_FILES))
    except (HfHubHTTPError, httpx2.TransportError, OSError) as exc:  # the connection lost, the disk full, …
        cause = exc.__cause__ or exc
        raise UserError(
            f"{name}: the download into the Hugging Face cache {cache} failed ({type(cause).__name__}: "
            f"{_first_line(cause)}); run the command again, or fetch it with: {fetch_command(name)}"
        ) from None


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size < 1e8 else f"{size / 1e6:.0f} MB"


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _weights(files) -> bool:
    return bool({"model.safetensors", "model.safetensors.index.json"} & set(files))


def _missing(files) -> str:
    """What of config.json, the safetensors weights and the tokenizer files `files` lack ("" when nothing)."""
    has = set(files)
    missing = [] if "config.json" in has else ["config.json"]
    missing += [] if _weights(has) else ["model.safetensors"]
    if not ("tokenizer.json" in has or {"vocab.json", "merges.txt"} <= has):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    return ", ".join(missing)


def _complete(folder: Path) -> bool:
    return folder.is_dir() and not _missing(p.name for p in folder.iterdir() if p.is_file())


def _refuse_pickles(name: str, files: list[str]) -> None:
    """Weights only as a pickle (in the repo's file list or the cached folder): say why they are not read."""
    if _weights(files):
        return
    pickles = sorted(f for f in files if f.endswith(PICKLES) and "/" not in f)
    if pickles:
        raise UserError(
            f"{name}: the weights on the Hugging Face hub are {', '.join(pickles)} (a pickle, which can run code "
            "when loaded), with no model.safetensors; kqv reads safetensors only: convert it with transformers, "
            "`GPT2LMHeadModel.from_pretrained(NAME).save_pretrained(DIR, safe_serialization=True)`, and give DIR"
        )
