"""A translation training run from start to finish.

`train_translation` reads the parallel corpus (default: the embedded English–Spanish
verses), splits it (kqv.data.parallel), trains one BPE vocabulary on both sides of the
training pairs, and hands the model and a token-budget batcher to the shared `Trainer`
(the same loop, checkpoints and resume as the GPT). The run directory also keeps the
held-out pairs it was split with (valid.tsv, test.tsv), so `kqv translate eval` scores
exactly the pairs the model never saw. Loading a run back is kqv.families.translation;
translating with it kqv.generate.translate; scoring it kqv.evaluate.
"""

import dataclasses
import math
import shlex
import time
from pathlib import Path

import torch

from kqv import __version__
from kqv.config import ConfigError, TrainConfig, TransformerConfig, apply_overrides, from_dict, load_preset, to_dict
from kqv.data.batching import TokenBudgetBatcher, fixed_batches
from kqv.data.parallel import DataSpec, encode_pairs, split_pairs, write_pairs
from kqv.device import amp_dtype, pick_device
from kqv.errors import UserError
from kqv.families.translation import check_special_ids
from kqv.fileio import sha256_file
from kqv.models.transformer import SPECIAL_TOKENS, Transformer
from kqv.runs.config_file import checkpoint_checks, saved_configs, verify_files, write_config
from kqv.runs.directory import claim_new, claim_resume, holding
from kqv.runs.load import run_tokenizer
from kqv.runs.memory import check_transformer_training
from kqv.tokenizer import save_tokenizer
from kqv.tokenizer.bpe import BPETokenizer
from kqv.train.loop import Trainer, TrainResult
from kqv.viz.curves import plot_loss_curve

DEFAULT_PRESET = "small"
PRESET_FAMILY = "translation"
N_TRAIN_EVAL = 500  # training pairs scored at each evaluation, beside the validation pairs


def resolve_configs(preset: str, overrides: list[str]) -> tuple[TransformerConfig, TrainConfig]:
    """-> (model config with the vocabulary size to aim for, train config). Errors are UserErrors."""
    try:
        tables = apply_overrides(load_preset(preset, PRESET_FAMILY), overrides, TransformerConfig)
        train_cfg = from_dict(TrainConfig, tables["train"], "train config")
        model_cfg = from_dict(TransformerConfig, tables["model"], "model config")
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    return model_cfg, train_cfg


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
    has_state = False
    if resume is not None:
        if overrides or max_iters or (data is not None and data != DataSpec()):
            raise UserError("--resume continues a run with its own settings; drop --set/--data/--steps")
        claim, info, has_state = claim_resume(resume, "translation", ("valid.tsv", "test.tsv"))
        claims.append(claim)
        run_dir = Path(resume)
        model_cfg, train_cfg = saved_configs(run_dir, info, TransformerConfig)
        check_transformer_training(model_cfg, train_cfg, device)
        verify_files(run_dir, info)
        data = DataSpec(**info["data"]["spec"])
        splits = split_pairs(data.read(), seed=info["data"]["split_seed"])
        tokenizer = run_tokenizer(run_dir, info)
        amp = amp_dtype(device, info.get("precision", precision), bf16_on_cpu=True)
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
        amp = amp_dtype(device, precision, bf16_on_cpu=True)  # bf16 on an AVX-512 BF16 CPU: 1.7×
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
    check_special_ids(tokenizer, model_cfg, f"{run_dir}/tokenizer.json")

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
        write_config(run_dir, info)

    torch.manual_seed(train_cfg.seed)
    model = Transformer(model_cfg).to(device)
    checks = checkpoint_checks(run_dir, info)
    again = f"kqv translate train --resume {shlex.quote(str(run_dir))}"
    trainer = Trainer(
        model, train_cfg, batcher, eval_sets, run_dir, device, amp, None, say, **checks, resume_command=again
    )
    if has_state:
        trainer.restore()
        say(f"resuming {run_dir} at step {trainer.step} of {train_cfg.max_iters}")
    else:
        c = model_cfg
        say(
            f"model: {c.n_layer_enc}+{c.n_layer_dec} layers, {c.n_head} heads, width {c.n_embd}, "
            f"{'pre' if c.norm_first else 'post'}-LN, positions {c.pos_encoding}, shared vocab {c.vocab_size}: "
            f"{model.num_parameters():,} "
            f"parameters; {train_cfg.max_iters} steps of ≤ {train_cfg.batch_tokens} tokens on {device}"
            + (" (bf16 autocast)" if amp is not None else "")
            + (f"; {dropped} training pairs longer than {c.max_len - 1} tokens left out" if dropped else "")
        )
    result = trainer.fit(stop_at=stop_at)
    plot = None
    if result.log:
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
