"""What the browser tests share: `kqv serve` in its own process, and skipping (or failing) without a browser."""

import os
import subprocess
import sys

import pytest


def missing(why: str, required_by: str) -> None:
    """Skip, saying why; fail instead when the environment variable `required_by` is 1 (CI sets it)."""
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{why} ({required_by}=1)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def server():
    """`kqv serve --preset default --preset translate/tiny --port 0`: the default GPT's shape, random weights."""
    command = [sys.executable, "-m", "kqv", "serve", "--preset", "default", "--preset", "translate/tiny", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # "kqv serve: http://127.0.0.1:PORT/  serving …"
        assert line.startswith("kqv serve: http://127.0.0.1:"), line + process.stderr.read()
        yield line.split()[2].rstrip("/")
    finally:
        process.terminate()
        process.wait(timeout=10)
