"""`kqv gpt …`: train a GPT on text, evaluate it, sample from it (steps 2–3 of the path)."""

import shlex
import sys

from kqv.commands._common import add_command, add_group, add_json_flag, add_steps_flag, emit_json, positive_int
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
        "  kqv gpt train --resume runs/gpt                   # continue a stopped run exactly\n"
        "  torchrun --standalone --nproc_per_node=2 -m kqv gpt train --out runs/ddp   # 2 processes (GPUs or CPU)\n",
        run_train,
    )
    train.add_argument("--preset", default="default", help="a shipped preset (kqv/presets/*.toml); default: default")
    train.add_argument("--data", help="a UTF-8 text file or a folder of .txt files (default: tiny Shakespeare)")
    train.add_argument("--out", help="run directory (default: runs/gpt, or runs/gpt-2, … if that holds a run)")
    add_steps_flag(train)
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
        "  kqv gpt sample runs/gpt --temperature 0      # greedy\n"
        "  kqv gpt sample runs/gpt --tokens 2000 --window hop   # past the context, faster, coarser\n"
        "  kqv gpt sample --from-hf ~/gpt2 --prompt 'Hello, I am' --tokens 40   # a Hugging Face GPT-2 folder\n",
        run_sample,
    )
    add_model_source(sample)
    sample.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    sample.add_argument("--tokens", type=positive_int, default=500, help="how many new tokens (default 500)")
    # checked in run_sample (kqv.generate.sampling.check_sampling_values), so a bad value is one `kqv: error:` line
    sample.add_argument(
        "--temperature", type=float, default=0.8,
        help="a finite number ≥ 0; 0 = greedy, and below 1e-4 counts as 0: greedy (default 0.8)",
    )  # fmt: skip
    sample.add_argument("--top-k", type=int, help="keep only the k most likely tokens (k ≥ 1)")
    sample.add_argument("--top-p", type=float, help="keep the most likely tokens up to probability p (0 ≤ p ≤ 1)")
    sample.add_argument("--seed", type=int, default=1, help="a whole number 0 … 2^64 − 1 (default 1)")
    sample.add_argument(
        "--window", choices=["slide", "hop"], default="slide",
        help="past the context (block_size tokens): slide = read exactly the last block_size tokens (default; "
        "a full pass per token once the text overflows); hop = drop the oldest half window at a time "
        "(faster, but just after a hop the model reads only half a window)",
    )  # fmt: skip
    sample.add_argument(
        "--no-cache", action="store_true",
        help="recompute every position each step (slow; a mask=none model always does, as a cache is not exact)",
    )  # fmt: skip
    sample.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    add_json_flag(sample)

    evaluate = add_command(
        sub,
        "eval",
        "loss (nats per token) and perplexity of a run on a validation split",
        "  kqv gpt eval runs/gpt\n  kqv gpt eval runs/gpt --data other.txt --json\n"
        "  kqv gpt eval --from-hf ~/gpt2 --data my.txt  # a Hugging Face GPT-2 folder\n",
        run_eval,
    )
    add_model_source(evaluate)
    evaluate.add_argument(
        "--data",
        help="score the last 10%% of this text instead of the run's own corpus "
        "(a model without one, imported from Hugging Face, is scored on the embedded tiny Shakespeare)",
    )
    evaluate.add_argument(
        "--batches", type=positive_int, help="score this many random batches of 16 (default: every validation token)"
    )
    add_json_flag(evaluate)

    import_hf = add_command(
        sub,
        "import-hf",
        "turn a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer) into a kqv run directory",
        "  kqv gpt import-hf ~/gpt2 runs/gpt2 && kqv gpt sample runs/gpt2 --prompt 'Hello, I am' --tokens 40\n",
        run_import_hf,
    )
    import_hf.add_argument(
        "hf_dir", metavar="NAME_OR_DIR",
        help="a GPT-2 folder as transformers' save_pretrained writes it, or a hub name (gpt2) read from the Hugging "
        "Face cache",
    )  # fmt: skip
    import_hf.add_argument("run_dir", metavar="RUN_DIR", help="the new run directory (must not exist, or be empty)")
    add_json_flag(import_hf)

    export_hf = add_command(
        sub,
        "export-hf",
        "write a GPT-2-compatible kqv run as a Hugging Face GPT-2 folder that transformers loads",
        "  kqv gpt export-hf runs/gpt2 out/gpt2-hf\n"
        "  # GPT-2-compatible: --set bias=true --set activation=gelu_tanh --set tokenizer=bpe at training time\n",
        run_export_hf,
    )
    export_hf.add_argument("run_dir", metavar="RUN_DIR", help="a kqv run directory")
    export_hf.add_argument("hf_dir", metavar="HF_DIR", help="the new folder (must not exist, or be empty)")
    add_json_flag(export_hf)


def add_model_source(parser) -> None:
    """RUN, or --from-hf NAME_OR_DIR: exactly one."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("run", nargs="?", help="a run directory written by `kqv gpt train` or `kqv gpt import-hf`")
    source.add_argument(
        "--from-hf",
        metavar="NAME_OR_DIR",
        help="a Hugging Face GPT-2 folder, or a hub model name (gpt2, openai-community/gpt2: "
        "read from the Hugging Face cache, downloaded into it if absent unless HF_HUB_OFFLINE=1), instead of a run",
    )


def load_model_source(args, device: str = "cpu"):
    from kqv.families.gpt import GPT_FAMILY
    from kqv.runs.imported import load_hf_run

    if args.from_hf is not None:
        return load_hf_run(args.from_hf, device)
    return GPT_FAMILY.load(args.run, device)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS  # --stop-at N: stop after step N as if killed (for tests of --resume)


def run_train(args) -> None:
    from kqv.train.gpt_run import train_gpt

    result, run_dir, summary = train_gpt(
        preset=args.preset,
        data=args.data,
        out=args.out,
        max_iters=args.steps,
        overrides=args.overrides,
        resume=args.resume,
        device=args.device,
        compile_model=args.compile,
        stop_at=args.stop_at,
    )
    if summary["rank"] != 0:  # under torchrun only rank 0 reports
        return
    print(
        f"done: {summary['steps']} steps, best val loss {summary['best_val_loss']:.4f}, "
        f"{summary['tokens_per_second']:,.0f} tok/s, {summary['wall_seconds']:.0f} s wall; run in {run_dir}"
    )
    prompt = summary["sample_prompt"]
    quoted = "'" + prompt.replace("'", "'\"'\"'") + "'"  # as shlex.quote, but always quoted: --prompt 'ROMEO:'
    print(f"sample from it: kqv gpt sample {shlex.quote(str(run_dir))} --prompt {quoted}")
    if args.json:
        emit_json({"command": "gpt train", **summary, "log": result.log})


def run_sample(args) -> None:
    import time

    from kqv.device import pick_device
    from kqv.generate.sampling import check_sampling_values, decodes_with_cache, generate

    try:
        check_sampling_values(args.temperature, args.top_k, args.top_p, args.seed)
    except ValueError as exc:  # "top_p must be …" -> "--top-p must be …"
        raise UserError("--" + str(exc).replace("_", "-", 1)) from None
    run = load_model_source(args, pick_device(args.device))
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
    tokens = generate(run.model, prompt, args.tokens, args.temperature, args.top_k, args.top_p, args.seed,
                      use_cache=not args.no_cache, window=args.window)  # fmt: skip
    for token in tokens:
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
                "from_hf": args.from_hf,
                "prompt": args.prompt,
                "text": text,
                "tokens": len(new_ids),
                "tokens_per_second": len(new_ids) / seconds,
                "window": args.window,
                "cache": decodes_with_cache(run.model, not args.no_cache),  # False for mask=none: recomputed
            }
        )


def run_eval(args) -> None:
    from kqv.data.text import EMBEDDED_SOURCE
    from kqv.evaluate.perplexity import gpt_perplexity

    run = load_model_source(args)
    data = args.data
    if data is None and "data" not in run.info:  # imported: no corpus of its own
        data = EMBEDDED_SOURCE
        print(f"(no corpus of its own: scoring {EMBEDDED_SOURCE}; choose another with --data)")
    result = gpt_perplexity(run, data, n_batches=args.batches)
    name = args.run or args.from_hf
    print(f"{name}: loss {result['loss']:.4f} nats/token, perplexity {result['perplexity']:.3f} "
          f"over {result['tokens']:,} tokens")  # fmt: skip
    if args.json:
        emit_json({"command": "gpt eval", "run": args.run, "from_hf": args.from_hf, "data": data, **result})


def run_import_hf(args) -> None:
    from kqv.runs.imported import import_hf_run

    run_dir = import_hf_run(args.hf_dir, args.run_dir)
    print(f"imported {args.hf_dir} into {run_dir}; sample from it: kqv gpt sample {run_dir} --prompt 'Hello'")
    if args.json:
        emit_json({"command": "gpt import-hf", "hf_dir": args.hf_dir, "run_dir": str(run_dir)})


def run_export_hf(args) -> None:
    from kqv.families.gpt import GPT_FAMILY
    from kqv.runs.imported import export_hf_run

    hf_dir = export_hf_run(GPT_FAMILY.load(args.run_dir), args.hf_dir)
    print(f"wrote {hf_dir}; transformers loads it: GPT2LMHeadModel.from_pretrained, AutoTokenizer.from_pretrained")
    if args.json:
        emit_json({"command": "gpt export-hf", "run_dir": args.run_dir, "hf_dir": str(hf_dir)})
