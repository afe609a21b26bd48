"""A run's config.json: its one writer, and reading it back checked field by field.

config.json holds what a run is: "kind" ("gpt" or "translation"), the model and train tables,
where its data came from, its tokenizer's fingerprint, the sha256 of the files written before it
(the held-out pairs of a translation run), and "checksums": "sha256" when every tensor file of the
run carries its own digest and config.json's (kqv.runs.weights). It is written once, when a run
starts (or is imported), and never changed: the tensor files record its sha256, so an edited or
damaged config.json is refused (`verify_config`).
"""

import json
import re
from pathlib import Path

from kqv.config import ConfigError, TrainConfig, from_dict
from kqv.errors import UserError
from kqv.fileio import atomic_write_bytes, sha256_file

KINDS = ("gpt", "translation")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def config_bytes(info: dict) -> bytes:
    """config.json as written: indented JSON, non-ASCII text kept as it is, a final newline; the contents are
    checked as a reader would check them."""
    problem = config_problem(info)
    if problem:
        raise ValueError(f"config.json would be refused when read back: {problem}")
    return (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode()


def write_config(run_dir: Path, info: dict) -> Path:
    """The one writer of config.json in a run directory, atomically."""
    return atomic_write_bytes(run_dir / "config.json", config_bytes(info))


def read_config(run_dir: Path, kind: str | None = None) -> dict:
    """config.json, checked field by field: damage or an edit is a UserError naming the file and the field.

    `kind` ("gpt", "translation"): a run of another kind is refused first, naming both kinds."""
    path = run_dir / "config.json"
    if path.is_dir():
        raise UserError(f"{path}: a folder is where this file belongs; move it aside")
    if not path.is_file():
        raise UserError(f"{run_dir}: not a kqv run directory (no config.json)")
    try:
        info = json.loads(path.read_bytes())
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise UserError(f"{path}: damaged or incomplete ({type(exc).__name__}: {exc}); it cannot be loaded") from None
    found = info.get("kind", "gpt") if isinstance(info, dict) else None
    if kind is not None and found in KINDS and found != kind:
        raise UserError(f"{run_dir}: not a {'GPT' if kind == 'gpt' else kind} run (it is a {found} run)")
    problem = config_problem(info)
    if problem:
        raise UserError(f"{path}: damaged or edited: {problem}; it cannot be loaded")
    info.setdefault("kind", "gpt")
    return info


def config_problem(info) -> str | None:
    """What is wrong with a config.json's contents, in a few words, or None. Values are never echoed."""
    if not isinstance(info, dict):
        return "it is not a JSON object"
    for table in ("model", "train"):
        if not isinstance(info.get(table), dict):
            return f'"{table}" is missing or not a table'
    kind = info.get("kind", "gpt")
    if kind not in KINDS:
        return f'"kind" is not one of {", ".join(KINDS)}'
    for key in ("kqv_version", "preset"):
        if info.get(key) is not None and not isinstance(info[key], str):
            return f'"{key}" is not a string'
    tok = info.get("tokenizer")
    if not isinstance(tok, dict) or tok.get("kind") not in ("char", "bpe") or not _is_sha(tok.get("fingerprint")):
        return '"tokenizer" must hold kind (char or bpe) and a sha256 fingerprint'
    if info.get("files") is not None:
        files = info["files"]
        if not isinstance(files, dict) or not all(
            name in ("tokenizer.json", "valid.tsv", "test.tsv") and _is_sha(sha) for name, sha in files.items()
        ):
            return '"files" must map tokenizer.json, valid.tsv, test.tsv to sha256 digests'
    if info.get("checksums") not in (None, "sha256"):
        return '"checksums" must be "sha256"'
    if "imported_from" in info:
        return None if isinstance(info["imported_from"], dict) else '"imported_from" is not a table'
    data = info.get("data")
    if not isinstance(data, dict):
        return '"data" is missing or not a table'
    return DATA_CHECKS[kind](data)


def _corpus_problem(data: dict) -> str | None:
    """A GPT's "data": the corpus it was trained on."""
    if not isinstance(data.get("path"), str) or not data["path"] or not isinstance(data.get("source"), str):
        return '"data" must hold the corpus path and source as strings'
    if not _is_sha(data.get("sha256")):
        return '"data.sha256" is not a sha256 digest'
    return None


def _pairs_problem(data: dict) -> str | None:
    """A translation run's "data": where its sentence pairs came from and how they were split."""
    spec = data.get("spec")
    if not isinstance(spec, dict) or set(spec) != {"tsv", "src_col", "tgt_col", "src_file", "tgt_file", "reverse"}:
        return '"data.spec" must hold tsv, src_col, tgt_col, src_file, tgt_file and reverse'
    if not all(spec[k] is None or (isinstance(spec[k], str) and spec[k]) for k in ("tsv", "src_file", "tgt_file")):
        return '"data.spec" paths must be strings or null'
    if not all(_is_int(spec[k], 1, 1000) for k in ("src_col", "tgt_col")) or not isinstance(spec["reverse"], bool):
        return '"data.spec" columns must be whole numbers 1…1000 and reverse true or false'
    if not _is_int(data.get("split_seed"), 0, 2**63 - 1):
        return '"data.split_seed" is not a whole number ≥ 0'
    return None


DATA_CHECKS = {"gpt": _corpus_problem, "translation": _pairs_problem}  # config.json's "data", by kind


def _is_sha(value) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def _is_int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def config_sha256(run_dir: Path) -> str:
    """sha256 of config.json's bytes, as the tensor files record it."""
    return sha256_file(run_dir / "config.json")


def checksummed(info: dict) -> bool:
    """Whether every tensor file of this run was written with its sha256 (so one without it was changed)."""
    return info.get("checksums") == "sha256"


def verify_files(run_dir: Path, info: dict) -> None:
    """The files config.json recorded (a translation run's held-out pairs) must be unchanged: one line if not."""
    for name, digest in (info.get("files") or {}).items():
        path = run_dir / name
        if path.is_file() and sha256_file(path) != digest:
            raise UserError(f"{path}: damaged or changed since the run started (its sha256 is not the one recorded)")


def verify_config(run_dir: Path, meta: dict, where: str) -> None:
    """config.json must be the one a tensor file `where` recorded (the sha256 in its metadata `meta`)."""
    recorded = meta.get("config_sha256")
    if recorded is not None and recorded != config_sha256(run_dir):
        raise UserError(
            f"{run_dir}/config.json: damaged or changed since {where} was written (its sha256 is not the one recorded)"
        )


def checkpoint_checks(run_dir: Path, info: dict, record: bool = True) -> dict:
    """What a Trainer writes into every checkpoint of this run and checks on a resume, as its keyword arguments:
    config.json's sha256 (`record=False` where config.json cannot be read, as on a rank that does not write),
    whether a state without its own sha256 is refused, and the check that config.json is still that one."""
    return {
        "stamp": {"config_sha256": config_sha256(run_dir)} if record else {},
        "require_checksum": checksummed(info),
        "verify": lambda meta: verify_config(run_dir, meta, "trainer.safetensors"),
    }


def saved_configs(run_dir: Path, info: dict, model_cls: type):
    """(model config, TrainConfig) from a run's config.json; damage is a UserError naming the file."""
    try:
        return (
            from_dict(model_cls, info["model"], f"{run_dir}/config.json model"),
            from_dict(TrainConfig, info["train"], f"{run_dir}/config.json train"),
        )
    except ConfigError as exc:
        raise UserError(str(exc)) from None
