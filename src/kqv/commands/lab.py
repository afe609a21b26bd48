"""`kqv lab …`: the attention lab (step 6): change the score, the mask or the positions, and measure it."""

from kqv.commands._common import add_command, add_group, add_json_flag, add_steps_flag, emit_json, positive_int
from kqv.errors import UserError


def register(groups) -> None:
    from kqv.lab.grids import GRID_SPECS

    sub = add_group(
        groups,
        "lab",
        "step 6: train one small GPT per attention variant and compare them, leakage made visible",
        "  kqv lab run --grid seed-questions --steps 300 --seeds 2   # ~15 min on 2 cores\n"
        "  kqv lab report runs/lab-seed-questions\n",
    )
    run = add_command(
        sub,
        "run",
        "train and evaluate every variant × seed; rerun on the same --out to resume",
        "  kqv lab run --grid masks --seeds 3\n"
        "  kqv lab run --variants 'score=dot' --variants 'mask=anticausal;pos=rope' --steps 200 --out runs/mine\n",
        run_lab_command,
    )
    which = run.add_mutually_exclusive_group()
    which.add_argument("--grid", choices=list(GRID_SPECS), help="a built-in grid (default: seed-questions)")
    which.add_argument(
        "--variants", action="append", metavar="'score=…;mask=…;pos=…'",
        help="one variant; keys left out keep the baseline (scaled_dot, causal, learned), which is always "
             "run too; repeatable",
    )  # fmt: skip
    add_steps_flag(run, default=300, help="optimiser steps per run (default 300)")
    run.add_argument("--seeds", type=positive_int, default=3, help="runs per variant, seeds 0…n−1 (default 3)")
    run.add_argument("--data", help="a UTF-8 text file or folder (default: the embedded tiny Shakespeare)")
    run.add_argument("--out", help="lab folder (default: runs/lab-GRID, or runs/lab-custom for --variants)")
    run.add_argument("--preset", default="lab", help="model and training preset (default: lab)")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value for every run, e.g. n_layer=3 (repeatable)",
    )  # fmt: skip
    run.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    add_json_flag(run)

    report = add_command(
        sub,
        "report",
        "rebuild results.csv, results.md, curves.png and samples.md from a lab folder",
        "  kqv lab report runs/lab-seed-questions\n",
        run_report_command,
    )
    report.add_argument("dir", help="a folder written by `kqv lab run`")
    add_json_flag(report)


def run_lab_command(args) -> None:
    import time

    from kqv.device import pick_device
    from kqv.lab.run import run_lab
    from kqv.lab.variants import grid_variants, parse_variant

    if args.variants:
        variants, title = [parse_variant(text) for text in args.variants], "custom"
    else:
        title = args.grid or "seed-questions"
        variants = list(grid_variants(title))
    for key in args.overrides:
        if key.split("=")[0].strip() in ("score", "mask", "pos_encoding", "seed", "train.seed", "max_iters"):
            raise UserError(f"--set {key}: the lab sets this itself; use --variants, --seeds or --steps")
    started = time.perf_counter()
    report = run_lab(variants, args.out or f"runs/lab-{title if not args.variants else 'custom'}", args.steps,
                     args.seeds, args.data, args.preset, args.overrides, title, pick_device(args.device))  # fmt: skip
    _print_report(report, args.json, "lab run", wall_seconds=time.perf_counter() - started)


def run_report_command(args) -> None:
    from kqv.lab.run import report_lab

    _print_report(report_lab(args.dir), args.json, "lab report")


def _print_report(report, as_json: bool, command: str, **extra) -> None:
    from dataclasses import asdict

    from kqv.lab.results import results_table
    from kqv.lab.variants import BASELINE, Variant

    print(results_table(report.summaries, Variant(**BASELINE).spec), end="")
    print(f"wrote {', '.join(str(p) for p in report.files.values())}")
    if as_json:
        emit_json({
            "command": command, "out": str(report.out), **extra,
            "results": [{**asdict(r), "gap": r.gap} for r in report.results],
            "summaries": [{**asdict(s), "leaks": s.leaks} for s in report.summaries],
            "files": {k: str(v) for k, v in report.files.items()},
        })  # fmt: skip
