"""Pieces every command group shares: argument types, --json output, help layout."""

import argparse
import json
import math

import numpy as np


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def int_list(text: str) -> list[int]:
    """'100' or '100,30' -> [100] or [100, 30], each at least 1."""
    return [positive_int(part.strip()) for part in text.split(",")]


def positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_steps_flag(parser, default: int | None = None, help: str = "optimiser steps (overrides the preset)") -> None:
    """--steps N, the one spelling of the number of training steps in every command; --max-iters and --iters,
    its earlier spellings, still work (hidden)."""
    parser.add_argument("--steps", type=positive_int, default=default, help=help)
    for alias in ("--max-iters", "--iters"):
        parser.add_argument(alias, dest="steps", type=positive_int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_group(groups, name: str, help: str, examples: str, metavar: str = "COMMAND"):
    """A command group (`kqv digits`, `kqv bench`): its --help lists subcommands and examples."""
    parser = groups.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser.add_subparsers(dest=f"{name}_command", metavar=metavar, required=True)


def add_command(groups, name: str, help: str, examples: str, run) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with worked examples."""
    parser = groups.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=run)
    return parser


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="end stdout with one line holding a JSON object of the results"
    )


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    return value


def emit_json(result: dict) -> None:
    print(json.dumps(_plain(result), separators=(",", ":")), flush=True)
