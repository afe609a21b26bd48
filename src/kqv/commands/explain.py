"""`kqv explain`: one forward pass, tensor by tensor, with parameter counts and FLOPs (step 5)."""

from kqv.commands._common import add_command, add_json_flag, emit_json
from kqv.errors import UserError

DEFAULT_TEXT = "The pizza came out of the oven and it tasted good"  # kqv.families.base.PIZZA


def register(groups) -> None:
    parser = add_command(
        groups,
        "explain",
        "walk one forward pass: every tensor's name, shape and meaning, each module's parameters, FLOPs per token",
        "  kqv explain --preset nanogpt-cpu                  # a GPT preset with random weights\n"
        "  kqv explain --preset translation/small            # the encoder-decoder Transformer\n"
        "  kqv explain runs/gpt --text 'ROMEO: But soft'     # a trained run (gpt or translation)\n"
        "  kqv explain runs/translate --text 'In the beginning' --target 'En el principio' --json\n",
        run_explain,
    )
    parser.add_argument("run", nargs="?", help="a run directory from `kqv gpt train` or `kqv translate train`")
    parser.add_argument(
        "--preset",
        help="a preset with random weights instead of a run: NAME (GPT: default, nanogpt-cpu, tiny) or "
        "translation/NAME (translation/tiny, translation/small, translation/base); default: default",
    )
    parser.add_argument("--text", help=f"the input (translation: the source sentence); default {DEFAULT_TEXT!r}")
    parser.add_argument(
        "--target", help="translation only: the decoder's input after <s> (default: the model's own translation)"
    )
    add_json_flag(parser)


def run_explain(args) -> None:
    from kqv.families import load_subject

    if args.run is not None and args.preset is not None:
        raise UserError("give a run directory or --preset NAME, not both")
    subject = load_subject(run=args.run, preset=None if args.run else (args.preset or "default"))
    family, model, tokenizer = subject.family, subject.model, subject.tokenizer
    given = family.explain_input(model, tokenizer, args.text, args.target)
    explanation = family.explain(model, given.text_ids, given.target_ids, f"{tokenizer.kind} tokenizer")
    _print(subject.name, family, given.header, explanation)
    if args.json:
        emit_json({"command": "explain", "model": subject.name, **given.inputs, **explanation.to_dict()})


def _shape(shape) -> str:
    return str(tuple(shape))  # (1, 4, 11, 32); (32,) for a vector


def _print(name: str, family, header: str, e) -> None:
    print(f"kqv explain: one forward pass of {family.title}, {name}")
    print(header)
    print("\nnotation")
    for symbol, value, meaning in e.notation:
        print(f"  {symbol:<3} = {value:<6} {meaning}")

    print("\ntensors, in the order the forward pass makes them (the hook point names of kqv.inspect.cache)")
    wn = max(len(r.name) for r in e.tensors)
    ws = max(len(_shape(r.shape)) for r in e.tensors)
    for r in e.tensors:
        print(f"  {r.name:<{wn}}  {_shape(r.shape):<{ws}}  {r.meaning}")

    print("\nparameters, module by module (a matrix shared by two modules counts once)")
    wm = max(len(r.module) for r in e.parameters)
    shapes = [", ".join(f"{k} {_shape(v)}" for k, v in r.shapes.items()) for r in e.parameters]
    wp = max(map(len, shapes))
    for r, s in zip(e.parameters, shapes, strict=True):
        print(f"  {r.module:<{wm}}  {s:<{wp}}  {r.count:>12,}" + (f"  {r.note}" if r.note else ""))
    print(f"  {'total':<{wm}}  {'':<{wp}}  {e.total_parameters:>12,}  = sum(p.numel() for p in model.parameters())")

    length = family.lengths
    print(
        "\nforward FLOPs per token (a matmul with an (m, n) weight: 2·m·n per token; attention also 2·Tk·C for "
        "q·kᵀ and 2·Tk·C for pattern·V per layer; embeddings, LayerNorms, softmax, adds left out)"
    )
    wf = max(len(r.part) for r in e.flops)
    wu = max(len(r.per) for r in e.flops)
    wq = max(len(r.formula) for r in e.flops)
    limit = f"{length} = {e.limit}"
    print(f"  {'part':<{wf}}  {'per':<{wu}}  {'formula':<{wq}}  {'this input':>14}  {limit:>14}")
    for r in e.flops:
        print(f"  {r.part:<{wf}}  {r.per:<{wu}}  {r.formula:<{wq}}  {r.flops:>14,}  {r.flops_at_limit:>14,}")
    for per in dict.fromkeys(r.per for r in e.flops):
        now = sum(r.flops for r in e.flops if r.per == per)
        at_limit = sum(r.flops_at_limit for r in e.flops if r.per == per)
        print(f"  {'total per ' + per:<{wf}}  {'':<{wu}}  {'':<{wq}}  {now:>14,}  {at_limit:>14,}")
    keys = family.self_keys
    print(f"  ({keys} keys per query is the last token's count: a causal model's token t sees t + 1 keys)")
