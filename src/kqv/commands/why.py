"""`kqv why`: why the model predicts what it does — every causal and gradient method side by side (step 5).

The question and its answers come from kqv.inspect.why (GPT) and kqv.inspect.source_why (translation);
the pictures from kqv.viz.why. This module only chooses, prints and writes.
"""

import time
from pathlib import Path

from kqv.commands._common import add_command, add_json_flag, emit_json, positive_int
from kqv.errors import UserError

EXAMPLES = """\
  kqv why runs/kitchen "The pizza came out of the oven and it tasted good." --query-token it --corrupt pizza=cake
  kqv why runs/kitchen "The pizza came out of the oven and it" --method lens --target tasted --other smelled
  kqv why runs/kitchen "The pizza came out of the oven and it" --method grad --steps 64 --baseline mean
  kqv why runs/translate "The pizza came out of the oven" --corrupt pizza=bread
  kqv why --from-hf gpt2 "When Mary and John went to the store, John gave a drink to" --other John
  kqv why --preset tiny "hello there" --method heads      # a GPT preset with random weights
"""

METHOD_CHOICES = ("lens", "dla", "patch", "rollout", "grad", "heads", "all")


def methods_list(text: str) -> list[str]:
    import argparse

    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METHOD_CHOICES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method {bad[0] if bad else text!r}; choose from {', '.join(METHOD_CHOICES)}"
        )
    return names


def register(groups) -> None:
    parser = add_command(
        groups,
        "why",
        "step 5: why the model predicts what it does — logit lens, direct logit attribution, activation patching, "
        "attention rollout, gradient attribution and head detectors, side by side, with pictures",
        EXAMPLES,
        run_why,
    )
    parser.usage = (
        "kqv why RUN TEXT [options]\n       kqv why --from-hf NAME_OR_DIR TEXT [options]\n"
        "       kqv why --preset NAME TEXT [options]"
    )
    parser.add_argument(
        "run", nargs="?", metavar="RUN", help="a run directory (leave it out with --from-hf or --preset)"
    )
    parser.add_argument("text", nargs="?", metavar="TEXT", help="the text (the source sentence, for translation)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from-hf", metavar="NAME_OR_DIR", help="a Hugging Face GPT-2: a hub name (gpt2) or a folder")
    source.add_argument(
        "--preset", metavar="NAME", help="random weights of a preset (tiny, default, translation/tiny …)"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random weights with --preset")
    parser.add_argument(
        "--method", type=methods_list, default=["all"], metavar="M[,M…]",
        help="lens, dla, patch, rollout, grad, heads, or all (default); several with commas",
    )  # fmt: skip
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--query-token", metavar="WORD",
        help="explain the prediction made at WORD (its last token, last occurrence; default: the last token)",
    )  # fmt: skip
    which.add_argument("--query-index", type=int, metavar="N", help="… or at position N (0-based; -1 = the last)")
    parser.add_argument(
        "--target", metavar="TOKEN",
        help="the token whose logit is explained (default: the text's next token after the query, else the top "
        "prediction)",
    )  # fmt: skip
    parser.add_argument(
        "--other", metavar="TOKEN",
        help="the token it is contrasted with (default: the corrupted text's prediction, else the runner-up)",
    )  # fmt: skip
    corruption = parser.add_mutually_exclusive_group()
    corruption.add_argument(
        "--corrupt",
        metavar="WORD=WORD",
        help="the corrupted text for patching: the text with WORD replaced (pizza=cake)",
    )
    corruption.add_argument("--corrupt-text", metavar="TEXT", help="… or the whole corrupted text (same token length)")
    parser.add_argument(
        "--translation", metavar="TEXT",
        help="translation runs: the decoder's text (default: the model's own greedy translation)",
    )  # fmt: skip
    parser.add_argument(
        "--steps", type=positive_int, default=32, metavar="N", help="integrated-gradients steps (default 32)"
    )
    parser.add_argument(
        "--baseline", default="zero", choices=["zero", "mean"],
        help="integrated gradients' baseline embedding: zero, or the mean embedding (default zero)",
    )  # fmt: skip
    parser.add_argument(
        "--top", type=positive_int, default=5, metavar="K", help="top tokens per cell of the lens (default 5)"
    )
    parser.add_argument("--out", metavar="DIR", help="folder for the PNGs (default: RUN/why, or runs/why-PRESET)")
    add_json_flag(parser)


def _subject(args):
    from kqv.families import family, load_subject
    from kqv.families.base import Subject

    given = [a for a in (args.run, args.text) if a is not None]
    if args.from_hf is not None or args.preset is not None:
        if len(given) != 1:
            flag = "--from-hf NAME" if args.from_hf is not None else "--preset NAME"
            raise UserError(f'with {flag} give only the text: kqv why {flag} "The pizza came out …"')
        text = given[0]
        if args.preset is not None:
            return load_subject(preset=args.preset, seed=args.seed), text
        from kqv.runs.imported import load_hf_run

        run = load_hf_run(args.from_hf, "cpu")
        out = Path("runs") / f"why-{Path(args.from_hf).name or 'hf'}"
        return Subject(family("gpt"), run.model, run.tokenizer, f"Hugging Face {args.from_hf}", out), text
    if len(given) != 2:
        raise UserError('give a run directory and a text: kqv why runs/kitchen "The pizza came out of the oven and it"')
    return load_subject(run=given[0]), given[1]


def run_why(args) -> None:
    started = time.perf_counter()
    subject, text = _subject(args)
    methods = list(dict.fromkeys(m for name in args.method for m in (METHOD_CHOICES[:-1] if name == "all" else [name])))
    if subject.family.name == "translation":
        from kqv.commands.why_translation import run_translation_why

        run_translation_why(args, subject, text, methods, started, _out_dir(args, subject))
        return
    _run_gpt_why(args, subject, text, methods, started)


def _run_gpt_why(args, subject, text: str, methods: list[str], started: float) -> None:

    from kqv.inspect.attention import token_label
    from kqv.inspect.why import report_dict

    report = subject.family.why(
        subject.model, subject.tokenizer, text, methods, query_token=args.query_token, query_index=args.query_index,
        target=args.target, other=args.other, corrupt=args.corrupt, corrupt_text=args.corrupt_text,
        translation=args.translation, steps=args.steps, baseline=args.baseline, top=args.top,
    )  # fmt: skip
    q = report.question
    out_dir = _out_dir(args, subject)
    print(f"model: {subject.name} (gpt)")
    print(f"tokens ({len(q.ids)}): " + " ".join(f"{i}:{label}" for i, label in enumerate(q.labels)))
    print(
        f"question: at token {q.position} '{q.labels[q.position]}', '{token_label(q.target_text)}' against "
        f"'{token_label(q.other_text)}': logit difference {q.value:+.2f} ({q.how})"
    )
    if q.corrupt_text is not None:
        print(f"corrupted: {q.corrupt_text!r}: logit difference {q.corrupted_value:+.2f}")
    print()
    print_answers(report)
    winner, agree, disagree = report.agreement()
    if winner is not None:
        pointing = len(agree) + len(disagree)
        line = (
            f"agreement: {len(agree)} of {pointing} methods that point at a word name *{winner}* ({', '.join(agree)})"
        )
        if disagree:
            line += "; " + ", ".join(f"{m} names *{report.named(m)}*" for m in disagree)
        print(line)
    evidence = report.evidence()
    if len(evidence) > 1:
        print()
        print("share of each word up to the query, by method (signed for the gradient methods):")
        shown = q.words()[0]
        cells = max(6, *(len(w) for w in shown))
        name_width = max(len(n) for n in evidence)
        print(" " * name_width + "  " + " ".join(w.rjust(cells) for w in shown))
        for name, values in evidence.items():
            print(name.ljust(name_width) + "  " + " ".join(f"{v:+.2f}".rjust(cells) for v in values))
    print()
    print(f"summary: {report.summary()}")
    files = _draw(report, subject.tokenizer, out_dir, subject.name)
    print("wrote " + ", ".join(str(f) for f in files))
    seconds = time.perf_counter() - started
    print(f"done in {seconds:.1f} s")
    if args.json:
        emit_json({"command": "why", "model": subject.name, "family": "gpt", **report_dict(report),
                   "files": [str(f) for f in files], "seconds": seconds})  # fmt: skip


def _draw(report, tokenizer, out_dir: Path, name: str) -> list[Path]:
    import numpy as np

    from kqv.inspect.attention import token_label, token_texts
    from kqv.viz.why import plot_contributions, plot_head_scores, plot_lens, plot_patching, plot_token_shading

    q, r = report.question, report.results
    about = f"'{token_label(q.target_text)}' vs '{token_label(q.other_text)}' after '{q.labels[q.position]}'"
    files = []
    if "lens" in r:
        lens = r["lens"]
        top = lens.top_ids[:, :, 0].tolist()
        texts = [token_texts(tokenizer, row) for row in top]
        title = f"logit lens of {name}: top token per cell, colour P(target)"
        probs = np.asarray(lens.target_prob.double())
        files.append(plot_lens(lens.rows, q.tokens, texts, probs, out_dir / "lens.png",
                               f"P('{token_label(q.target_text)}')", title, q.position))  # fmt: skip
    if "patch" in r:
        p = r["patch"]
        resid, heads, mlp = (np.asarray(t.double()) for t in (p.resid, p.heads, p.mlp))
        files.append(plot_patching(resid, heads, mlp, q.tokens, out_dir / "patch.png", f"activation patching, {about}"))
    if "dla" in r:
        d = r["dla"]
        files.append(plot_contributions(d.labels, np.asarray(d.values.double()), out_dir / "dla.png",
                                        f"direct logit attribution, {about} (sum {d.total:+.2f})"))  # fmt: skip
    rows = {}
    if "rollout" in r:
        rows["rollout"] = np.asarray(r["rollout"].final[q.position].double())
    if "grad" in r:
        for label, attribution in r["grad"].items():
            rows[label] = np.asarray(attribution.scores.double())
    if rows:
        files.append(plot_token_shading(q.tokens, rows, out_dir / "tokens.png", f"attributions of {about}"))
    if "heads" in r:
        h = r["heads"]
        scores = {k: np.asarray(getattr(h, k).double()) for k in ("previous", "duplicate", "induction", "first")}
        files.append(
            plot_head_scores(scores, out_dir / "heads.png", f"head detectors of {name} (repeated random tokens)")
        )
    return files


def print_answers(report) -> None:
    """The side-by-side table: one line per method (its summary without the repeated method name), then notes."""
    width = max([len("method"), *(len(a.method) for a in report.answers)])
    print(f"{'method'.ljust(width)}  answer")
    for a in report.answers:
        shown = a.summary.split(": ", 1)[-1] if a.summary.startswith(a.method) else a.summary
        print(f"{a.method.ljust(width)}  {shown}")
    for note in report.notes:
        print(f"note: {note}")


def _out_dir(args, subject) -> Path:
    """--out, or beside kqv inspect's folder: RUN/why, runs/why-PRESET."""
    if args.out:
        return Path(args.out)
    default = subject.default_out
    return (
        default.parent / "why"
        if default.name == "inspect"
        else default.with_name(default.name.replace("inspect", "why"))
    )
