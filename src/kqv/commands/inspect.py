"""`kqv inspect`: where each token looks — attention heatmaps and per-head summaries (step 5).

One forward pass with the patterns kept (kqv.inspect.patterns), read as numbers
(kqv.inspect.attention) and drawn (kqv.viz.attention). Everything printed here comes from
those library functions; this module only chooses, prints and writes.
"""

import time
from dataclasses import asdict
from pathlib import Path

from kqv.commands._common import add_command, add_json_flag, emit_json, positive_int
from kqv.errors import UserError

EXAMPLES = """\
  kqv inspect runs/gpt "The pizza came out of the oven and it tasted good" --query-token it
  kqv inspect runs/gpt "The pizza came out of the oven and it tasted" --query-token it --words pizza,oven
  kqv inspect runs/gpt "The pizza came out of the oven and it tasted" --query-token it --ablate 0.1 --ablate 1.0
  kqv inspect runs/gpt "ROMEO: But soft" --layer 2 --head 1   # one head large, with its tokens
  kqv inspect runs/translate "The pizza came out of the oven" --attention cross --json
  kqv inspect --preset tiny "hello there"                 # a GPT preset with random weights
  kqv inspect --preset translation/tiny "good morning"    # a translation preset, random weights
"""


def register(groups) -> None:
    parser = add_command(
        groups,
        "inspect",
        "step 5: look inside — attention heatmaps (PNG) and per-head summaries of a run, or of a preset with "
        "random weights",
        EXAMPLES,
        run_inspect,
    )
    parser.usage = "kqv inspect RUN TEXT [options]\n       kqv inspect --preset NAME TEXT [options]"
    parser.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help="a run directory from `kqv gpt train` or `kqv translate train` (leave it out with --preset)",
    )
    parser.add_argument("text", nargs="?", metavar="TEXT", help="the text to look at (the source, for translation)")
    parser.add_argument(
        "--preset",
        metavar="NAME",
        help="instead of a run: random weights from a preset, NAME for a GPT (tiny, default, …) or translation/NAME "
        "for the encoder–decoder; shows the shapes without training",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the random weights with --preset (default 0)"
    )
    parser.add_argument(
        "--layer", type=int, metavar="L", help="draw this layer's heads large (with --head: just that head)"
    )
    parser.add_argument("--head", type=int, metavar="H", help="draw this head large (of every layer, or of --layer)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--query-token",
        metavar="WORD",
        help="the query to report: WORD as a whole word of the text, case-insensitive; its last token, at its last "
        "occurrence (default: the last token)",
    )
    which.add_argument(
        "--query-index", type=int, metavar="N", help="the query to report by position (0-based; -1 = the last token)"
    )
    parser.add_argument(
        "--attention",
        choices=["encoder", "decoder", "cross"],
        help="translation runs: only this kind (default: all three)",
    )
    parser.add_argument(
        "--target",
        metavar="TEXT",
        help="translation runs: the decoder's text (default: the model's own greedy translation)",
    )
    parser.add_argument(
        "--top", type=positive_int, default=3, metavar="K", help="keys listed per head for the query (default 3)"
    )
    parser.add_argument(
        "--words",
        metavar="W1,W2",
        help="who looks where: also list the heads that look most from the query at these words of the text "
        "(whole words, case-insensitive; by default the 3 words before the query that some head looks at most)",
    )
    parser.add_argument(
        "--ablate",
        action="append",
        default=[],
        metavar="L.H",
        help="GPT runs: remove head H of layer L (its output z set to 0) and show how the next-token probabilities "
        "at the query change; repeat it for more heads (each alone, then all together)",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="folder for the PNGs (default: RUN/inspect, or runs/inspect-PRESET)"
    )
    add_json_flag(parser)


def _run_and_text(args) -> tuple[str | None, str]:
    given = [a for a in (args.run, args.text) if a is not None]
    if args.preset is not None:
        if len(given) != 1:
            raise UserError('with --preset give only the text: kqv inspect --preset tiny "The pizza came out …"')
        return None, given[0]
    if len(given) != 2:
        raise UserError(
            'give a run directory and a text: kqv inspect runs/gpt "The pizza came out …" '
            '(or a preset with random weights: kqv inspect --preset tiny "…")'
        )
    return given[0], given[1]


def _pick_query(maps, args) -> tuple[int | None, str, str]:
    """-> (the query row to report, how it was chosen, "") or (None, a short note, the full error) for this side."""
    from kqv.inspect.attention import find_query, resolve_index

    side = maps.query_side
    try:
        if args.query_index is not None:
            return resolve_index(len(maps.query_texts), args.query_index, side), f"--query-index {args.query_index}", ""
        if args.query_token is not None:
            match = find_query(maps.query_texts, args.query_token, side)
            many = f"the last of {match.count} occurrences" if match.count > 1 else "its only occurrence"
            return match.index, f"{args.query_token.strip()!r}, {many}", ""
    except UserError as exc:
        asked = f"--query-index {args.query_index}" if args.query_index is not None else repr(args.query_token.strip())
        return None, f"{asked} is not in the {side}", str(exc)
    return maps.default_query, f"the last token of the {side}" if side != "source" else "the last token before </s>", ""


def _check_range(all_maps, args) -> None:
    for kind, maps in all_maps.items():
        L, nh = maps.patterns.shape[:2]
        if args.layer is not None and not 0 <= args.layer < L:
            raise UserError(f"--layer {args.layer} is out of range: the {kind} attention has {L} layers (0 … {L - 1})")
        if args.head is not None and not 0 <= args.head < nh:
            raise UserError(f"--head {args.head} is out of range: the {kind} attention has {nh} heads (0 … {nh - 1})")


def _key_text(texts: list[str], index: int, standalone: frozenset[str]) -> str:
    """A key as shown in the table: its label, and for a piece of a word the word ("'z'(pizza)")."""
    from kqv.inspect.attention import token_label, word_around

    own = texts[index]
    word = word_around(texts, index, standalone).strip()
    shown = f"'{token_label(own)}'"
    return f"{shown}({word})" if word and word != own.strip() else shown


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Columns two spaces apart; the columns in `right` right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "  ".join(cells).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _numbered(texts: list[str]) -> str:
    """Tokens with their positions, for --query-index: "0:T 1:h 2:e 3:␣"."""
    from kqv.inspect.attention import token_label

    return " ".join(f"{i}:{token_label(t)}" for i, t in enumerate(texts))


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _parse_words(option: str | None, sides: dict[str, list[str]], specials: frozenset[str]) -> list[str]:
    """--words "pizza,oven" -> ["pizza", "oven"], each a whole word of the text (any side), else a UserError."""
    from kqv.inspect.attention import words_of

    if option is None:
        return []
    asked = [w.strip() for w in option.split(",") if w.strip()]
    if not asked:
        raise UserError("--words is empty; give words of the text, e.g. --words pizza,oven")
    known = {w.text.lower() for texts in sides.values() for w in words_of(texts, specials)}
    for word in asked:
        if word.lower() not in known:
            shown = ", ".join(sorted(known)) or "none"
            raise UserError(f"--words: {word!r} is not a whole word of the text (its words: {shown})")
    return asked


def who_looks_where(maps, query: int, asked: list[str], k: int = 3) -> tuple[list[str], list[dict]]:
    """The "who looks where" lines and JSON of one query: per word, the heads that put the most weight on it."""
    from kqv.inspect.attention import pick_words, word_around, word_looks, words_before, words_of

    if maps.self_attention:
        words, where = words_before(maps.key_texts, query, maps.specials), "before it"
    else:
        words, where = words_of(maps.key_texts, maps.specials), "of the source"
    looks = word_looks(maps.patterns, query, words)
    picked = pick_words(looks, k, asked)
    source = word_around(maps.query_texts, query, maps.specials).strip() or maps.query_texts[query]
    lines = [
        f"who looks where: per word {where}, the heads that look at it most from {source!r} "
        f"(layer.head (weight), a word's tokens and occurrences summed; the {k} words with the most, and --words):"
    ]
    if not picked:
        lines.append(f"  no words {where}")
    for look in picked:
        heads = ", ".join(f"{h.layer}.{h.head} ({h.weight:.2f})" for h in look.heads[:k])
        lines.append(f"  heads that look from {source!r} at {look.word!r}: {heads}")
    seen = {w.word for w in looks}
    for word in asked:
        if word.lower() not in seen:
            lines.append(f"  {word.lower()!r} is not a word {where} here")
    entry = [
        {
            "word": look.word,
            "tokens": list(look.tokens),
            "asked": look.word in {w.lower() for w in asked},
            "heads": [asdict(h) for h in look.heads],
        }
        for look in picked
    ]
    return lines, entry


def describe_kind(
    kind: str, maps, query: int | None, how: str, top: int, asked: list[str] | None = None
) -> tuple[list[str], dict]:
    """The printed lines and the JSON entry of one kind of attention."""
    import math

    from kqv.inspect.attention import check_pattern, summarize, token_label, top_attended, word_around
    from kqv.viz.attention import TITLES

    check_pattern(maps.patterns, maps.allowed())  # what is reported and drawn are real distributions
    L, nh, Tq, Tk = maps.patterns.shape
    sides = f"{Tq} tokens" if kind in ("self", "encoder", "decoder") else f"{Tq} target queries × {Tk} source keys"
    lines = [f"== {TITLES[kind]}, mask {maps.mask}: {L} layer{'s' * (L > 1)} × {nh} heads, {sides} =="]
    labels = [token_label(t) for t in maps.key_texts]
    entry = {"mask": maps.mask, "query_tokens": [token_label(t) for t in maps.query_texts], "key_tokens": labels}
    tops = []
    if query is None:
        lines.append(f"no query here: {how} (choose one with --query-index N)")
        entry["query"] = None
    else:
        word = word_around(maps.query_texts, query, maps.specials).strip()
        label = token_label(maps.query_texts[query])
        in_word = f" in {word!r}" if word and word != maps.query_texts[query].strip() else ""
        lines.append(f"query: token {query} '{label}'{in_word} ({how}); the keys it attends to most, per head:")
        entry["query"] = {"index": query, "token": label, "word": word, "chosen_by": how}
        rows = []
        for layer in range(L):
            for head in range(nh):
                keys = top_attended(maps.patterns[layer, head, query], labels, top)
                tops.append({"layer": layer, "head": head, "keys": [asdict(k) for k in keys]})
                cells = [f"{_key_text(maps.key_texts, k.index, maps.specials)} {k.weight:.2f}" for k in keys]
                rows.append([str(layer), str(head), *cells])
        ordinal = ["1st", "2nd", "3rd"] + [f"{i}th" for i in range(4, top + 1)]
        lines += _table(["layer", "head", *ordinal[: len(rows[0]) - 2]], rows, {0, 1})
        if asked is not None:
            where_lines, entry["words"] = who_looks_where(maps, query, asked)
            lines += where_lines
    entry["top"] = tops
    summaries = summarize(maps.patterns, maps.self_attention)
    entry["summaries"] = [asdict(s) for s in summaries]
    if maps.mask == "none":
        uniform = f"uniform over all {Tk} keys = {math.log(Tk):.2f}"
    else:
        uniform = f"uniform over the keys a query may see ≤ {math.log(Tk):.2f}"
    lines.append(
        f"per head (means over queries; entropy in nats, 0 = one key, {uniform}; "
        "prev / first / self: weight on the previous token, the first token, itself):"
    )
    rows = [
        [str(s.layer), str(s.head), f"{s.entropy:.3f}"]
        + [_number(v, 2) for v in (s.prev_token, s.first_token, s.self_token)]
        for s in summaries
    ]
    lines += _table(["layer", "head", "entropy", "prev", "first", "self"], rows, {0, 1, 2, 3, 4, 5})
    return lines, entry


def _parse_ablate(specs: list[str], family, model) -> list[tuple[int, int]]:
    """--ablate "0.1" … -> [(0, 1), …] without repeats; GPT runs only, each layer and head in range."""
    if not specs:
        return []
    if family.reads_target:
        raise UserError(f"--ablate is for GPT runs; this run is {family.title}")
    L, nh = model.config.n_layer, model.config.n_head
    heads = []
    for spec in specs:
        layer, dot, head = spec.strip().partition(".")
        if not (dot and layer.lstrip("-").isdigit() and head.lstrip("-").isdigit()):
            raise UserError(f"--ablate {spec!r}: give a layer and a head as L.H, e.g. --ablate 0.1")
        layer, head = int(layer), int(head)
        if not 0 <= layer < L:
            raise UserError(f"--ablate {spec}: layer {layer} is out of range: the model has {L} layers (0 … {L - 1})")
        if not 0 <= head < nh:
            raise UserError(f"--ablate {spec}: head {head} is out of range: each layer has {nh} heads (0 … {nh - 1})")
        heads.append((layer, head))
    return list(dict.fromkeys(heads))


def describe_ablation(subject, text: str, maps, query: int, heads: list[tuple[int, int]], k: int = 3):
    """The lines and JSON of --ablate: the next-token probabilities at the query, with each head removed (then all)."""
    from kqv.inspect.attention import next_token_probs, prob_changes, token_label, token_texts

    ids = subject.tokenizer.encode(text)
    label = lambda i: token_label(token_texts(subject.tokenizer, [i])[0])  # noqa: E731
    before = next_token_probs(subject.model, ids, query)
    runs = [[h] for h in heads] + ([heads] if len(heads) > 1 else [])
    lines = [
        f"removing heads (their z set to 0 at every position): the next token after token {query} "
        f"'{token_label(maps.query_texts[query])}', P before → after (the {k} most likely before, then after):"
    ]
    entry = {"query": query, "runs": []}
    for removed in runs:
        after = next_token_probs(subject.model, ids, query, removed)
        changes = prob_changes(before, after, label, k)
        names = ", ".join(f"{layer}.{head}" for layer, head in removed)
        shown = ", ".join(f"P('{c.token}') {c.before:.3f} → {c.after:.3f}" for c in changes)
        lines.append(f"ablating {names}: {shown}")
        entry["runs"].append({"heads": [list(h) for h in removed], "tokens": [asdict(c) for c in changes]})
    return lines, entry


SIDE_WORDS = {"text": "tokens", "source": "source tokens", "target": "decoder tokens"}


def run_inspect(args) -> None:
    from kqv.families import load_subject
    from kqv.inspect.attention import token_label
    from kqv.viz.attention import plot_grid, plot_head

    started = time.perf_counter()
    run, text = _run_and_text(args)
    subject = load_subject(run, args.preset, args.seed)
    family = subject.family
    if (args.attention or args.target is not None) and not family.reads_target:
        raise UserError(f"--attention and --target are for translation runs; {family.title} has one kind of attention")
    all_maps, target = family.attention_maps(subject.model, subject.tokenizer, text, args.target)
    sides = {maps.query_side: maps.query_texts for maps in all_maps.values()}  # text; or source, then target
    if args.attention:
        all_maps = {args.attention: all_maps[args.attention]}
    _check_range(all_maps, args)
    queries = {kind: _pick_query(maps, args) for kind, maps in all_maps.items()}
    if all(index is None for index, _, _ in queries.values()):
        raise UserError(next(iter(queries.values()))[2])  # found on no side: the first side's full message
    specials = frozenset().union(*(maps.specials for maps in all_maps.values()))
    asked = _parse_words(args.words, sides, specials)
    want_words = args.words is not None or args.query_token is not None or args.query_index is not None
    ablate = _parse_ablate(args.ablate, family, subject.model)

    out_dir = Path(args.out) if args.out else subject.default_out
    print(f"model: {subject.name} ({family.name})")
    for side, texts in sides.items():
        if side == "target":
            where = "--target" if args.target is not None else "the model's greedy translation"
            print(f"target ({where}): {target}")
        print(f"{SIDE_WORDS[side]} ({len(texts)}): {_numbered(texts)}")
    labels = {side: [token_label(t) for t in texts] for side, texts in sides.items()}
    tokens = labels["text"] if list(labels) == ["text"] else labels  # a GPT's one list; source and target

    result = {
        "command": "inspect",
        "run": run,
        "preset": args.preset,
        "model": family.name,
        "text": text,
        "target": target,
        "tokens": tokens,
        "out": str(out_dir),
        "attention": {},
    }
    files = []
    for kind, maps in all_maps.items():
        query, how, _ = queries[kind]
        lines, entry = describe_kind(kind, maps, query, how, args.top, asked if want_words else None)
        print()
        print("\n".join(lines))
        L, nh = maps.patterns.shape[:2]
        written = [plot_grid(maps, out_dir / f"{kind}-grid.png")]
        if args.layer is not None or args.head is not None:
            for layer in [args.layer] if args.layer is not None else range(L):
                for head in [args.head] if args.head is not None else range(nh):
                    written.append(plot_head(maps, layer, head, out_dir / f"{kind}-layer{layer}-head{head}.png", query))
        entry["files"] = [str(p) for p in written]
        files += entry["files"]
        result["attention"][kind] = entry
        print("wrote " + ", ".join(entry["files"]))
    if ablate:
        lines, result["ablate"] = describe_ablation(subject, text, all_maps["self"], queries["self"][0], ablate)
        print()
        print("\n".join(lines))
    seconds = time.perf_counter() - started
    print(f"done in {seconds:.1f} s")
    if args.json:
        emit_json({**result, "files": files, "seconds": seconds})
