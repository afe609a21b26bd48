"""The `kqv` command line: a table of command groups, each a module in kqv.commands.

Every subcommand maps to plain library functions; the CLI only parses, prints and
turns a `UserError` into one line on stderr with exit code 2.
"""

import argparse
import contextvars
import difflib
import importlib
import os
import re
import signal
import sys
import threading

from kqv import __version__
from kqv.errors import Terminated, UserError

# name -> module in kqv.commands; each module has register(subparsers)
COMMAND_GROUPS = {
    "digits": "kqv.commands.digits",
    "gpt": "kqv.commands.gpt",
    "translate": "kqv.commands.translate",
    "bench": "kqv.commands.bench",
    "inspect": "kqv.commands.inspect",
    "explain": "kqv.commands.explain",
    "why": "kqv.commands.why",
    "exercise": "kqv.commands.exercise",
    "lab": "kqv.commands.lab",
    "serve": "kqv.commands.serve",
}

EXAMPLES = """\
examples:
  kqv digits train                      # train the digits network on the embedded 8x8 digits
  kqv digits train --data DIR --json    # MNIST-format IDX files; last stdout line is JSON
  kqv bench digits                      # matrix-form backprop vs a per-sample loop
  kqv gpt train                         # the main job: a GPT on tiny Shakespeare (~5 min on 2 cores)
  kqv gpt sample runs/gpt --prompt 'ROMEO:'
  kqv translate train                   # English->Spanish Transformer (<= 20 min on 2 cores)
  kqv translate eval runs/translate     # BLEU with beam search
  kqv inspect runs/gpt "ROMEO: wherefore art thou" --layer 0   # attention heatmaps of every head
  kqv explain --preset nanogpt-cpu      # every tensor of one forward pass, with its shape
  kqv why runs/kitchen "The pizza came out of the oven and it" --corrupt pizza=cake   # why: lens, patching, …
  kqv exercise start backprop           # write it yourself: a skeleton to fill in; kqv exercise check backprop.py
  kqv serve runs/gpt                    # a local web page: attention, next-token bars, generation
"""


_PARSING: contextvars.ContextVar[list] = contextvars.ContextVar("kqv_parsing")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), not usage + error, naming the help of the
    subcommand where it happened, with the nearest real spelling of a misspelt option or subcommand."""

    def parse_known_args(self, args=None, namespace=None):
        trail = _PARSING.get(None)
        if trail is not None:
            trail.append(self)  # argparse parses the subcommands in turn: the last one is the deepest chosen
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):
        # argparse's own parse_args reports leftover words from the top parser ("see `kqv --help`"):
        # report them from the subcommand that did not know them instead
        token = _PARSING.set([])
        try:
            namespace, extras = self.parse_known_args(args, namespace)
            deepest = _PARSING.get()[-1]
        finally:
            _PARSING.reset(token)
        if extras:
            message = f"unrecognized arguments: {' '.join(extras)}"
            options = [
                s for action in deepest._actions for s in action.option_strings if action.help != argparse.SUPPRESS
            ]
            for word in extras:
                if word.startswith("-") and word != "-":
                    close = difflib.get_close_matches(word.partition("=")[0], options, n=1, cutoff=0.6)
                    if close:
                        message += f"; did you mean {close[0]}?"
                    break
            deepest.error(message)
        return namespace

    def error(self, message: str) -> None:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if choice:
            choices = [c.strip().strip("'") for c in choice.group(2).split(",")]
            close = difflib.get_close_matches(choice.group(1), choices, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]}?"
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> Parser:
    parser = Parser(
        prog="kqv",
        description="kqv: from neural networks to GPT, built from scratch and open to inspection.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kqv {__version__}")
    groups = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_GROUPS.values():
        importlib.import_module(module).register(groups)
    return parser


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Run one command -> its exit code: 0, 2 for a user error (one line on stderr), 130 after Ctrl-C,
    143 after SIGTERM. An interrupted training leaves a state it can resume from (kqv.runs.directory)."""
    previous = _install(signal.SIGTERM, _terminate)
    if argv is None:  # a kqv process (not a call from Python, whose Ctrl-C is its own): Ctrl-C waits out imports
        _install(signal.SIGINT, _interrupt)
    try:
        from kqv.commands.translate import shorthand

        args = build_parser().parse_args(shorthand(list(sys.argv[1:] if argv is None else argv)))
        args.handler(args)
    except UserError as exc:
        print(f"kqv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # a training adds what it saved and how to continue (kqv.train.loop)
        print("kqv: interrupted" + (f"; {exc.args[0]}" if exc.args else ""), file=sys.stderr)
        return 130
    except Terminated as exc:
        print("kqv: terminated" + (f"; {exc.args[0]}" if exc.args else ""), file=sys.stderr)
        return 143
    except BrokenPipeError:  # `kqv … | head -1`: the reader has gone; stop quietly, as `cat` would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141
    finally:
        if argv is None:  # a kqv process, about to exit: a late Ctrl-C or SIGTERM has nothing left to stop
            _install(signal.SIGINT, signal.SIG_IGN)
            _install(signal.SIGTERM, signal.SIG_IGN)
        else:  # called from Python (tests, notebooks): leave the signals as they were
            _install(signal.SIGTERM, previous)
    return 0


def _interrupt(signum, frame) -> None:
    """Ctrl-C, held back while a module is being imported.

    torch's C++ start-up runs Python code of its own; a KeyboardInterrupt raised inside it aborts the
    process (pybind11 cannot pass it on) or leaves CPython set to kill itself with SIGINT at exit. So
    during an import the signal is sent again 50 ms later, until it lands in kqv's own code."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
            timer.daemon = True
            timer.start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt


def _install(signum, handler):
    """signal.signal where it can be set (the main thread); -> the handler it replaced (or None)."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signum, handler)
