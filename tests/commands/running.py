"""Running `kqv` in this process from a test: exit code, stdout and stderr, and the last-line JSON summary."""

import json

from kqv.cli import main


def cli(capsys, *args) -> tuple[int, str, str]:
    """`kqv ARGS` in this process -> (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])
