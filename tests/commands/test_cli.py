"""The CLI as a user meets it: real subprocesses, exit codes, one-line errors, --json."""

import argparse
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kqv.cli import build_parser
from tests.commands.running import last_json
from tests.data.idx_files import idx_bytes, write_idx_set


def kqv(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kqv", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def all_subcommands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from all_subcommands(sub, (*prefix, name))


def test_every_command_has_help_with_an_example():
    commands = list(all_subcommands(build_parser()))
    assert {c for c, _ in commands} >= {("digits",), ("digits", "train"), ("bench", "digits")}
    for names, sub in commands:
        text = sub.format_help()
        assert sub.description and "examples:\n  kqv " in text, names
    assert kqv("digits", "train", "--help").returncode == 0


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model.safetensors"
    proc = kqv("digits", "train", "--epochs", "3", "--out", out, "--plot", "--json")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_train_prints_epochs_confusion_matrix_and_json(embedded_run):
    out, proc = embedded_run
    assert "epoch   3/3" in proc.stdout and "confusion matrix" in proc.stdout
    assert "\r" not in proc.stdout + proc.stderr  # no progress bar when stdout is not a terminal
    result = last_json(proc.stdout)
    assert result["command"] == "digits train" and result["sizes"] == [64, 100, 10]
    assert len(result["history"]) == 3 and 0.5 < result["test_accuracy"] <= 1.0
    assert np.array(result["confusion_matrix"]).sum() == 359
    assert result["model"] == str(out) and out.is_file()
    assert all(p.endswith(".png") for p in result["plots"]) and len(result["plots"]) == 2
    assert result["images_per_second"] > 0 and result["wall_seconds"] > 0


def test_plot_command_rewrites_the_pngs(embedded_run, tmp_path):
    out, _ = embedded_run
    proc = kqv("digits", "plot", out, "--out", tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr
    plots = last_json(proc.stdout)["plots"]
    for p in plots:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_predict_prints_every_class_probability(embedded_run, tmp_path):
    out, _ = embedded_run
    page = np.full((60, 50), 255, dtype=np.uint8)
    page[10:50, 22:28] = 0  # a dark vertical bar on white: a "1"
    Image.fromarray(page).save(tmp_path / "one.png")
    proc = kqv("digits", "predict", out, tmp_path / "one.png", "--json", "--save-normalised", tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = last_json(proc.stdout)["results"][0]
    assert len(result["probabilities"]) == 10 and sum(result["probabilities"]) == pytest.approx(1.0)
    assert result["prediction"] == int(np.argmax(result["probabilities"]))
    assert (tmp_path / "one.normalised.png").is_file()


def test_train_and_predict_on_an_idx_folder(tmp_path):
    folder = write_idx_set(tmp_path / "idx", n_train=80, n_test=20, size=28, gz=True)
    proc = kqv("digits", "train", "--data", folder, "--validation-size", 20, "--epochs", 1, "--hidden", "16,8",
               "--out", tmp_path / "m.safetensors", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = last_json(proc.stdout)
    assert result["sizes"] == [784, 16, 8, 10] and result["hyperparameters"]["eta"] == 0.5
    Image.new("L", (40, 40), 0).save(tmp_path / "dot.png")
    img = Image.open(tmp_path / "dot.png")
    img.putpixel((20, 20), 255)
    img.save(tmp_path / "dot.png")
    assert kqv("digits", "predict", tmp_path / "m.safetensors", tmp_path / "dot.png").returncode == 0


def broken_folder(tmp_path, what):
    folder = write_idx_set(tmp_path / "idx")
    if what == "magic":
        path = folder / "train-images-idx3-ubyte"
        path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    elif what == "count":
        (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(19, dtype=np.uint8)))
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["digits", "train", "--data", "/nonexistent/mnist"], "no such folder"),
        (["digits", "train", "--data", "{magic}"], "not an IDX file"),
        (["digits", "train", "--data", "{count}"], "holds 20 images but t10k-labels-idx1-ubyte holds 19 labels"),
        (["digits", "train", "--hidden", "0"], "must be at least 1"),
        (["digits", "train", "--hidden", "100,abc"], "expected a whole number"),
        (["digits", "train", "--eta", "-1"], "must be greater than 0"),
        (["digits", "train", "--lmbda", "nan"], "finite number"),
        (["digits", "train", "--out", "/proc/kqv/model.safetensors", "--epochs", "1"], "cannot write there"),
        (["digits", "predict", "{model}", "{text}"], "not an image kqv can read"),
        (["digits", "predict", "/nonexistent/model.safetensors", "{text}"], "no such model file"),
        (["digits", "predict", "{truncated}", "{text}"], "not a complete kqv digits model"),
        (["digits", "frobnicate"], "invalid choice"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, embedded_run, args, message):
    (tmp_path / "notes.txt").write_text("hello")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(embedded_run[0].read_bytes()[:500])
    names = {
        "{magic}": lambda: broken_folder(tmp_path / "a", "magic"),
        "{count}": lambda: broken_folder(tmp_path / "b", "count"),
        "{model}": lambda: embedded_run[0],
        "{text}": lambda: tmp_path / "notes.txt",
        "{truncated}": lambda: truncated,
    }
    proc = kqv(*[names[a]() if a in names else a for a in args])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """`kqv … | head -1`: the pipe closes under the writer; kqv stops quietly with 141, like `cat`."""
    import subprocess
    import sys

    program = tmp_path / "chatty.py"
    program.write_text(
        "import sys\n"
        "from kqv import cli\n"
        "class Args:  # a command that writes far more than a pipe holds\n"
        "    def handler(self, args):\n"
        "        for i in range(200_000):\n"
        "            print('line', i)\n"
        "class Parser:\n"
        "    def parse_args(self, argv):\n"
        "        return Args()\n"
        "cli.build_parser = Parser\n"
        "sys.exit(cli.main([]))\n"
    )
    script = f"'{sys.executable}' '{program}' | head -1; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout == "line 0\n"
    assert "Traceback" not in done.stderr and done.stderr == ""
    assert done.returncode == 141
