"""`kqv gpt import-hf | export-hf` and `--from-hf` on `kqv gpt sample | eval`, as a user meets them:
a Hugging Face GPT-2 folder becomes a run that sample, eval, inspect and serve read; a run goes back
to a folder transformers loads; every bad input is one line on stderr with exit code 2.

Everything runs in-process through `kqv.cli.main`; two bad inputs run again as real processes
to check the exit code and the absence of a traceback end to end.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kqv.cli import main
from kqv.runs.weights import read_safetensors, write_safetensors
from kqv.tokenizer import CharTokenizer, save_tokenizer
from tests.commands.running import cli, last_json
from tests.models.test_hf import UNICODE_HEAVY, V, hf_logits, make_hf_gpt2

transformers = pytest.importorskip("transformers")
from transformers import AutoTokenizer, GPT2LMHeadModel  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPT = "ROMEO: Crème brûlée 🦀"


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    return folder, make_hf_gpt2(folder, seed=5)


@pytest.fixture(scope="module")
def run_dir(hf, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "imported"
    assert main(["gpt", "import-hf", str(hf[0]), str(out)]) == 0
    return out


def test_import_writes_a_kqv_run(run_dir, hf):
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert not list(run_dir.parent.glob(".*"))  # written in a staging folder, renamed when complete
    config = json.loads((run_dir / "config.json").read_text())
    assert config["kind"] == "gpt" and config["model"]["activation"] == "gelu_tanh" and config["model"]["bias"]
    assert config["model"]["vocab_size"] == V and config["train"]["tokenizer"] == "bpe"
    assert config["imported_from"]["hf_dir"] == str(hf[0].resolve())
    assert json.loads((run_dir / "tokenizer.json").read_text())["kind"] == "bpe"
    assert "tok_emb.weight" in load_file(run_dir / "model.safetensors")  # kqv's names


def test_sample_from_the_run_and_from_hf_equal_transformers_greedy_text(run_dir, hf, capsys):
    texts = []
    for source in ([run_dir], ["--from-hf", hf[0]]):
        code, out, err = cli(capsys, "gpt", "sample", *source, "--prompt", PROMPT, "--tokens", 20, "--temperature", 0,
                             "--json")  # fmt: skip
        assert code == 0, err
        texts.append(last_json(out)["text"])
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(hf[0])  # from vocab.json + merges.txt
    ids = tokenizer(PROMPT)["input_ids"]
    with torch.no_grad():
        out = hf[1].generate(torch.tensor([ids]), do_sample=False, max_new_tokens=20, eos_token_id=None,
                             pad_token_id=V - 1)  # fmt: skip
    assert texts[0] == texts[1] == tokenizer.decode(out[0, len(ids) :])


def test_streamed_sample_prints_the_prompt_and_the_text(run_dir, capsys):
    code, out, err = cli(capsys, "gpt", "sample", run_dir, "--prompt", PROMPT, "--tokens", 8, "--seed", 3)
    assert code == 0, err
    assert out.startswith(PROMPT) and out.endswith("\n")


def test_eval_scores_the_embedded_text_by_default_and_agrees_with_from_hf(run_dir, hf, capsys):
    results = []
    for source in ([run_dir], ["--from-hf", hf[0]]):
        code, out, err = cli(capsys, "gpt", "eval", *source, "--batches", 2, "--json")
        assert code == 0, err
        assert "no corpus of its own: scoring embedded:tinyshakespeare" in out
        results.append(last_json(out))
    assert results[0]["loss"] == results[1]["loss"] and results[0]["tokens"] == 2 * 16 * 64
    assert results[1]["from_hf"] == str(hf[0]) and results[1]["data"] == "embedded:tinyshakespeare"


def test_inspect_and_serve_read_the_imported_run(run_dir, capsys):
    from kqv.commands.serve import load_explorers

    code, out, err = cli(capsys, "inspect", run_dir, "ROMEO: wherefore", "--layer", 0)
    assert code == 0, err
    explorers = load_explorers([str(run_dir)], [])
    assert explorers[0].id == "imported"


def test_export_gives_a_folder_transformers_loads_with_the_same_logits(run_dir, hf, tmp_path, capsys):
    out = tmp_path / "exported"
    code, stdout, err = cli(capsys, "gpt", "export-hf", run_dir, out, "--json")
    assert code == 0, err
    assert last_json(stdout) == {"command": "gpt export-hf", "run_dir": str(run_dir), "hf_dir": str(out)}
    reference = GPT2LMHeadModel.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer(UNICODE_HEAVY)["input_ids"]
    assert ids == transformers.GPT2TokenizerFast.from_pretrained(hf[0])(UNICODE_HEAVY)["input_ids"]
    assert (hf_logits(reference, ids[:64]) - hf_logits(hf[1], ids[:64])).abs().max() <= 1e-5


# -- bad input: exit code 2, one line on stderr, no traceback ------------------------------------------


def bad_folders(tmp: Path, hf_dir: Path, run_dir: Path) -> dict[str, Path]:
    def copy(name: str) -> Path:
        return Path(shutil.copytree(hf_dir, tmp / name))

    no_config = copy("no-config")
    (no_config / "config.json").unlink()
    relu = copy("relu")
    config = json.loads((relu / "config.json").read_text())
    (relu / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    truncated = copy("truncated")
    raw = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    shape = copy("shape")
    tensors = load_file(shape / "model.safetensors")
    tensors["transformer.wpe.weight"] = tensors["transformer.wpe.weight"][:32].contiguous()
    save_file(tensors, str(shape / "model.safetensors"), metadata={"format": "pt"})
    pickle = copy("pickle")
    (pickle / "model.safetensors").rename(pickle / "pytorch_model.bin")
    full = tmp / "full"
    full.mkdir()
    (full / "notes.txt").write_text("keep me")
    gelu_run = Path(shutil.copytree(run_dir, tmp / "gelu-run"))
    config = json.loads((gelu_run / "config.json").read_text())
    config["model"]["activation"] = "gelu"
    rewrite_config(gelu_run, config)
    char_run = Path(shutil.copytree(run_dir, tmp / "char-run"))
    chars = CharTokenizer([chr(0x100 + i) for i in range(V)])
    save_tokenizer(chars, char_run / "tokenizer.json")
    config = json.loads((char_run / "config.json").read_text())
    config["tokenizer"] = {"kind": "char", "fingerprint": chars.fingerprint()}
    rewrite_config(char_run, config)
    return {
        "{tmp}": tmp,
        "{hf}": hf_dir,
        "{run}": run_dir,
        "{no-config}": no_config,
        "{relu}": relu,
        "{truncated}": truncated,
        "{shape}": shape,
        "{pickle}": pickle,
        "{full}": full,
        "{gelu-run}": gelu_run,
        "{char-run}": char_run,
    }


def rewrite_config(run_dir: Path, config: dict) -> None:
    """A run as if trained with these settings: config.json rewritten and the weights' record of its sha256 too
    (an edited config.json alone is refused as damaged)."""
    (run_dir / "config.json").write_text(json.dumps(config))
    tensors, meta = read_safetensors(run_dir / "model.safetensors")
    meta["config_sha256"] = hashlib.sha256((run_dir / "config.json").read_bytes()).hexdigest()
    write_safetensors(run_dir / "model.safetensors", tensors, meta)


IMPORT = ("gpt", "import-hf")
BAD_INPUTS = {
    "import-missing-dir": ([*IMPORT, "{tmp}/nowhere", "{tmp}/r"], "nowhere: no such directory"),
    "import-no-config": ([*IMPORT, "{no-config}", "{tmp}/r"], "no-config: no config.json"),
    "import-not-gpt2": ([*IMPORT, "{relu}", "{tmp}/r"], "activation_function 'relu' is not GPT-2's"),
    "import-truncated": ([*IMPORT, "{truncated}", "{tmp}/r"], "truncated or not a safetensors file"),
    "import-shape": ([*IMPORT, "{shape}", "{tmp}/r"], r"wpe.weight is (32, 32), expected (64, 32)"),
    "import-pickle": ([*IMPORT, "{pickle}", "{tmp}/r"], "pytorch_model.bin (a pickle"),
    "import-into-a-full-dir": ([*IMPORT, "{hf}", "{full}"], "full: already exists and is not empty"),
    "export-missing-run": (["gpt", "export-hf", "{tmp}/no-run", "{tmp}/o"], "no-run: no such run directory"),
    "export-not-gpt2": (["gpt", "export-hf", "{gelu-run}", "{tmp}/o"], "activation is 'gelu'"),
    "export-char-tokenizer": (["gpt", "export-hf", "{char-run}", "{tmp}/o"], "its tokenizer is 'char'"),
    "export-into-a-full-dir": (["gpt", "export-hf", "{run}", "{full}"], "full: already exists and is not empty"),
    "sample-from-hf-missing": (["gpt", "sample", "--from-hf", "{tmp}/nowhere"], "nowhere: no such directory"),
    "sample-from-hf-not-gpt2": (["gpt", "sample", "--from-hf", "{relu}"], "is not GPT-2's"),
    "eval-from-hf-truncated": (["gpt", "eval", "--from-hf", "{truncated}"], "truncated or not a safetensors file"),
}
USAGE_ERRORS = {
    "sample-run-and-from-hf": (["gpt", "sample", "{run}", "--from-hf", "{hf}"], "not allowed with argument run"),
    "eval-neither": (["gpt", "eval"], "one of the arguments run --from-hf is required"),
}


def fill(args, names: dict[str, Path]) -> list[str]:
    out = []
    for arg in args:
        for key, path in names.items():
            arg = arg.replace(key, str(path))
        out.append(arg)
    return out


@pytest.fixture(scope="module")
def bad(tmp_path_factory, hf, run_dir):
    return bad_folders(tmp_path_factory.mktemp("bad"), hf[0], run_dir)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_code_2(bad, capsys, case):
    args, message = BAD_INPUTS[case]
    code, out, err = cli(capsys, *fill(args, bad))
    assert code == 2, err
    assert err.startswith("kqv: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (bad["{tmp}"] / "r").exists() and not (bad["{tmp}"] / "o").exists()  # nothing half-written
    assert (bad["{full}"] / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS))
def test_usage_errors_are_one_line_and_exit_code_2(bad, capsys, case):
    args, message = USAGE_ERRORS[case]
    code, out, err = cli(capsys, *fill(args, bad))
    assert code == 2 and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("case", ["import-truncated", "export-not-gpt2"])
def test_bad_input_in_a_real_process_has_no_traceback(bad, case):
    args, message = BAD_INPUTS[case]
    env = {**os.environ, "KQV_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "kqv", *fill(args, bad)], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
