"""Run the lab: one small GPT per (variant, seed), evaluated honestly; rebuild its report.

Layout of OUT (default runs/lab-GRID):

    lab.json                    what was asked: variants, seeds, steps, preset, data
    VARIANT/seed-S/             a `kqv gpt train` run directory, plus lab-eval.json
    results.csv results.md curves.png samples.md

The baseline (kqv.lab.variants.BASELINE) is always run, first unless listed elsewhere, so every table
has a row to measure "Δ vs baseline" against.

Every run gets the same data, preset, step budget and seeds 0…n−1 (the training seed, so every
variant starts from the same batches). Rerunning `run_lab` on the same OUT resumes: a run whose
log reached the last step is skipped (evaluated if its lab-eval.json is missing), a run stopped
midway continues from its trainer state (`train_gpt(resume=…)`, exact), and a folder with no
trainer state yet is started again from scratch.
"""

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kqv import __version__
from kqv.data.text import fixed_batches, prepare_tokens, read_corpus
from kqv.errors import UserError
from kqv.families.gpt import GPT_FAMILY
from kqv.generate.sampling import generate
from kqv.lab.leakage import honest_loss
from kqv.lab.results import (
    RunResult,
    Summary,
    plot_curves,
    results_csv,
    results_markdown,
    samples_markdown,
    shown_gap,
    summarize,
    write_text,
)
from kqv.lab.variants import BASELINE, Variant, parse_variant
from kqv.train.gpt_run import train_gpt
from kqv.train.loop import read_log

PRESET = "lab"
N_WINDOWS = 8  # validation windows of block_size for the honest loss
WINDOW_SEED = 12345  # the same windows for every run
PROMPT = "ROMEO:"
SAMPLE_TOKENS = 200
SETTINGS = ("steps", "preset", "data", "overrides")  # must match to resume an OUT


@dataclass
class LabReport:
    out: Path
    results: list[RunResult]
    summaries: list[Summary]
    files: dict[str, Path]
    skipped: int  # runs already finished before this call


def run_dir_of(out: Path, variant: Variant, seed: int) -> Path:
    return out / variant.slug / f"seed-{seed}"


def run_lab(
    variants: list[Variant],
    out: str | Path,
    steps: int = 300,
    seeds: int = 3,
    data: str | None = None,
    preset: str = PRESET,
    overrides: list[str] | None = None,
    title: str = "custom",
    device: str = "cpu",
    say: Callable[[str], None] = print,
) -> LabReport:
    """Train, evaluate and report every (variant, seed) not already finished under `out`."""
    if not variants:
        raise UserError("no variants to run; give --grid NAME or --variants 'score=…;mask=…;pos=…'")
    if len({v.spec for v in variants}) != len(variants):
        raise UserError("the same variant is listed twice")
    variants = with_baseline(variants)
    out = Path(out)
    meta = {
        "kqv_version": __version__,
        "title": title,
        "variants": [{"spec": v.spec, "question": v.question} for v in variants],
        "seeds": seeds,
        "steps": steps,
        "preset": preset,
        "data": str(Path(data).resolve()) if data else None,
        "overrides": list(overrides or []),
    }
    old = _read_meta(out) if (out / "lab.json").is_file() else None
    if old is not None:
        changed = [k for k in SETTINGS if old.get(k) != meta[k]]
        if changed:
            raise UserError(f"--out {out} holds a lab run with other {', '.join(changed)}; resume it with the same "
                            "settings or choose another --out")  # fmt: skip
        known = {v["spec"]: v for v in old["variants"]}  # keep old variants: the report covers every run in OUT
        meta["variants"] = list(known.values()) + [v for v in meta["variants"] if v["spec"] not in known]
        meta["seeds"] = max(seeds, old["seeds"])
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "lab.json", json.dumps(meta, indent=2) + "\n")

    jobs = [(v, s) for v in variants for s in range(seeds)]
    skipped = 0
    for i, (variant, seed) in enumerate(jobs, 1):
        run_dir = run_dir_of(out, variant, seed)
        where = f"[{i}/{len(jobs)}] {variant.label}, seed {seed}"
        if _finished(run_dir) and (run_dir / "lab-eval.json").is_file():
            skipped += 1
            say(f"{where}: finished before, skipped")
            continue
        started = time.perf_counter()
        if not _finished(run_dir):
            _train(variant, seed, run_dir, steps, data, preset, overrides or [], device)
        evaluate_run_dir(run_dir, variant, seed, wall_seconds=time.perf_counter() - started)
        r = run_result(run_dir, variant, seed)  # the record results.csv and results.md are built from
        say(f"{where}: honest loss {r.honest_loss:.3f}, teacher-forced {r.teacher_forced_loss:.3f}, "
            f"honest − TF {shown_gap(r.honest_loss, r.teacher_forced_loss)}, {r.wall_seconds:.0f} s")  # fmt: skip
    report = report_lab(out)
    report.skipped = skipped
    return report


def with_baseline(variants: list[Variant]) -> list[Variant]:
    """`variants`, with the baseline put first when it is not among them."""
    base = Variant(**BASELINE)
    if any(v.spec == base.spec for v in variants):
        return list(variants)
    return [Variant(**BASELINE, question="baseline: what every other row is measured against"), *variants]


def run_result(run_dir: Path, variant: Variant, seed: int) -> RunResult:
    """The one record of a finished, evaluated run: its log.csv and lab-eval.json."""
    ev = json.loads((run_dir / "lab-eval.json").read_text(encoding="utf-8"))
    log = read_log(run_dir / "log.csv")
    return RunResult(
        variant=variant.label,
        spec=variant.spec,
        seed=seed,
        steps=log[-1]["step"],
        final_train_loss=log[-1]["train_loss"],
        final_val_loss=log[-1]["val_loss"],
        best_val_loss=min(r["val_loss"] for r in log),
        teacher_forced_loss=ev["teacher_forced_loss"],
        honest_loss=ev["honest_loss"],
        mask_sees_future=variant.leaks,
        tokens_per_second=log[-1]["tokens_per_s"],
        train_seconds=log[-1]["elapsed_s"],
        wall_seconds=ev["wall_seconds"],
    )


def _read_meta(out: Path) -> dict:
    try:
        meta = json.loads((out / "lab.json").read_text(encoding="utf-8"))
        meta["variants"], meta["seeds"]  # noqa: B018 - both must be there
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{out}/lab.json: damaged ({exc!r})") from None
    return meta


def _finished(run_dir: Path) -> bool:
    """True when the run's log reached its last step and its best weights exist."""
    config = run_dir / "config.json"
    if not (config.is_file() and (run_dir / "model.safetensors").is_file()):
        return False
    max_iters = json.loads(config.read_text(encoding="utf-8"))["train"]["max_iters"]
    log = read_log(run_dir / "log.csv")
    return bool(log) and log[-1]["step"] >= max_iters


def _train(variant, seed, run_dir, steps, data, preset, overrides, device) -> None:
    quiet = lambda *_: None  # noqa: E731 - the lab prints one line per run instead
    if (run_dir / "trainer.safetensors").is_file() and (run_dir / "config.json").is_file():
        train_gpt(resume=str(run_dir), device=device, say=quiet)
        return
    if run_dir.exists():  # started but no trainer state yet: nothing worth keeping
        shutil.rmtree(run_dir)
    sets = [*overrides, *variant.overrides, f"train.seed={seed}"]
    train_gpt(preset=preset, data=data, out=str(run_dir), max_iters=steps, overrides=sets, device=device, say=quiet)


def evaluate_run_dir(run_dir: Path, variant: Variant, seed: int, wall_seconds: float) -> dict:
    """Honest and teacher-forced loss on fixed validation windows, and a sample; saved as lab-eval.json."""
    run = GPT_FAMILY.load(run_dir)
    tokens = prepare_tokens(read_corpus(run.info["data"]["path"]), run.tokenizer, run_dir / "data")
    (x, y) = fixed_batches(tokens.val, run.model_config.block_size, N_WINDOWS, 1, WINDOW_SEED)[0]
    space = run.tokenizer.encode(" ")
    filler = space[0] if len(space) == 1 else 0  # a space: the commonest character, and it says nothing
    leak = honest_loss(run.model, x, y, filler)
    prompt = run.tokenizer.encode(PROMPT)
    # no KV cache: the cache assumes a causal mask; an uncached forward of the prefix works for every mask
    ids = list(generate(run.model, prompt, SAMPLE_TOKENS, temperature=0.8, seed=1, use_cache=False))
    evaluation = {
        "spec": variant.spec,
        "seed": seed,
        "teacher_forced_loss": leak.teacher_forced_loss,
        "honest_loss": leak.honest_loss,
        "n_tokens": leak.n_tokens,
        "filler_id": filler,
        "prompt": PROMPT,
        "sample": run.tokenizer.decode(ids),
        "wall_seconds": wall_seconds,
    }
    write_text(run_dir / "lab-eval.json", json.dumps(evaluation, indent=2) + "\n")
    return evaluation


def report_lab(out: str | Path) -> LabReport:
    """Rebuild results.csv, results.md, curves.png and samples.md from the finished runs under `out`."""
    out = Path(out)
    if not (out / "lab.json").is_file():
        raise UserError(f"{out}: not a lab folder (no lab.json); run `kqv lab run --out {out}` first")
    meta = _read_meta(out)
    variants = [parse_variant(v["spec"], v.get("question", "")) for v in meta["variants"]]
    results: list[RunResult] = []
    curves: dict[str, list[list[dict]]] = {}
    samples = []
    for variant in variants:
        for seed in range(meta["seeds"]):
            run_dir = run_dir_of(out, variant, seed)
            eval_path = run_dir / "lab-eval.json"
            if not (_finished(run_dir) and eval_path.is_file()):
                continue  # not finished yet: left out of the report
            ev = json.loads(eval_path.read_text(encoding="utf-8"))
            log = read_log(run_dir / "log.csv")
            results.append(run_result(run_dir, variant, seed))
            curves.setdefault(variant.label, []).append(log)
            if len(curves[variant.label]) == 1:
                samples.append((variant.label, ev["prompt"], ev["sample"]))
    if not results:
        raise UserError(f"{out}: no finished runs yet; continue with `kqv lab run --out {out}`")
    summaries = summarize(results)
    baseline = Variant(**BASELINE).spec
    files = {
        "results.csv": write_text(out / "results.csv", results_csv(results)),
        "results.md": write_text(out / "results.md", results_markdown(summaries, meta, baseline)),
        "curves.png": plot_curves(
            curves,
            {v.label for v in variants if v.leaks},
            out / "curves.png",
            f"attention lab: {meta['title']}, {meta['steps']} steps",
        ),  # fmt: skip
        "samples.md": write_text(out / "samples.md", samples_markdown(samples)),
    }
    return LabReport(out, results, summaries, files, skipped=0)
