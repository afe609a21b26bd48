"""`kqv serve`: a local web page to explore models — tokens, attention, next-token probabilities, generation."""

import sys

from kqv.commands._common import add_command
from kqv.errors import UserError

EXAMPLES = """\
  kqv serve runs/gpt                               # then open http://127.0.0.1:8000
  kqv serve runs/gpt runs/kitchen runs/translate   # several runs, chosen on the page
  kqv serve --preset tiny --preset translation/tiny  # random weights, no training needed
  kqv serve runs/gpt --port 0                      # any free port (printed)
"""


def register(groups) -> None:
    parser = add_command(
        groups,
        "serve",
        "step 5: a local web page to explore runs — tokens, attention per layer and head, next-token "
        "probabilities, generation (JSON API at /api, described at /openapi.json)",
        EXAMPLES,
        run_serve,
    )
    parser.usage = "kqv serve RUN [RUN ...] [options]\n       kqv serve --preset NAME [options]"
    parser.add_argument(
        "runs", nargs="*", metavar="RUN", help="run directories from `kqv gpt train` or `kqv translate train`"
    )
    parser.add_argument(
        "--preset",
        action="append",
        default=[],
        metavar="NAME",
        help="also serve a preset with random weights (NAME for a GPT, translation/NAME for translation); repeatable",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; anything else lets others in)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the --preset weights (default 0)")


def load_explorers(runs: list[str], presets: list[str], seed: int = 0):
    """One Explorer per run and preset, with short unique ids (the folder name; preset:NAME)."""
    from pathlib import Path

    from kqv.families import load_subject
    from kqv.serve.explorer import Explorer

    if not runs and not presets:
        raise UserError("give at least one run directory (e.g. kqv serve runs/gpt) or --preset NAME")
    explorers, taken = [], set()
    for source, is_preset in [*((r, False) for r in runs), *((p, True) for p in presets)]:
        subject = load_subject(preset=source, seed=seed) if is_preset else load_subject(run=source)
        base = f"preset:{source}" if is_preset else (Path(source).resolve().name or source)
        model_id, n = base, 2
        while model_id in taken:
            model_id, n = f"{base}-{n}", n + 1
        taken.add(model_id)
        explorers.append(Explorer(model_id, subject))
    return explorers


def run_serve(args) -> int:
    from kqv.serve.app import create_app
    from kqv.serve.server import is_loopback, listen, serve_forever, url_of

    explorers = load_explorers(args.runs, args.preset, args.seed)
    sock = listen(args.host, args.port)
    if not is_loopback(args.host):
        print(f"kqv serve: listening on {args.host}: other machines can reach this page", file=sys.stderr)
    print(f"kqv serve: {url_of(sock)}/  serving {', '.join(e.id for e in explorers)}  (Ctrl+C stops)", flush=True)
    serve_forever(create_app(explorers), sock)
    return 0
