"""A GPT training run from start to finish.

`train_gpt` resolves the config (preset + `--set` overrides), reads the corpus,
trains or loads the tokenizer, caches the token ids under RUN_DIR/data, builds
the model and hands everything to the shared `Trainer`. Loading a finished run back is
kqv.families.gpt (through kqv.runs.load); scoring it, kqv.evaluate.perplexity.
"""

import shlex
import time
from pathlib import Path

import torch

from kqv import __version__
from kqv.config import ConfigError, GPTConfig, TrainConfig, apply_overrides, from_dict, load_preset, to_dict
from kqv.data.text import EMBEDDED_SOURCE, BatchSampler, cached_tokens, fixed_batches, prepare_tokens, read_corpus
from kqv.device import amp_dtype, configure_device, pick_device
from kqv.errors import UserError
from kqv.models.gpt import GPT
from kqv.runs.config_file import checkpoint_checks, saved_configs, write_config
from kqv.runs.directory import claim_new, claim_resume, holding
from kqv.runs.load import run_tokenizer
from kqv.runs.memory import check_gpt_training
from kqv.tokenizer import UnknownTokenError, save_tokenizer, tokenizer_from_dict, train_tokenizer
from kqv.train import distributed
from kqv.train.loop import Trainer, TrainResult
from kqv.viz.curves import plot_loss_curve

DEFAULT_PRESET = "default"


HINT_LENGTH = 20  # the most characters of the prompt the final hint suggests


def sample_prompt(corpus, tokenizer) -> str:
    """A prompt to suggest for sampling a run: 'ROMEO:' for tiny Shakespeare, else the start of the corpus's first
    line that has words — at most HINT_LENGTH characters, cut at a word, only characters the tokenizer encodes."""
    if corpus.source == EMBEDDED_SOURCE:
        return "ROMEO:"

    def known(text: str) -> bool:
        try:
            return bool(text) and tokenizer.decode(tokenizer.encode(text)) == text
        except (UnknownTokenError, ValueError):  # a char tokenizer refuses a character it never saw (UnknownTokenError)
            return False

    for line in corpus.text[:100_000].splitlines():
        words = ["".join(c for c in w if c.isprintable() and known(c)) for w in line.split()]
        prompt = ""
        for word in filter(None, words):
            longer = f"{prompt} {word}" if prompt else word
            if len(longer) > HINT_LENGTH:
                break
            prompt = longer
        if not prompt and any(words):  # one long first word: its start
            prompt = next(w for w in words if w)[:HINT_LENGTH]
        if prompt and known(prompt):
            return prompt
    return next((c for c in corpus.text[:10_000] if c.isprintable() and not c.isspace() and known(c)), "a")


def resolve_configs(preset: str, overrides: list[str], vocab_size: int | None = None) -> tuple[dict, TrainConfig]:
    """-> (model table as a dict, without vocab_size yet, TrainConfig). Errors are UserErrors."""
    for item in overrides:
        if item.partition("=")[0].strip() in ("vocab_size", "model.vocab_size"):
            raise UserError(
                "--set vocab_size: a GPT's vocabulary comes from its tokenizer (char: the corpus's characters; "
                "bpe: --set bpe_vocab_size=N); drop --set vocab_size"
            )
    try:
        tables = apply_overrides(load_preset(preset), overrides)
        train_cfg = from_dict(TrainConfig, tables["train"], "train config")
        model_table = dict(tables["model"])
        model_table.pop("vocab_size", None)  # the tokenizer's size, known once it is trained
        # validate the model table now (vocab_size is known only after tokenising)
        from_dict(GPTConfig, {**model_table, "vocab_size": vocab_size or 1}, "model config")
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    return model_table, train_cfg


def train_gpt(
    preset: str = DEFAULT_PRESET,
    data: str | None = None,
    out: str | None = None,
    max_iters: int | None = None,
    overrides: list[str] | None = None,
    resume: str | None = None,
    device: str = "auto",
    compile_model: bool = False,
    stop_at: int | None = None,
    say=print,
) -> tuple[TrainResult, Path, dict]:
    """Train (or with `resume`, continue) a GPT; -> (result, run directory, summary for --json).

    Launched by torchrun, each process runs this with the others (kqv.train.distributed):
    every rank returns the same result; only rank 0 writes and calls `say`.

    The run directory is locked for the whole call (one writer at a time). A start that fails
    before its first trainer state leaves no half-made run behind; one that is interrupted
    (Ctrl-C, SIGTERM) once its config.json is written can be continued with `resume`.
    """
    started = time.perf_counter()
    with distributed.session(pick_device(device)) as device:
        if not distributed.is_main():
            say = _quiet
        with holding([]) as claims:  # rank 0's hold on the run directory, once it has one
            return _train_gpt(
                preset, data, out, max_iters, overrides, resume, device, compile_model, stop_at, say, started, claims
            )


def _quiet(_: str) -> None:
    pass


def _train_gpt(preset, data, out, max_iters, overrides, resume, device, compile_model, stop_at, say, started, claims):
    main, shard = distributed.is_main(), (distributed.rank(), distributed.world_size())
    has_state = False
    if resume is not None:  # every rank reads the run's files; rank 0 holds the lock
        if overrides or data or max_iters:
            raise UserError("--resume continues a run with its own settings; drop --set/--data/--steps")
        claim, info, has_state = claim_resume(resume, "gpt", (), lock=main)
        claims.extend([claim] if claim else [])
        run_dir = Path(resume)
        model_cfg, train_cfg = saved_configs(run_dir, info, GPTConfig)
        check_gpt_training(model_cfg, train_cfg, device)
        corpus = read_corpus(info["data"]["path"])
        if corpus.sha256 != info["data"]["sha256"]:
            raise UserError(f"--resume {run_dir}: the corpus {corpus.source} has changed since the run started")
        tokenizer = run_tokenizer(run_dir, info)
        distributed.check_batch_size(train_cfg.batch_size)
        if not has_state:
            say(f"{run_dir}: its start was stopped before the first checkpoint; starting again from step 0")
    else:
        overrides = list(overrides or [])
        if max_iters is not None:
            overrides.append(f"train.max_iters={max_iters}")
        model_table, train_cfg = resolve_configs(preset, overrides)
        distributed.check_batch_size(train_cfg.batch_size)
        corpus = read_corpus(data)
        vocab_guess = train_cfg.bpe_vocab_size if train_cfg.tokenizer == "bpe" else len(set(corpus.text))
        check_gpt_training(from_dict(GPTConfig, {**model_table, "vocab_size": vocab_guess}), train_cfg, device)

        trained = []

        def start_run() -> dict:  # rank 0 alone claims the run directory and trains the tokenizer
            claim = claim_new(out, "gpt")
            claims.append(claim)
            if claim.took_over:
                say(f"{claim.path}: an earlier start there stopped before its first checkpoint; starting afresh")
            say(f"corpus: {corpus.source} ({len(corpus.text):,} characters)")
            trained.append(train_tokenizer(train_cfg.tokenizer, corpus.text, train_cfg.bpe_vocab_size))
            return {"run_dir": str(claim.path), "tokenizer": trained[0].to_dict()}

        started_run = distributed.broadcast_from_main(start_run)  # the other ranks get rank 0's choices
        run_dir = Path(started_run["run_dir"])
        tokenizer = trained[0] if trained else tokenizer_from_dict(started_run["tokenizer"])
        try:
            model_cfg = from_dict(GPTConfig, {**model_table, "vocab_size": tokenizer.vocab_size}, "model config")
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        info = {
            "kqv_version": __version__,
            "kind": "gpt",
            "preset": preset,
            "model": to_dict(model_cfg),
            "train": to_dict(train_cfg),
            "data": {
                "path": corpus.source if corpus.source.startswith("embedded:") else str(Path(data).resolve()),
                "source": corpus.source,
                "sha256": corpus.sha256,
            },
            "tokenizer": {"kind": train_cfg.tokenizer, "fingerprint": tokenizer.fingerprint()},
            "checksums": "sha256",  # every tensor file carries its sha256 and config.json's
        }
    T, B = model_cfg.block_size, train_cfg.batch_size

    def load_data():  # rank 0 first: it writes the token cache (and a new run's files); the others read
        if main:
            tokens = prepare_tokens(corpus, tokenizer, run_dir / "data")
        else:  # rank 0's cache, or (on a machine that cannot see it) the same ids encoded here
            tokens = cached_tokens(corpus, tokenizer, run_dir / "data") or prepare_tokens(corpus, tokenizer, None)
        sampler = BatchSampler(tokens.train, T, B, train_cfg.seed, name="training", shard=shard)
        eval_sets = {
            "train": fixed_batches(
                tokens.train, T, B, train_cfg.eval_iters, train_cfg.seed + 1, name="training", shard=shard
            ),
            "val": fixed_batches(
                tokens.val, T, B, train_cfg.eval_iters, train_cfg.seed + 2, name="validation", shard=shard
            ),
        }
        if main and resume is None:  # only once the data is known to be usable
            save_tokenizer(tokenizer, run_dir / "tokenizer.json")
            write_config(run_dir, info)
        return sampler, eval_sets

    sampler, eval_sets = distributed.main_first(load_data)

    torch.manual_seed(train_cfg.seed)  # the same initial weights on every rank
    model = GPT(model_cfg).to(device)
    compiled = torch.compile(model) if compile_model else None
    configure_device(device)
    # what every checkpoint records and a resume checks (rank 0 writes; under torchrun every rank resumes)
    checks = checkpoint_checks(run_dir, info, record=main or resume is not None)
    again = f"kqv gpt train --resume {shlex.quote(str(run_dir))}"
    trainer = Trainer(
        model,
        train_cfg,
        sampler,
        eval_sets,
        run_dir,
        device,
        amp_dtype(device),
        compiled,
        say,
        **checks,
        resume_command=again,
    )
    n = distributed.world_size()
    where = f"{n} processes ({device.split(':')[0]})" if n > 1 else device
    if has_state:
        trainer.restore()
        say(f"resuming {run_dir} at step {trainer.step} of {train_cfg.max_iters} on {where}")
    else:
        say(
            f"model: {model_cfg.n_layer} layers, {model_cfg.n_head} heads, width {model_cfg.n_embd}, "
            f"context {T}, vocab {model_cfg.vocab_size}, score {model_cfg.score}, mask {model_cfg.mask}, "
            f"positions {model_cfg.pos_encoding}: {model.num_parameters():,} parameters; "
            f"{train_cfg.max_iters} steps of {B * train_cfg.grad_accum} × {T} tokens on {where}"
        )
    result = trainer.fit(stop_at=stop_at)
    plot = None
    if result.log and main:
        plot = plot_loss_curve(result.log, run_dir / "loss.png", f"{run_dir.name}: {corpus.source}")
    summary = {
        "run_dir": str(run_dir),
        "steps": result.steps,
        "best_val_loss": result.best_val_loss,
        "final_val_loss": result.final_val_loss,
        "final_train_loss": result.final_train_loss,
        "tokens_per_second": result.tokens_per_second,
        "train_seconds": result.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "parameters": model.num_parameters(),
        "device": device,
        "processes": n,
        "rank": distributed.rank(),
        "plot": str(plot) if plot else None,
        "sample_prompt": sample_prompt(corpus, tokenizer),  # for the hint `kqv gpt sample RUN --prompt …`
        "step_losses": result.step_losses,  # the training loss of each step this call ran
        "step_grad_norms": result.step_grad_norms,  # and its gradient norm before clipping
    }
    return result, run_dir, summary
