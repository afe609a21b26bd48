"""`kqv why` on a translation run: print each method's answer for one output token, draw the (T, S) maps."""

import time
from pathlib import Path

from kqv.commands._common import emit_json


def run_translation_why(args, subject, text: str, methods: list[str], started: float, out_dir: Path) -> None:
    import numpy as np

    from kqv.commands.why import print_answers
    from kqv.inspect.attention import token_label
    from kqv.viz.why import plot_lens, plot_patching, plot_source_matrix

    report = subject.family.why(
        subject.model, subject.tokenizer, text, methods, translation=args.translation, query_token=args.query_token,
        query_index=args.query_index, target=args.target, other=args.other, corrupt=args.corrupt,
        corrupt_text=args.corrupt_text, steps=args.steps, top=args.top,
    )  # fmt: skip
    q, r = report.question, report.results
    src = [token_label(t) for t in q.src_tokens]
    tgt = [token_label(t) for t in q.tgt_tokens]
    print(f"model: {subject.name} (translation)")
    print(f"source tokens ({len(src)}): " + " ".join(f"{i}:{t}" for i, t in enumerate(src)))
    print(f"translation ({'--translation' if args.translation is not None else 'greedy'}): {q.translation}")
    print(f"decoder tokens ({len(tgt)}): " + " ".join(f"{i}:{t}" for i, t in enumerate(tgt)))
    print(
        f"question: at decoder position {q.position} '{tgt[q.position]}', '{token_label(q.target_text)}' against "
        f"'{token_label(q.other_text)}' ({q.how})"
    )
    if q.corrupt_text is not None:
        print(f"corrupted: {q.corrupt_text!r}")
    print()
    print_answers(report)
    winner, agree, disagree = report.agreement()
    if winner is not None:
        print(f"agreement: {len(agree)} of {len(agree) + len(disagree)} name *{q.word(winner)}* ({', '.join(agree)})")
    files = []
    # rows: the output token each decoder position predicts
    predicted = [token_label(t) for t in q.tgt_tokens[1:]] + ["(next)"]
    if "source" in r:
        a = r["source"]
        maps = {"cross-attention": a.cross, "rollout": a.rollout, "grad × input": a.grad_x_input,
                "integrated gradients": a.integrated}  # fmt: skip
        maps = {k: np.asarray(v.double().cpu()) for k, v in maps.items()}
        files.append(plot_source_matrix(predicted, src, maps, out_dir / "source.png",
                                        "which source tokens each output token comes from"))  # fmt: skip
    if "lens" in r:
        lens = r["lens"]
        from kqv.inspect.attention import token_texts

        texts = [token_texts(subject.tokenizer, row) for row in lens.top_ids[:, :, 0].tolist()]
        files.append(plot_lens(lens.rows, q.tgt_tokens, texts, np.asarray(lens.target_prob.double().cpu()),
                               out_dir / "lens.png", f"P('{token_label(q.target_text)}')",
                               f"decoder logit lens of {subject.name}: top token per cell", q.position))  # fmt: skip
    if "patch" in r:
        p = r["patch"]
        files.append(plot_patching(np.asarray(p.encoder.double().cpu()), np.asarray(p.cross_heads.double().cpu()), None,
                                   q.src_tokens, out_dir / "patch.png",
                                   f"patching the source, '{token_label(q.target_text)}' vs "
                                   f"'{token_label(q.other_text)}'",
                                   resid_label="encoder layer input"))  # fmt: skip
    print("wrote " + ", ".join(str(f) for f in files))
    seconds = time.perf_counter() - started
    print(f"done in {seconds:.1f} s")
    if args.json:
        emit_json({"command": "why", "model": subject.name, **report.to_dict(), "files": [str(f) for f in files],
                   "seconds": seconds})  # fmt: skip
