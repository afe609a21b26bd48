"""`kqv gpt …`: train a GPT on text, evaluate it, sample from it (steps 2–3 of the path)."""

import sys

from kqv.commands._common import add_command, add_group, add_json_flag, emit_json, positive_int
from kqv.errors import UserError


def register(groups) -> None:
    sub = add_group(
        groups,
        "gpt",
        "steps 2-3: a decoder-only transformer trained on text and sampled from",
        "  kqv gpt train && kqv gpt sample runs/gpt --prompt 'ROMEO:'\n",
    )

    train = add_command(
        sub,
        "train",
        "train a GPT (default: character-level, on the embedded tiny Shakespeare, ~5 min on 2 cores)",
        "  kqv gpt train                                     # the main job\n"
        "  kqv gpt train --preset nanogpt-cpu --out runs/nano --json\n"
        "  kqv gpt train --data my-texts/ --set n_layer=6 --set tokenizer=bpe --set bpe_vocab_size=1024\n"
        "  kqv gpt train --resume runs/gpt                   # continue a stopped run exactly\n",
        run_train,
    )
    train.add_argument("--preset", default="default", help="a shipped preset (kqv/presets/*.toml); default: default")
    train.add_argument("--data", help="a UTF-8 text file or a folder of .txt files (default: tiny Shakespeare)")
    train.add_argument("--out", help="run directory (default: runs/gpt, or runs/gpt-2, … if that holds a run)")
    train.add_argument("--max-iters", type=positive_int, help="optimiser steps (overrides the preset)")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. n_layer=6, train.lr=3e-4, tokenizer=bpe (repeatable)",
    )  # fmt: skip
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last state")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    train.add_argument("--compile", action="store_true", help="torch.compile the model (worth it on GPUs)")
    train.add_argument("--stop-at", type=positive_int, help=argparse_hidden())
    add_json_flag(train)

    sample = add_command(
        sub,
        "sample",
        "write new text with a trained GPT, streamed as it is generated",
        "  kqv gpt sample runs/gpt --prompt 'ROMEO:' --tokens 500 --temperature 0.8 --top-k 200 --seed 1\n"
        "  kqv gpt sample runs/gpt --temperature 0      # greedy\n",
        run_sample,
    )
    sample.add_argument("run", help="a run directory written by `kqv gpt train`")
    sample.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    sample.add_argument("--tokens", type=positive_int, default=500, help="how many new tokens (default 500)")
    sample.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    sample.add_argument("--top-k", type=positive_int, help="keep only the k most likely tokens")
    sample.add_argument("--top-p", type=float, help="keep the most likely tokens up to probability p")
    sample.add_argument("--seed", type=int, default=1)
    sample.add_argument("--no-cache", action="store_true", help="recompute every position each step (slow)")
    sample.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    add_json_flag(sample)

    evaluate = add_command(
        sub,
        "eval",
        "loss (nats per token) and perplexity of a run on a validation split",
        "  kqv gpt eval runs/gpt\n  kqv gpt eval runs/gpt --data other.txt --json\n",
        run_eval,
    )
    evaluate.add_argument("run", help="a run directory written by `kqv gpt train`")
    evaluate.add_argument("--data", help="score the last 10%% of this text instead of the run's own corpus")
    evaluate.add_argument(
        "--batches", type=positive_int, help="score this many random batches of 16 (default: every validation token)"
    )
    add_json_flag(evaluate)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS  # --stop-at N: stop after step N as if killed (for tests of --resume)


def run_train(args) -> None:
    from kqv.train.gpt_run import train_gpt

    result, run_dir, summary = train_gpt(
        preset=args.preset,
        data=args.data,
        out=args.out,
        max_iters=args.max_iters,
        overrides=args.overrides,
        resume=args.resume,
        device=args.device,
        compile_model=args.compile,
        stop_at=args.stop_at,
    )
    print(
        f"done: {summary['steps']} steps, best val loss {summary['best_val_loss']:.4f}, "
        f"{summary['tokens_per_second']:,.0f} tok/s, {summary['wall_seconds']:.0f} s wall; run in {run_dir}"
    )
    print(f"sample from it: kqv gpt sample {run_dir} --prompt 'ROMEO:'")
    if args.json:
        emit_json({"command": "gpt train", **summary, "log": result.log})


def run_sample(args) -> None:
    import time

    from kqv.generate.sampling import generate
    from kqv.train.gpt_run import load_run
    from kqv.train.run_dir import pick_device

    if args.temperature < 0:
        raise UserError(f"--temperature must be ≥ 0, got {args.temperature}")
    if args.top_p is not None and not 0 <= args.top_p <= 1:
        raise UserError(f"--top-p must be in [0, 1], got {args.top_p}")
    run = load_run(args.run, pick_device(args.device))
    prompt = run.tokenizer.encode(args.prompt)
    if not prompt:
        raise UserError("--prompt is empty; give at least one character")
    stream = not args.json
    if stream:
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
    new_ids: list[int] = []
    shown = ""
    started = time.perf_counter()
    for token in generate(run.model, prompt, args.tokens, args.temperature, args.top_k, args.top_p, args.seed,
                          use_cache=not args.no_cache):  # fmt: skip
        new_ids.append(token)
        if stream:  # decode the whole tail so multi-byte BPE pieces print once complete
            text = run.tokenizer.decode(new_ids)
            if not text.endswith("\ufffd"):
                sys.stdout.write(text[len(shown) :])
                sys.stdout.flush()
                shown = text
    seconds = time.perf_counter() - started
    text = run.tokenizer.decode(new_ids)
    if stream:
        sys.stdout.write(text[len(shown) :] + "\n")
    else:
        emit_json(
            {
                "command": "gpt sample",
                "run": args.run,
                "prompt": args.prompt,
                "text": text,
                "tokens": len(new_ids),
                "tokens_per_second": len(new_ids) / seconds,
            }
        )


def run_eval(args) -> None:
    from kqv.train.gpt_run import evaluate_run, load_run

    run = load_run(args.run)
    result = evaluate_run(run, args.data, n_batches=args.batches)
    print(f"{args.run}: loss {result['loss']:.4f} nats/token, perplexity {result['perplexity']:.3f} "
          f"over {result['tokens']:,} tokens")  # fmt: skip
    if args.json:
        emit_json({"command": "gpt eval", "run": args.run, **result})
