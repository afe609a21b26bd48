"""A translation training run from start to finish, loading it back, and scoring it with BLEU.

`train_translation` reads the parallel corpus (default: the embedded English–Spanish
verses), splits it (kqv.data.parallel), trains one BPE vocabulary on both sides of the
training pairs, and hands the model and a token-budget batcher to the shared `Trainer`
(the same loop, checkpoints and resume as the GPT). The run directory also keeps the
held-out pairs it was split with (valid.tsv, test.tsv), so `kqv translate eval` scores
exactly the pairs the model never saw.
"""

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kqv import __version__
from kqv.config import (
    ConfigError,
    TrainConfig,
    TransformerConfig,
    apply_overrides,
    from_dict,
    load_preset,
    to_dict,
)
from kqv.errors import UserError
from kqv.fileio import atomic_write_bytes, sha256_file
from kqv.models.transformer import Transformer
from kqv.train.checkpoint import load_model_tensors, read_safetensors
from kqv.train.loop import Trainer, TrainResult
from kqv.train.memory import check_transformer_loading, check_transformer_training
from kqv.train.run_dir import (
    claim_new,
    claim_resume,
    config_sha256,
    holding,
    pick_device,
    read_config,
    run_status,
    saved_configs,
    verify_recorded,
)

DEFAULT_PRESET = "small"
PRESET_FAMILY = "translate"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2: TransformerConfig's pad_id, bos_id, eos_id
N_TRAIN_EVAL = 500  # training pairs scored at each evaluation, beside the validation pairs


@dataclass
class DataSpec:
    """Where the pairs come from: the embedded corpus, a TSV, or two line-aligned files."""

    tsv: str | None = None
    src_col: int = 1
    tgt_col: int = 2
    src_file: str | None = None
    tgt_file: str | None = None
    reverse: bool = False

    def describe(self) -> str:
        if self.src_file:
            return f"{self.src_file} ↔ {self.tgt_file}" + (" (reversed)" if self.reverse else "")
        if self.tsv:
            return f"{self.tsv} columns {self.src_col}→{self.tgt_col}" + (" (reversed)" if self.reverse else "")
        return "embedded English→Spanish verses" + (" (reversed: Spanish→English)" if self.reverse else "")

    def read(self):
        from kqv.data.parallel import default_corpus_path, read_aligned, read_tsv

        if (self.src_file is None) != (self.tgt_file is None):
            raise UserError("--src-file and --tgt-file go together: give both line-aligned files")
        if self.src_file and self.tsv:
            raise UserError("give either --data PATH.tsv or --src-file/--tgt-file, not both")
        if self.src_file:
            pairs = read_aligned(self.src_file, self.tgt_file)
            return [(t, s) for s, t in pairs] if self.reverse else pairs
        if self.tsv:
            return read_tsv(self.tsv, self.src_col, self.tgt_col, reverse=self.reverse)
        return read_tsv(default_corpus_path(), 2, 3, reverse=self.reverse, header=True)

    def to_dict(self) -> dict:
        resolve = lambda p: str(Path(p).resolve()) if p else None  # noqa: E731
        return {
            "tsv": resolve(self.tsv),
            "src_col": self.src_col,
            "tgt_col": self.tgt_col,
            "src_file": resolve(self.src_file),
            "tgt_file": resolve(self.tgt_file),
            "reverse": self.reverse,
        }


@dataclass
class TranslationRun:
    model: Transformer
    tokenizer: object
    model_config: TransformerConfig
    train_config: TrainConfig
    info: dict
    run_dir: Path


def resolve_configs(preset: str, overrides: list[str]) -> tuple[TransformerConfig, TrainConfig]:
    """-> (model config with the vocabulary size to aim for, train config). Errors are UserErrors."""
    try:
        tables = apply_overrides(load_preset(preset, PRESET_FAMILY), overrides, TransformerConfig)
        train_cfg = from_dict(TrainConfig, tables["train"], "train config")
        model_cfg = from_dict(TransformerConfig, tables["model"], "model config")
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    return model_cfg, train_cfg


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> None:
    atomic_write_bytes(path, "".join(f"{s}\t{t}\n" for s, t in pairs).encode())


def read_pairs(path: Path) -> list[tuple[str, str]]:
    from kqv.data.parallel import read_tsv

    return read_tsv(path, 1, 2)


def encode_pairs(tokenizer, pairs, max_len: int) -> tuple[list[tuple[list[int], list[int]]], int]:
    """-> (examples, how many were dropped as longer than max_len − 1 tokens on either side)."""
    src = tokenizer.encode_batch([s for s, _ in pairs])
    tgt = tokenizer.encode_batch([t for _, t in pairs])
    examples = [(s, t) for s, t in zip(src, tgt, strict=True) if len(s) < max_len and len(t) < max_len]
    return examples, len(pairs) - len(examples)


def pick_amp(device: str, precision: str) -> torch.dtype | None:
    """bf16 autocast where it pays: CUDA with bf16, or a CPU with AVX-512 BF16 (about 1.7× here)."""
    if precision == "fp32":
        return None
    supported = (
        torch.cuda.is_bf16_supported()
        if device == "cuda"
        else device == "cpu" and bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    )
    if precision == "bf16" and not supported:
        raise UserError(f"--precision bf16: {device} here has no fast bf16 support; use --precision fp32 or auto")
    return torch.bfloat16 if supported else None


def train_translation(
    preset: str = DEFAULT_PRESET,
    data: DataSpec | None = None,
    out: str | None = None,
    max_iters: int | None = None,
    overrides: list[str] | None = None,
    resume: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    stop_at: int | None = None,
    say=print,
) -> tuple[TrainResult, Path, dict]:
    """Train (or with `resume`, continue) a translation model; -> (result, run directory, summary for --json).

    The run directory is locked for the whole call, and a failed start leaves no half-made run
    (see kqv.train.gpt_run.train_gpt, which behaves the same)."""
    started = time.perf_counter()
    with holding([]) as claims:
        return _train_translation(
            preset,
            data,
            out,
            max_iters,
            overrides,
            resume,
            pick_device(device),
            precision,
            stop_at,
            say,
            started,
            claims,
        )


def _train_translation(
    preset, data, out, max_iters, overrides, resume, device, precision, stop_at, say, started, claims
):
    from kqv.data.batching import TokenBudgetBatcher, fixed_batches
    from kqv.data.parallel import split_pairs
    from kqv.tokenizer import load_tokenizer, save_tokenizer
    from kqv.tokenizer.bpe import BPETokenizer

    has_state = False
    if resume is not None:
        if overrides or max_iters or (data is not None and data != DataSpec()):
            raise UserError("--resume continues a run with its own settings; drop --set/--data/--steps")
        claim, info, has_state = claim_resume(resume, "translation", ("valid.tsv", "test.tsv"))
        claims.append(claim)
        run_dir = Path(resume)
        model_cfg, train_cfg = saved_configs(run_dir, info, TransformerConfig)
        check_transformer_training(model_cfg, train_cfg, device)
        verify_recorded(run_dir, info)
        data = DataSpec(**info["data"]["spec"])
        splits = split_pairs(data.read(), seed=info["data"]["split_seed"])
        tokenizer = load_tokenizer(run_dir / "tokenizer.json")
        if tokenizer.fingerprint() != info["tokenizer"]["fingerprint"]:
            raise UserError(f"{run_dir}/tokenizer.json is not the tokenizer this run was started with")
        amp = pick_amp(device, info.get("precision", precision))
        if not has_state:
            say(f"{run_dir}: its start was stopped before the first checkpoint; starting again from step 0")
    else:
        data = data or DataSpec()
        overrides = list(overrides or [])
        if max_iters is not None:
            overrides.append(f"train.max_iters={max_iters}")
        wanted, train_cfg = resolve_configs(preset, overrides)
        if wanted.vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
            raise UserError(f"vocab_size {wanted.vocab_size} is too small: byte-level BPE needs at least 260")
        check_transformer_training(wanted, train_cfg, device)
        amp = pick_amp(device, precision)
        pairs = data.read()
        claim = claim_new(out, "translate")
        claims.append(claim)
        run_dir = claim.path
        if claim.took_over:
            say(f"{run_dir}: an earlier start there stopped before its first checkpoint; starting afresh")
        splits = split_pairs(pairs, seed=0)
        say(f"data: {data.describe()}: {splits.description}")
        texts = [s for s, _ in splits.train] + [t for _, t in splits.train]
        tokenizer = BPETokenizer.train(texts, wanted.vocab_size, SPECIAL_TOKENS)
        try:  # a small corpus may give fewer tokens than asked for
            model_cfg = dataclasses.replace(wanted, vocab_size=tokenizer.vocab_size)
        except ConfigError as exc:
            raise UserError(str(exc)) from None
    ids = [tokenizer.token_id(t) for t in SPECIAL_TOKENS]
    if ids != [model_cfg.pad_id, model_cfg.bos_id, model_cfg.eos_id]:
        raise UserError(f"{run_dir}/tokenizer.json: special tokens {SPECIAL_TOKENS} have ids {ids}, not 0, 1, 2")

    train_examples, dropped = encode_pairs(tokenizer, splits.train, model_cfg.max_len)
    valid_examples, _ = encode_pairs(tokenizer, splits.valid, model_cfg.max_len)
    specials = (model_cfg.pad_id, model_cfg.bos_id, model_cfg.eos_id)
    batcher = TokenBudgetBatcher(train_examples, train_cfg.batch_tokens, train_cfg.seed, *specials)
    sample = torch.randperm(len(train_examples), generator=torch.Generator().manual_seed(train_cfg.seed))
    train_sample = [train_examples[i] for i in sample[:N_TRAIN_EVAL].tolist()]
    eval_sets = {
        "train": [b for _, b in fixed_batches(train_sample, train_cfg.batch_tokens, *specials)],
        "val": [b for _, b in fixed_batches(valid_examples, train_cfg.batch_tokens, *specials)],
    }
    if resume is None:
        write_pairs(run_dir / "valid.tsv", splits.valid)
        write_pairs(run_dir / "test.tsv", splits.test)
        save_tokenizer(tokenizer, run_dir / "tokenizer.json")
        info = {
            "kqv_version": __version__,
            "kind": "translation",
            "preset": preset,
            "model": to_dict(model_cfg),
            "train": to_dict(train_cfg),
            "precision": "bf16" if amp is not None else "fp32",
            "data": {
                "spec": data.to_dict(),
                "source": data.describe(),
                "split_seed": 0,
                "split": splits.description,
                "train_pairs": len(train_examples),
                "dropped_too_long": dropped,
            },
            "tokenizer": {"kind": "bpe", "fingerprint": tokenizer.fingerprint()},
            "files": {name: sha256_file(run_dir / name) for name in ("valid.tsv", "test.tsv")},
            "checksums": "sha256",  # every tensor file carries its sha256 and config.json's
        }
        atomic_write_bytes(run_dir / "config.json", (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode())
    stamp = {"config_sha256": config_sha256(run_dir)}

    torch.manual_seed(train_cfg.seed)
    model = Transformer(model_cfg).to(device)
    require = info.get("checksums") == "sha256"
    trainer = Trainer(model, train_cfg, batcher, eval_sets, run_dir, device, amp, None, say, stamp, require)
    if has_state:
        trainer.restore()
        say(f"resuming {run_dir} at step {trainer.step} of {train_cfg.max_iters}")
    else:
        c = model_cfg
        say(
            f"model: {c.n_layer_enc}+{c.n_layer_dec} layers, {c.n_head} heads, width {c.d_model}, "
            f"{'pre' if c.norm_first else 'post'}-LN, shared vocab {c.vocab_size}: {model.num_parameters():,} "
            f"parameters; {train_cfg.max_iters} steps of ≤ {train_cfg.batch_tokens} tokens on {device}"
            + (" (bf16 autocast)" if amp is not None else "")
            + (f"; {dropped} training pairs longer than {c.max_len - 1} tokens left out" if dropped else "")
        )
    result = trainer.fit(stop_at=stop_at)
    plot = None
    if result.log:
        from kqv.viz.curves import plot_loss_curve

        plot = plot_loss_curve(result.log, run_dir / "loss.png", f"{run_dir.name}: {data.describe()}")
    summary = {
        "run_dir": str(run_dir),
        "steps": result.steps,
        "best_val_loss": result.best_val_loss,
        "best_val_perplexity": math.exp(result.best_val_loss) if math.isfinite(result.best_val_loss) else None,
        "final_val_loss": result.final_val_loss,
        "final_train_loss": result.final_train_loss,
        "tokens_per_second": result.tokens_per_second,
        "train_seconds": result.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "parameters": model.num_parameters(),
        "epochs": batcher.epoch + batcher.position / max(1, batcher.batches_in_epoch),
        "device": device,
        "plot": str(plot) if plot else None,
    }
    return result, run_dir, summary


def load_translation_run(run_dir: str | Path, device: str = "cpu") -> TranslationRun:
    """A translation run's model with its best weights, and its tokenizer; every file is checked."""
    from kqv.tokenizer import load_tokenizer

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory; train one with `kqv translate train --out {run_dir}`")
    info = read_config(run_dir, "translation")
    model_cfg, train_cfg = saved_configs(run_dir, info, TransformerConfig)
    check_transformer_loading(model_cfg, str(run_dir), device)
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    if tokenizer.fingerprint() != info["tokenizer"]["fingerprint"]:
        raise UserError(f"{run_dir}/tokenizer.json is not the tokenizer this model was trained with")
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise UserError(f"{run_dir}: tokenizer has {tokenizer.vocab_size} tokens, the model {model_cfg.vocab_size}")
    weights = run_dir / "model.safetensors"
    if not weights.exists() and run_status(run_dir) == "started":
        raise UserError(
            f"{run_dir}: no weights yet (its start was stopped); train it: kqv translate train --resume {run_dir}"
        )
    tensors, meta = read_safetensors(weights, require_checksum=info.get("checksums") == "sha256")
    verify_recorded(run_dir, info, meta)
    model = Transformer(model_cfg)
    load_model_tensors(model, tensors, str(weights))
    return TranslationRun(model.to(device).eval(), tokenizer, model_cfg, train_cfg, info, run_dir)


def translate(
    run: TranslationRun,
    sentences: list[str],
    beam: int = 4,
    alpha: float = 0.6,
    batch_tokens: int = 4096,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
) -> list[str]:
    """Translate `sentences` in batches of similar length; the output keeps their order."""
    from kqv.data.batching import fixed_batches
    from kqv.generate.beam import beam_search, greedy_decode

    c = run.model_config
    device = next(run.model.parameters()).device
    encoded = [ids[: c.max_len - 1] for ids in run.tokenizer.encode_batch(sentences)]  # (eos takes one more)
    examples = [(ids, []) for ids in encoded]
    out: list[str] = [""] * len(sentences)
    for indices, batch in fixed_batches(examples, batch_tokens, c.pad_id, c.bos_id, c.eos_id):
        src = batch.src.to(device)
        if beam == 1:
            hyps = greedy_decode(run.model, src, max_len_a, max_len_b)
        else:
            hyps = beam_search(run.model, src, beam, alpha, max_len_a, max_len_b)
        for i, hyp in zip(indices, hyps, strict=True):
            out[i] = run.tokenizer.decode(hyp.tokens)
    return out


@torch.no_grad()
def perplexity(run: TranslationRun, pairs: list[tuple[str, str]], batch_tokens: int = 4096) -> tuple[float, int]:
    """-> (mean plain NLL per target token, eos included; token count) under teacher forcing."""
    from kqv.data.batching import fixed_batches

    c = run.model_config
    device = next(run.model.parameters()).device
    examples, _ = encode_pairs(run.tokenizer, pairs, c.max_len)
    total, count = 0.0, 0
    for _, batch in fixed_batches(examples, batch_tokens, c.pad_id, c.bos_id, c.eos_id):
        out = run.model(*(t.to(device) for t in batch[:3]))
        total += out.nll.item() * out.n_tokens
        count += out.n_tokens
    return total / max(count, 1), count


def evaluate_translation(
    run: TranslationRun,
    pairs: list[tuple[str, str]] | None = None,
    beam: int = 4,
    alpha: float = 0.6,
    n_examples: int = 5,
) -> dict:
    """BLEU and chrF (sacrebleu, with their signatures) and perplexity on the run's test pairs (or `pairs`)."""
    import sacrebleu

    if pairs is None:
        pairs = read_pairs(run.run_dir / "test.tsv")
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    started = time.perf_counter()
    hypotheses = translate(run, sources, beam=beam, alpha=alpha)
    seconds = time.perf_counter() - started
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    nll, n_tokens = perplexity(run, pairs)
    return {
        "pairs": len(pairs),
        "beam": beam,
        "alpha": alpha,
        "bleu": bleu_score.score,
        "bleu_signature": str(bleu.get_signature()),
        "bleu_detail": str(bleu_score),
        "chrf": chrf_score.score,
        "chrf_signature": str(chrf.get_signature()),
        "nll": nll,
        "perplexity": math.exp(nll),
        "target_tokens": n_tokens,
        "decode_seconds": seconds,
        "examples": [
            {"source": s, "reference": r, "translation": h}
            for s, r, h in list(zip(sources, references, hypotheses, strict=True))[:n_examples]
        ],
        "hypotheses": hypotheses,
    }
