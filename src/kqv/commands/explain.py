"""`kqv explain`: one forward pass, tensor by tensor, with parameter counts and FLOPs (step 5)."""

from kqv.commands._common import add_command, add_json_flag, emit_json
from kqv.errors import UserError

DEFAULT_TEXT = "The pizza came out of the oven and it tasted good"
DEFAULT_TARGET = "La pizza salió del horno y sabía bien"  # its Spanish, the decoder's input for a translation model
FALLBACK_TEXT = "First Citizen: Before we proceed any further, hear me speak."  # for a char vocabulary without 'z'


def register(groups) -> None:
    parser = add_command(
        groups,
        "explain",
        "walk one forward pass: every tensor's name, shape and meaning, each module's parameters, FLOPs per token",
        "  kqv explain --preset nanogpt-cpu                  # a GPT preset with random weights\n"
        "  kqv explain --preset translate/small              # the encoder-decoder Transformer\n"
        "  kqv explain runs/gpt --text 'ROMEO: But soft'     # a trained run (gpt or translation)\n"
        "  kqv explain runs/translate --text 'In the beginning' --target 'En el principio' --json\n",
        run_explain,
    )
    parser.add_argument("run", nargs="?", help="a run directory from `kqv gpt train` or `kqv translate train`")
    parser.add_argument(
        "--preset",
        help="a preset with random weights instead of a run: NAME (GPT: default, nanogpt-cpu, tiny) or "
        "translate/NAME (translate/tiny, translate/small, translate/base); default: default",
    )
    parser.add_argument("--text", help=f"the input (translation: the source sentence); default {DEFAULT_TEXT!r}")
    parser.add_argument(
        "--target", help="translation only: the decoder's input after <s> (default: the model's own translation)"
    )
    add_json_flag(parser)


def _gpt_input(tokenizer, text: str | None, limit: int) -> tuple[str, list[int], str]:
    """-> (the text, its ids, a note) for a GPT. Without --text: DEFAULT_TEXT, or for a char
    vocabulary that lacks some of its characters FALLBACK_TEXT, or else the vocabulary's own characters."""
    from kqv.tokenizer import UnknownTokenError

    note = ""
    if text is None:
        for candidate in (DEFAULT_TEXT, FALLBACK_TEXT):
            try:
                text, ids = candidate, tokenizer.encode(candidate)
                break
            except UnknownTokenError:
                continue
        else:  # only a char tokenizer raises UnknownTokenError
            text = "".join(c for c in tokenizer.chars if c.isprintable())
            ids, note = tokenizer.encode(text), " (the vocabulary's own characters)"
    else:
        ids = tokenizer.encode(text)
    if not ids:
        raise UserError("--text is empty; give some text to look inside, e.g. --text 'ROMEO: But soft'")
    if len(ids) > limit:
        ids = ids[:limit]
        text, note = tokenizer.decode(ids), note + f" (cropped to block_size = {limit})"
    return text, ids, note


def run_explain(args) -> None:
    from kqv.inspect.explain import explain_gpt
    from kqv.inspect.patterns import load_subject

    if args.run is not None and args.preset is not None:
        raise UserError("give a run directory or --preset NAME, not both")
    subject = load_subject(run=args.run, preset=None if args.run else (args.preset or "default"))
    model, tokenizer = subject.model, subject.tokenizer
    vocab_note = f"{tokenizer.kind} tokenizer"
    if subject.family == "gpt":
        if args.target is not None:
            raise UserError("--target is for translation models; a GPT reads only --text")
        text, ids, note = _gpt_input(tokenizer, args.text, model.config.block_size)
        explanation = explain_gpt(model, ids, vocab_note)
        header = f"text: {text!r} -> T = {len(ids)} tokens{note}"
        inputs = {"text": text, "tokens": len(ids)}
    else:
        explanation, inputs, header = _translation(model, tokenizer, args, vocab_note)
    _print(subject.name, subject.family, header, explanation)
    if args.json:
        emit_json({"command": "explain", "model": subject.name, **inputs, **explanation.to_dict()})


def _translation(model, tokenizer, args, vocab_note):
    from kqv.generate.beam import greedy_decode
    from kqv.inspect.explain import explain_translation

    c = model.config
    text = DEFAULT_TEXT if args.text is None else args.text
    if not text.strip():
        raise UserError("--text is empty; give a sentence to translate, e.g. --text 'The pizza came out of the oven'")
    src_ids = tokenizer.encode(text)[: c.max_len - 1] + [c.eos_id]  # as the model reads a source: ids + </s>
    target = args.target if args.target is not None else DEFAULT_TARGET if args.text is None else None
    if target is None:
        import torch

        with torch.no_grad():
            tgt_ids = greedy_decode(model, torch.tensor([src_ids], device=next(model.parameters()).device))[0].tokens
        target = tokenizer.decode(tgt_ids)
        how = "the model's own greedy translation"
    else:
        tgt_ids = tokenizer.encode(target)
        how = "given" if args.target is not None else "the Spanish of the default text"
    tgt_in = [c.bos_id, *tgt_ids][: c.max_len]  # teacher forcing: <s> + target
    explanation = explain_translation(model, src_ids, tgt_in, vocab_note)
    header = (
        f"source: {text!r} -> S = {len(src_ids)} tokens with </s>\n"
        f"target: {target!r} ({how}) -> T = {len(tgt_in)} tokens with <s>"
    )
    inputs = {"text": text, "target": target, "source_tokens": len(src_ids), "target_tokens": len(tgt_in)}
    return explanation, inputs, header


def _shape(shape) -> str:
    return str(tuple(shape))  # (1, 4, 11, 32); (32,) for a vector


def _print(name: str, family: str, header: str, e) -> None:
    what = "a GPT" if family == "gpt" else "an encoder-decoder Transformer"
    print(f"kqv explain: one forward pass of {what}, {name}")
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

    length = "T" if family == "gpt" else "S, T"
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
    keys = "T" if family == "gpt" else "T (decoder self-attention)"
    print(f"  ({keys} keys per query is the last token's count: a causal model's token t sees t + 1 keys)")
