"""`kqv bench …`: speed measured against a baseline in the same run, reported as a ratio."""

from kqv.commands._common import (
    add_command,
    add_group,
    add_json_flag,
    add_steps_flag,
    emit_json,
    int_list,
    positive_int,
)
from kqv.errors import UserError


def register(groups) -> None:
    sub = add_group(
        groups,
        "bench",
        "benchmarks: kqv against a reference measured in the same run, reported as ratios",
        "  kqv bench digits --json\n",
        metavar="BENCHMARK",
    )
    digits = add_command(
        sub,
        "digits",
        "images/s of one SGD epoch: matrix-form backprop vs a per-sample loop (Nielsen's network.py style)",
        "  kqv bench digits                               # embedded 8x8 digits, [64, 100, 10]\n"
        "  kqv bench digits --data mnist/ --limit 10000 --json              # a folder of MNIST IDX files\n",
        run_digits,
    )
    digits.add_argument("--data", help="folder of MNIST-format IDX files (default: the embedded digits)")
    digits.add_argument("--hidden", type=int_list, default=[100], help="hidden layer sizes (default 100)")
    digits.add_argument(
        "--batch-sizes", type=int_list, default=[10, 32, 128], help="mini-batch sizes to time (default 10,32,128)"
    )
    digits.add_argument("--limit", type=positive_int, help="time on the first N training images only")
    digits.add_argument(
        "--dtype", choices=["float32", "float64"], default="float32", help="arithmetic of both (default float32)"
    )
    digits.add_argument("--repeats", type=positive_int, default=3, help="best of N epochs (default 3)")
    add_json_flag(digits)

    gpt = add_command(
        sub,
        "gpt",
        "GPT training ms/iteration, tokens/s, MFU and peak memory; sampling tokens/s with and without the KV cache",
        "  kqv bench gpt                                  # the default (main-job) model\n"
        "  kqv bench gpt --preset nanogpt-cpu --tokens 500 --json\n"
        "  kqv bench gpt --device cuda --preset gpt2 --compile --json   # GPT-2 124M, bf16, context 1024\n",
        run_gpt,
    )
    gpt.add_argument("--preset", default="default", help="model and batch shape to time (default: default)")
    gpt.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    add_steps_flag(gpt, default=10, help="timed training steps (default 10)")
    gpt.add_argument("--tokens", type=positive_int, default=500, help="new tokens to sample (default 500)")
    gpt.add_argument(
        "--window", choices=["hop", "slide"], default="hop",
        help="the context window past block_size while sampling (kqv gpt sample --window; default hop)",
    )  # fmt: skip
    gpt.add_argument(
        "--vocab-size", type=positive_int,
        help="vocabulary (default: a bpe preset's bpe_vocab_size, e.g. 50257 for gpt2; else 65, tiny Shakespeare's)",
    )  # fmt: skip
    gpt.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    gpt.add_argument("--compile", action="store_true", help="torch.compile the model for the training steps")
    gpt.add_argument(
        "--peak-tflops", type=float, metavar="X",
        help="the device's peak TFLOP/s for MFU (default: a table of GPUs' dense bf16 peaks; measured on a CPU)",
    )  # fmt: skip
    add_json_flag(gpt)

    sample = add_command(
        sub,
        "sample",
        "greedy sampling tokens/s: kqv's KV cache vs transformers' GPT-2 generate, same random weights (CPU)",
        "  kqv bench sample --preset gpt2                 # GPT-2 small, 124M parameters, 200 tokens\n"
        "  kqv bench sample --preset tiny --set bias=true --set activation=gelu_tanh --vocab-size 300 --json\n",
        run_sample,
    )
    sample.add_argument("--preset", default="gpt2", help="a GPT-2-compatible preset (default: gpt2)")
    sample.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sample.add_argument("--tokens", type=positive_int, default=200, help="new tokens per run (default 200)")
    sample.add_argument("--prompt-tokens", type=positive_int, default=16, help="prompt length (default 16)")
    sample.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds, median (default 3)")
    sample.add_argument("--vocab-size", type=positive_int, default=50257, help="vocabulary (default 50257, GPT-2's)")
    add_json_flag(sample)

    serve = add_command(
        sub,
        "serve",
        "load check of `kqv serve`: N attention requests at once vs the same N one after another (latency, errors)",
        "  kqv bench serve runs/gpt                       # the default (main-job) run, 32 requests at once\n"
        "  kqv bench serve --preset default --json        # the same architecture with random weights\n",
        run_serve,
    )
    serve.add_argument("run", nargs="?", metavar="RUN", help="a run directory (default: --preset default)")
    serve.add_argument("--preset", help="random weights of a preset instead of a run (default: default)")
    serve.add_argument("--concurrency", type=positive_int, default=32, help="requests at once (default 32)")
    serve.add_argument(
        "--text",
        default="The pizza came out of the oven and it tasted good",
        help="the text of every request (default: the pizza sentence)",
    )
    add_json_flag(serve)

    why = add_command(
        sub,
        "why",
        "speed of `kqv why`: the batched patching sweep and integrated gradients against one forward pass at a "
        "time, every method, and the command's wall time",
        "  kqv bench why                                  # the default GPT (random weights), a 12-token prompt\n"
        "  kqv bench why runs/kitchen --json\n",
        run_why,
    )
    why.add_argument("run", nargs="?", metavar="RUN", help="a GPT run directory (default: --preset default)")
    why.add_argument("--preset", help="random weights of a GPT preset instead of a run (default: default)")
    why.add_argument("--text", default="The pizza came out of the oven and it tasted good", help="the prompt (cropped)")
    why.add_argument("--tokens", type=positive_int, default=12, help="prompt length in tokens (default 12)")
    why.add_argument("--ig-steps", type=positive_int, default=32, help="integrated-gradients steps (default 32)")
    why.add_argument("--repeats", type=positive_int, default=3, help="best of this many (default 3)")
    add_json_flag(why)


def run_digits(args) -> None:
    import numpy as np

    from kqv.bench.digits import as_dict, bench_digits, machine_info
    from kqv.data.digits import load_digits_data
    from kqv.scratch.train import Labeled

    data = load_digits_data(args.data)
    train = data.train
    if args.limit:
        train = Labeled(train.x[: args.limit], train.labels[: args.limit])
    sizes = [data.num_inputs, *args.hidden, data.num_classes]
    info = machine_info()
    print(f"digits SGD epoch, network {sizes}, {len(train.labels)} images from {data.source}, {args.dtype}")
    print(f"machine: {info}")
    print(f"{'batch':>6} {'matrix img/s':>14} {'per-sample img/s':>17} {'speedup':>8} {'max |Δw|':>9}")
    results = []
    for batch_size in args.batch_sizes:
        r = bench_digits(train, sizes, batch_size=batch_size, repeats=args.repeats, dtype=np.dtype(args.dtype))
        print(
            f"{batch_size:>6} {r.matrix_images_per_second:>14,.0f} {r.textbook_images_per_second:>17,.0f} "
            f"{r.speedup:>7.1f}x {r.max_weight_difference:>9.1e}",
            flush=True,
        )
        results.append(as_dict(r))
    if args.json:
        emit_json({"command": "bench digits", "data": data.source, "machine": info, "results": results})


def run_gpt(args) -> None:
    from kqv.bench.gpt import bench_gpt, machine_info
    from kqv.config import GPTConfig, from_dict
    from kqv.device import pick_device
    from kqv.train.gpt_run import resolve_configs

    device = pick_device(args.device)
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise UserError(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    model_table, train_cfg = resolve_configs(args.preset, args.overrides, args.vocab_size)
    vocab_size = args.vocab_size or (train_cfg.bpe_vocab_size if train_cfg.tokenizer == "bpe" else 65)
    model_cfg = from_dict(GPTConfig, {**model_table, "vocab_size": vocab_size})
    info = machine_info(device)
    print(f"GPT preset {args.preset} on {device}: {info}")
    r = bench_gpt(model_cfg, train_cfg, args.preset, device, iters=args.steps, sample_tokens=args.tokens,
                  window=args.window, compile_model=args.compile, peak_tflops=args.peak_tflops)  # fmt: skip
    print(f"model: {r.parameters:,} parameters, batch {r.batch_size} x {r.block_size} tokens, {r.precision}"
          + (", compiled" if r.compiled else ""))  # fmt: skip
    print(f"train:  {r.train_ms_per_iter:8.1f} ms/iteration  {r.train_tokens_per_second:10,.0f} tokens/s  "
          f"peak memory {r.peak_memory_mib:,.0f} MiB ({r.memory_measure})")  # fmt: skip
    print(f"MFU:    {100 * r.mfu:8.1f} %  of a peak of {r.peak_flops / 1e12:,.3g} TFLOP/s ({r.peak_source}); "
          f"{r.flops_per_token:,} FLOPs/token = 6·N + 12·L·T·C, N = {r.matmul_parameters:,} weights")  # fmt: skip
    print(f"sample: {r.sample_tokens_per_second_cached:8,.0f} tokens/s with the KV cache, "
          f"{r.sample_tokens_per_second_uncached:,.0f} without: {r.cache_speedup:.1f}x "
          f"({r.sample_tokens} greedy tokens, window {r.sample_window}; same tokens: {r.same_tokens})")  # fmt: skip
    if args.json:
        emit_json({"command": "bench gpt", "machine": info, **r.to_dict()})


def run_sample(args) -> None:
    from kqv.bench.sample import bench_sample, machine_info
    from kqv.config import GPTConfig, from_dict
    from kqv.train.gpt_run import resolve_configs

    model_table, _ = resolve_configs(args.preset, args.overrides, args.vocab_size)
    model_cfg = from_dict(GPTConfig, {**model_table, "vocab_size": args.vocab_size})
    info = machine_info()
    print(f"kqv bench sample: preset {args.preset}, {args.tokens} greedy tokens after a {args.prompt_tokens}-token "
          f"prompt, random weights, cpu: {info}", flush=True)  # fmt: skip
    r = bench_sample(model_cfg, args.preset, args.tokens, args.prompt_tokens, args.rounds)
    print(f"model: {r.parameters:,} parameters; transformers {r.transformers_version} ({r.attention} attention); "
          f"prompt logits max |Δ| {r.max_logit_difference:.1e}")  # fmt: skip
    print(f"kqv generate (KV cache, 1 thread): {r.kqv_tokens_per_second:8.1f} tokens/s")
    for n, rate in r.transformers_by_threads.items():
        label = f"transformers generate ({n} thread{'s' if n > 1 else ''}):"
        print(f"{label:<35}{rate:8.1f} tokens/s")
    print(f"kqv / transformers: {r.ratio:.2f}x (median of {r.rounds} interleaved rounds, against transformers' "
          f"faster setting); same tokens: {r.same_tokens}")  # fmt: skip
    if args.json:
        emit_json({"command": "bench sample", "machine": info, **r.to_dict()})


def run_serve(args) -> None:
    from kqv.bench.serve import load_check
    from kqv.commands.serve import load_explorers

    if args.run and args.preset:
        raise UserError("give a run directory or --preset NAME, not both")
    preset = args.preset or (None if args.run else "default")
    explorers = load_explorers([args.run] if args.run else [], [preset] if preset else [])
    e = explorers[0]
    print(
        f"kqv serve load check: {e.subject.name}, {args.concurrency} attention requests ({len(args.text)} characters)"
    )
    r = load_check(explorers, args.text, args.concurrency)
    s = r.summary()
    for name in ("sequential", "concurrent"):
        x = s[name]
        print(f"{name:>10}: p50 {x['p50_ms']:7.1f} ms  p95 {x['p95_ms']:7.1f} ms  max {x['max_ms']:7.1f} ms  "
              f"{x['requests_per_s']:6.1f} requests/s")  # fmt: skip
    print(f"answers: {r.response_bytes:,} bytes each; errors: {r.errors} of {2 * args.concurrency}; "
          f"throughput at {args.concurrency} at once / one at a time: {s['throughput_ratio']:.2f}x")  # fmt: skip
    for example in r.error_examples:
        print(f"  error: {example}")
    if args.json:
        emit_json({"command": "bench serve", "run": e.subject.name, **r.to_dict()})
    if r.errors:
        raise SystemExit(1)


def run_why(args) -> None:
    from kqv.bench.gpt import machine_info
    from kqv.bench.why import GOALS, bench_why
    from kqv.families import load_subject

    if args.run and args.preset:
        raise UserError("give a run directory or --preset NAME, not both")
    preset = args.preset or (None if args.run else "default")
    subject = load_subject(args.run, preset)
    if subject.family.name != "gpt":
        raise UserError(f"kqv bench why times the GPT methods; {subject.name} is {subject.family.title}")
    tokenizer = subject.tokenizer
    ids = tokenizer.encode(args.text)[: args.tokens]
    corrupt = list(ids)
    corrupt[1] = (ids[1] + 1) % subject.model.config.vocab_size
    source = [args.run] if args.run else ["--preset", preset]
    command = None
    text, corrupted = tokenizer.decode(ids), tokenizer.decode(corrupt)
    if len(tokenizer.encode(corrupted)) == len(ids) and tokenizer.encode(text) == ids:
        command = ["why", *source, text, "--corrupt-text", corrupted, "--steps", str(args.ig_steps)]
    print(f"kqv why speed: {subject.name}, a {len(ids)}-token prompt, {args.ig_steps} integrated-gradients steps, "
          f"best of {args.repeats}")  # fmt: skip
    r = bench_why(subject.model, tokenizer, subject.name, args.text, args.tokens, args.ig_steps, args.repeats, command)
    ratios, goals = r.ratios(), r.goals()
    mark = {True: "✓", False: "✗"}
    print(f"residual patching, {r.layers} layers × {r.tokens} positions: batched {r.resid_patching_s:.3f} s, "
          f"one pass each {r.resid_loop_s:.3f} s ({ratios['patching_batched_vs_loop']:.1f}x)  "
          f"goal ≤ {GOALS['resid_patching_s']:.0f} s {mark[goals['resid_patching_s']]}")  # fmt: skip
    print(f"integrated gradients, {r.steps} steps: batched {r.integrated_gradients_s:.3f} s, one pass each "
          f"{r.integrated_loop_s:.3f} s ({ratios['ig_batched_vs_loop']:.1f}x)  "
          f"goal ≤ {GOALS['integrated_gradients_s']:.0f} s {mark[goals['integrated_gradients_s']]}")  # fmt: skip
    print(f"every method in this process: {r.all_methods_s:.2f} s")
    if r.command_s is not None:
        print(f"`kqv {' '.join(command[:2])} … --method all` as a new process, pictures included: {r.command_s:.2f} s  "
              f"goal ≤ {GOALS['command_s']:.0f} s {mark[goals['command_s']]}")  # fmt: skip
    if args.json:
        import dataclasses

        emit_json({"command": "bench why", **dataclasses.asdict(r), **ratios, "goals": goals,
                   "machine": machine_info("cpu")})  # fmt: skip
