"""`kqv serve` and `kqv bench serve` from the command line: bad input is one line and exit code 2, before any
server starts; the load check answers 32 requests at once without an error."""

import json
import socket

import pytest

from tests.commands.running import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def one_line_error(capsys, *args) -> str:
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_serve_needs_a_run_or_a_preset(capsys):
    assert "give at least one run directory" in one_line_error(capsys, "serve")


def test_serve_names_a_missing_run(capsys, tmp_path):
    assert "no such run directory" in one_line_error(capsys, "serve", tmp_path / "nope")


def test_serve_names_an_unknown_preset(capsys):
    assert "no such preset" in one_line_error(capsys, "serve", "--preset", "huge")


def test_serve_says_when_the_port_is_taken(capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        err = one_line_error(capsys, "serve", "--preset", "tiny", "--port", port)
    finally:
        taken.close()
    assert f"port {port} on 127.0.0.1 is in use" in err


def test_serve_refuses_an_impossible_port(capsys):
    assert "a port is 0…65535" in one_line_error(capsys, "serve", "--preset", "tiny", "--port", 70000)


def test_load_check_32_attention_requests_at_once_on_the_default_model(capsys):
    """The default (main-job) architecture with random weights: same shapes, same cost as a trained run."""
    code, out, _ = cli(capsys, "bench", "serve", "--preset", "default", "--concurrency", 32, "--json")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == 0 and result["concurrency"] == 32
    assert len(result["concurrent_ms"]) == len(result["sequential_ms"]) == 32
    assert result["concurrent"]["p50_ms"] > 0 and result["throughput_ratio"] > 0
    assert "errors: 0 of 64" in out


def test_bench_serve_takes_a_run_or_a_preset_not_both(capsys):
    assert "not both" in one_line_error(capsys, "bench", "serve", "runs/gpt", "--preset", "tiny")


def test_serve_listens_on_this_machine_only_by_default():
    from kqv.cli import build_parser

    args = build_parser().parse_args(["serve", "runs/gpt"])
    assert args.host == "127.0.0.1" and args.port == 8000
