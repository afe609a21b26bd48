"""`kqv translate …`: the encoder–decoder Transformer, trained to translate and scored with BLEU (step 4)."""

import sys

from kqv.commands._common import add_command, add_group, add_json_flag, add_steps_flag, emit_json, positive_int
from kqv.errors import UserError

SUBCOMMANDS = ("train", "eval", "text")


def register(groups) -> None:
    sub = add_group(
        groups,
        "translate",
        "step 4: the original encoder-decoder Transformer, trained to translate, scored with BLEU",
        "  kqv translate train && kqv translate eval runs/translate\n"
        "  kqv translate runs/translate 'In the beginning, God created the heavens and the earth.'\n",
    )

    train = add_command(
        sub,
        "train",
        "train a translation Transformer (default: English→Spanish verses, ≤ 20 min on 2 cores)",
        "  kqv translate train                                   # the default job\n"
        "  kqv translate train --data pairs.tsv --src-col 2 --tgt-col 1 --out runs/es-en\n"
        "  kqv translate train --src-file multi30k/train.de.gz --tgt-file multi30k/train.en.gz --out runs/de-en\n"
        "  kqv translate train --resume runs/translate           # continue a stopped run exactly\n",
        run_train,
    )
    train.add_argument("--preset", default="small", help="small (2 CPU cores) or base (the paper's); default small")
    train.add_argument("--data", metavar="PATH.tsv", help="tab-separated pairs, src<TAB>tgt[<TAB>…] (plain or .gz)")
    train.add_argument("--src-col", type=positive_int, default=1, help="source column of --data, from 1 (default 1)")
    train.add_argument("--tgt-col", type=positive_int, default=2, help="target column of --data (default 2)")
    train.add_argument("--src-file", help="source sentences, one per line (Multi30k layout), with --tgt-file")
    train.add_argument("--tgt-file", help="their translations, line by line")
    train.add_argument("--reverse", action="store_true", help="translate the other way (target → source)")
    train.add_argument("--out", help="run directory (default: runs/translate, or runs/translate-2, …)")
    add_steps_flag(train)
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. n_embd=512, norm_first=true, train.lr=5e-4 (repeatable)",
    )  # fmt: skip
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last state")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    train.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16"],
        help="auto: bf16 autocast where the hardware has fast bf16 (CUDA, AVX-512 BF16 CPUs), else fp32",
    )  # fmt: skip
    train.add_argument("--stop-at", type=positive_int, help=_hidden())
    add_json_flag(train)

    evaluate = add_command(
        sub,
        "eval",
        "BLEU, chrF (sacrebleu) and perplexity on the run's held-out test pairs, with example translations",
        "  kqv translate eval runs/translate --beam 4 --alpha 0.6\n"
        "  kqv translate eval runs/de-en --src-file multi30k/test_2016_flickr.de.gz "
        "--tgt-file multi30k/test_2016_flickr.en.gz\n",
        run_eval,
    )
    evaluate.add_argument("run", help="a run directory written by `kqv translate train`")
    evaluate.add_argument("--beam", type=positive_int, default=4, help="beam size; 1 = greedy (default 4)")
    evaluate.add_argument("--alpha", type=float, default=0.6, help="GNMT length penalty α (default 0.6)")
    evaluate.add_argument("--data", metavar="PATH.tsv", help="score these pairs instead of the run's test.tsv")
    evaluate.add_argument("--src-col", type=positive_int, default=1)
    evaluate.add_argument("--tgt-col", type=positive_int, default=2)
    evaluate.add_argument("--src-file", help="score these line-aligned files instead (with --tgt-file)")
    evaluate.add_argument("--tgt-file")
    evaluate.add_argument("--examples", type=int, default=5, help="example translations to show (default 5)")
    evaluate.add_argument("--out", metavar="FILE", help="also write every translation to FILE, one per line")
    add_json_flag(evaluate)

    text = add_command(
        sub,
        "text",
        "translate sentences (arguments, or lines from stdin); `kqv translate RUN …` is short for this",
        "  kqv translate runs/translate 'In the beginning, God created the heavens and the earth.'\n"
        "  kqv translate text runs/translate --beam 1 < sentences.txt\n",
        run_text,
    )
    text.add_argument("run", help="a run directory written by `kqv translate train`")
    text.add_argument("sentences", nargs="*", help="sentences to translate (default: read lines from stdin)")
    text.add_argument("--beam", type=positive_int, default=4, help="beam size; 1 = greedy (default 4)")
    text.add_argument("--alpha", type=float, default=0.6, help="GNMT length penalty α (default 0.6)")
    add_json_flag(text)


def shorthand(argv: list[str]) -> list[str]:
    """`kqv translate RUN "sentence"` -> `kqv translate text RUN "sentence"`."""
    if len(argv) >= 2 and argv[0] == "translate" and argv[1] not in SUBCOMMANDS and not argv[1].startswith("-"):
        return [argv[0], "text", *argv[1:]]
    return argv


def _hidden():
    import argparse

    return argparse.SUPPRESS  # --stop-at N: stop after step N as if killed (for tests of --resume)


def run_train(args) -> None:
    from kqv.data.parallel import DataSpec
    from kqv.train.translate_run import train_translation

    data = DataSpec(args.data, args.src_col, args.tgt_col, args.src_file, args.tgt_file, args.reverse)
    result, run_dir, summary = train_translation(
        preset=args.preset,
        data=data,
        out=args.out,
        max_iters=args.steps,
        overrides=args.overrides,
        resume=args.resume,
        device=args.device,
        precision=args.precision,
        stop_at=args.stop_at,
    )
    print(
        f"done: {summary['steps']} steps ({summary['epochs']:.1f} epochs), best val loss "
        f"{summary['best_val_loss']:.4f} (perplexity {summary['best_val_perplexity']:.2f}), "
        f"{summary['tokens_per_second']:,.0f} target tok/s, {summary['wall_seconds']:.0f} s wall; run in {run_dir}"
    )
    print(f"score it: kqv translate eval {run_dir}")
    if args.json:
        emit_json({"command": "translate train", **summary, "log": result.log})


def _pairs_from_args(args):
    from kqv.data.parallel import DataSpec

    if args.data is None and args.src_file is None and args.tgt_file is None:
        return None
    return DataSpec(args.data, args.src_col, args.tgt_col, args.src_file, args.tgt_file).read()


def run_eval(args) -> None:
    from kqv.evaluate.bleu import evaluate_translation
    from kqv.families.translation import TRANSLATION_FAMILY
    from kqv.fileio import atomic_write_bytes

    run = TRANSLATION_FAMILY.load(args.run)
    pairs = _pairs_from_args(args)
    result = evaluate_translation(run, pairs, beam=args.beam, alpha=args.alpha, n_examples=max(0, args.examples))
    decoding = "greedy" if args.beam == 1 else f"beam {args.beam}, α {args.alpha}"
    print(f"{args.run}: {result['pairs']} pairs, {decoding}")
    print(f"  BLEU {result['bleu']:.2f}   {result['bleu_signature']}")
    print(f"       {result['bleu_detail']}")
    print(f"  chrF {result['chrf']:.2f}   {result['chrf_signature']}")
    print(f"  perplexity {result['perplexity']:.3f} (plain NLL {result['nll']:.4f} nats over "
          f"{result['target_tokens']:,} target tokens)")  # fmt: skip
    for ex in result["examples"]:
        print(f"\n  source:      {ex['source']}\n  reference:   {ex['reference']}\n  translation: {ex['translation']}")
    if args.out:
        atomic_write_bytes(args.out, "".join(h + "\n" for h in result["hypotheses"]).encode())
    if args.json:
        emit_json(
            {"command": "translate eval", "run": args.run, **{k: v for k, v in result.items() if k != "hypotheses"}}
        )


def run_text(args) -> None:
    from kqv.families.translation import TRANSLATION_FAMILY
    from kqv.generate.translate import translate

    sentences = args.sentences or [line.strip() for line in sys.stdin if line.strip()]
    if not sentences:
        raise UserError("nothing to translate: give sentences as arguments or lines on stdin")
    run = TRANSLATION_FAMILY.load(args.run)
    translations = translate(run, sentences, beam=args.beam, alpha=args.alpha)
    if args.json:
        emit_json({"command": "translate", "run": args.run, "translations": translations})
    else:
        for line in translations:
            print(line)
