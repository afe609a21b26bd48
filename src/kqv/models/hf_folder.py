"""A Hugging Face GPT-2 folder, read and written: its config.json, weights file and tokenizer files.

    config.json                        GPT-2's settings (kqv.models.hf converts them to a GPTConfig)
    model.safetensors                  the weights, in GPT-2's names (converted key by key by kqv.models.hf)
    tokenizer.json, vocab.json + merges.txt, tokenizer_config.json     the byte-level BPE

`load_hf_gpt2` reads a folder into kqv's GPT (the same logits as `transformers`, fp32), and
`save_hf_gpt2` writes one that `transformers` loads, all or nothing (kqv.fileio.atomic_write_folder).
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save as save_tensors
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from kqv.errors import UserError
from kqv.fileio import atomic_write_bytes, atomic_write_folder
from kqv.models.gpt import GPT
from kqv.models.hf import (
    PREFIX,
    HFInfo,
    HFModel,
    gpt2_problems,
    gpt_config_from_hf,
    hf_config_from_gpt,
    read_hf_tensors,
    to_hf_tensors,
    to_kqv_tensors,
)
from kqv.tokenizer.bpe import GPT2_EOT, BPETokenizer, VocabMerges, vocab_merges_of

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
    return atomic_write_folder(hf_dir, files, lambda d: write_hf_tokenizer(tokenizer, d, model.config.block_size))
