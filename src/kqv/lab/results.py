"""The lab's outputs, built from finished runs: results.csv, results.md, curves.png, samples.md.

One row per (variant, seed) run; one summary per variant with the mean and the sample standard
deviation over seeds (n − 1 in the denominator; "–" with one seed). The table is sorted by the
honest loss (kqv.lab.leakage), never by the teacher-forced one, which a leaking mask makes look good.

One number per quantity: the honest and the teacher-forced loss are measured once per run, on the
same validation windows with the same (best) weights (kqv.lab.run.evaluate_run_dir), and the line
printed per run, results.csv and results.md all show those two numbers. The trainer's own validation
losses (best_val_loss, final_val_loss: other batches, logged during training) are in results.csv only,
under their own names. "honest − TF" in the table is the difference of the two numbers it shows.
"""

import csv
import io
import math
import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from kqv.fileio import atomic_write_bytes
from kqv.viz.png import pyplot, save_png

LEAK_MARGIN = 0.05  # nats/token: honest − teacher-forced above this counts as measured leakage


@dataclass
class RunResult:
    """One trained model of the lab."""

    variant: str  # label, "dot · causal · learned"
    spec: str  # "score=dot;mask=causal;pos=learned"
    seed: int
    steps: int
    final_train_loss: float
    final_val_loss: float
    best_val_loss: float  # the trainer's validation batches, lowest over the log: not the lab's windows
    teacher_forced_loss: float  # on the leakage windows, best weights
    honest_loss: float  # same windows, future hidden
    mask_sees_future: bool
    tokens_per_second: float
    train_seconds: float
    wall_seconds: float

    @property
    def gap(self) -> float:
        return self.honest_loss - self.teacher_forced_loss


@dataclass
class Summary:
    """Mean and standard deviation over a variant's seeds."""

    variant: str
    spec: str
    n_seeds: int
    best_val: tuple[float, float]  # the trainer's best validation loss (results.csv only)
    honest: tuple[float, float]
    teacher_forced: tuple[float, float]  # the same windows and weights as `honest`
    gap: float  # mean honest − mean teacher-forced
    mask_sees_future: bool
    tokens_per_second: float

    @property
    def leaks(self) -> bool:
        return self.mask_sees_future or self.gap > LEAK_MARGIN


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def summarize(results: list[RunResult]) -> list[Summary]:
    """One Summary per variant (in first-seen order), then sorted by mean honest loss."""
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(r.spec, []).append(r)
    out = []
    for spec, rs in groups.items():
        out.append(
            Summary(
                variant=rs[0].variant,
                spec=spec,
                n_seeds=len(rs),
                best_val=_mean_std([r.best_val_loss for r in rs]),
                honest=_mean_std([r.honest_loss for r in rs]),
                teacher_forced=_mean_std([r.teacher_forced_loss for r in rs]),
                gap=statistics.fmean(r.gap for r in rs),
                mask_sees_future=rs[0].mask_sees_future,
                tokens_per_second=statistics.fmean(r.tokens_per_second for r in rs),
            )
        )
    return sorted(out, key=lambda s: s.honest[0])


def _pm(mean_std: tuple[float, float]) -> str:
    mean, std = mean_std
    return f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f} ± –"


def shown_gap(honest: float, teacher_forced: float) -> str:
    """honest − TF as shown beside the two losses: the difference of the two numbers as printed (3 places)."""
    return f"{round(honest, 3) - round(teacher_forced, 3) + 0.0:+.3f}"


def _versus(s: Summary, base: Summary | None) -> str:
    """Δ honest loss against the baseline; '(beyond noise)' when |Δ| > 2 × the combined std."""
    if base is None:
        return "–"
    if s is base:
        return "(baseline)"
    delta = round(s.honest[0], 3) - round(base.honest[0], 3)  # the difference of the numbers shown
    noise = math.hypot(s.honest[1], base.honest[1])
    beyond = math.isfinite(noise) and abs(delta) > 2 * noise
    return f"{delta:+.3f}" + (" (beyond noise)" if beyond else "")


TABLE_HEADER = (
    "| variant | honest loss | teacher-forced loss | honest − TF | leaks? | Δ honest vs baseline | tokens/s | seeds |"
)


def results_table(summaries: list[Summary], baseline_spec: str | None = None) -> str:
    """The markdown table of results.md, sorted as given (summarize sorts by honest loss).

    Both losses are the lab's own evaluation (the same windows, the best weights); the baseline's row
    is marked "(baseline)" in the variant and the Δ column.
    """
    base = next((s for s in summaries if s.spec == baseline_spec), None)
    lines = [
        TABLE_HEADER,
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        if s.mask_sees_future:
            leak = "**yes** (mask sees the future)"
        elif s.gap > LEAK_MARGIN:
            leak = "**yes** (measured)"
        else:
            leak = "no"
        name = f"{s.variant} **(baseline)**" if s is base else s.variant
        gap = shown_gap(s.honest[0], s.teacher_forced[0])
        lines.append(
            f"| {name} | {_pm(s.honest)} | {_pm(s.teacher_forced)} | {gap} | {leak} | {_versus(s, base)} "
            f"| {s.tokens_per_second:,.0f} | {s.n_seeds} |"
        )
    return "\n".join(lines) + "\n"


def results_markdown(summaries: list[Summary], meta: dict, baseline_spec: str | None) -> str:
    return (
        f"# Attention lab: {meta.get('title', '')}\n\n"
        f"{meta.get('steps')} steps per run, preset `{meta.get('preset')}`, data `{meta.get('data') or 'embedded'}`, "
        f"mean ± std over seeds. Sorted by honest loss: each position scored with every later token replaced "
        f"by a filler, so a model cannot copy the answer. Both losses are measured on the same validation "
        f"windows with the best weights; results.csv also has the trainer's own validation losses "
        f"(best_val_loss, final_val_loss), on other batches. The teacher-forced loss is what training sees; a mask "
        f"that lets a position see its target (none, anticausal) makes it low and meaningless. A difference is "
        f"marked beyond noise when it exceeds twice the combined std of the two variants.\n\n"
        + results_table(summaries, baseline_spec)
    )


CSV_FIELDS = [f.name for f in fields(RunResult)] + ["gap"]


def results_csv(results: list[RunResult]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        row = {**asdict(r), "gap": r.gap}
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def plot_curves(curves: dict[str, list[list[dict]]], leaking: set[str], path: str | Path, title: str = "") -> Path:
    """Mean validation loss against step, one line per variant, a band from the lowest to the highest seed.

    curves: variant label -> one log (rows with step, val_loss) per seed. Leaking variants are dashed.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, logs in curves.items():
        steps = sorted(set.intersection(*(set(r["step"] for r in log) for log in logs)))
        by_step = [{r["step"]: r["val_loss"] for r in log} for log in logs]
        values = [[d[s] for d in by_step] for s in steps]  # (steps, seeds)
        mean = [statistics.fmean(v) for v in values]
        style = "--" if label in leaking else "-"
        (line,) = ax.plot(steps, mean, style, marker=".", label=label + (" (leaks)" if label in leaking else ""))
        if len(logs) > 1:  # the spread of the seeds
            low, high = [min(v) for v in values], [max(v) for v in values]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
    ax.set(xlabel="step", ylabel="validation loss, teacher-forced (nats per token)", title=title, yscale="log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_png(fig, path)


def samples_markdown(samples: list[tuple[str, str, str]]) -> str:
    """[(variant label, prompt, text)] -> samples.md."""
    parts = ["# Samples, one per variant (first seed, best weights, temperature 0.8)\n"]
    for label, prompt, text in samples:
        parts.append(f"## {label}\n\n```\n{prompt}{text}\n```\n")
    return "\n".join(parts)


def write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())
