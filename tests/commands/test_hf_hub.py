"""`--from-hf NAME_OR_DIR` with a Hugging Face hub model name (kqv.runs.hub.resolve_hf_source).

Nothing here touches the network. A tiny kqv GPT is exported to GPT-2 format with kqv's own
exporter and laid out in a Hugging Face cache inside tmp_path exactly as huggingface_hub writes
one (models--owner--name/blobs/<sha256>, snapshots/<commit>/<file> linking to the blob,
refs/main holding the commit). In-process tests point huggingface_hub.constants (read from the
environment once, at import) at it with the hub switched off, and every snapshot_download call
is checked to be cache-only; two real processes check that HF_HUB_CACHE / HF_HUB_OFFLINE set in
the environment are honoured end to end. The hub itself is played by fakes of HfApi.model_info and snapshot_download.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import httpx2
import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

import kqv.runs.hub as hub
from kqv.config import GPTConfig
from kqv.data.text import read_corpus
from kqv.models.gpt import GPT
from kqv.models.hf_folder import save_hf_gpt2
from kqv.tokenizer import BPETokenizer
from tests.commands.running import cli, last_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAME = "kqv-test/tiny-gpt2"
SHORT = "tinygpt"  # a repo id without an owner, as `gpt2` is
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SAMPLE = ["--prompt", "ROMEO: wherefore", "--tokens", "5", "--temperature", "0", "--json"]


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory) -> Path:
    """A GPT-2 checkpoint (config.json, model.safetensors, tokenizer files) written by kqv's exporter."""
    tokenizer = BPETokenizer.train(read_corpus(None).text[:20_000], vocab_size=300)
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16, bias=True,
                       activation="gelu_tanh")  # fmt: skip
    return save_hf_gpt2(GPT(config).eval(), tokenizer, tmp_path_factory.mktemp("hf") / "gpt2-tiny")


def cache_repo(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """One model in a Hugging Face cache, laid out as huggingface_hub lays it out -> its snapshot folder."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()  # an LFS file's etag is its sha256
        (storage / "blobs" / blob).write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob))
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / "main").write_text(commit)  # no newline: huggingface_hub reads it as is
    return snapshot


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def cache(gpt2_folder, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("hf-home") / "hub"
    for repo_id in (NAME, SHORT):
        cache_repo(cache, repo_id, folder_files(gpt2_folder))
    files = folder_files(gpt2_folder)
    cache_repo(cache, "kqv-test/partial", {"config.json": files["config.json"]})
    del files["model.safetensors"]
    cache_repo(cache, "kqv-test/pickled", {**files, "pytorch_model.bin": b"not really a pickle"})
    return cache


@pytest.fixture
def calls(cache, monkeypatch) -> list[dict]:
    """The hub off, the cache above, and every snapshot_download call recorded and required to be cache-only."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    real, seen = hub.snapshot_download, []

    def cache_only(repo_id, **kwargs):
        seen.append({"repo_id": repo_id, **kwargs})
        assert kwargs.get("local_files_only"), "a test must never download"
        return real(repo_id, **kwargs)

    monkeypatch.setattr(hub, "snapshot_download", cache_only)
    return seen


def sample_text(capsys, source: str) -> str:
    code, out, err = cli(capsys, "gpt", "sample", "--from-hf", source, *SAMPLE)
    assert code == 0, err
    return last_json(out)["text"]


def one_line_error(capsys, source: str) -> str:
    code, out, err = cli(capsys, "gpt", "sample", "--from-hf", source, "--tokens", "2")
    assert code == 2, err
    assert err.startswith("kqv: error: ") and err.count("\n") == 1, err
    return err


def test_a_hub_name_in_the_cache_samples_as_its_snapshot_folder_does(calls, cache, gpt2_folder, capsys):
    snapshot = cache / "models--kqv-test--tiny-gpt2" / "snapshots" / COMMIT
    by_name, by_short_name = sample_text(capsys, NAME), sample_text(capsys, SHORT)
    assert [c["repo_id"] for c in calls] == [NAME, SHORT]
    assert calls[0]["allow_patterns"] == hub.HF_FILES and calls[0]["local_files_only"] is True
    assert by_name == by_short_name == sample_text(capsys, str(snapshot)) == sample_text(capsys, str(gpt2_folder))
    assert len(calls) == 2  # a folder is never looked up on the hub
    assert hub.resolve_hf_source(NAME) == snapshot


def test_eval_reads_a_hub_name_too(calls, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(read_corpus(None).text[:2_000])
    code, out, err = cli(capsys, "gpt", "eval", "--from-hf", NAME, "--data", text, "--json")
    assert code == 0, err
    assert last_json(out)["from_hf"] == NAME and calls


def test_a_name_not_in_the_cache_offline_is_one_line_naming_the_fetch_command(calls, cache, capsys):
    err = one_line_error(capsys, "kqv-test/absent")
    assert f"kqv-test/absent: no such folder, and not in the Hugging Face cache ({cache})" in err
    assert "HF_HUB_OFFLINE is set" in err and hub.fetch_command("kqv-test/absent") in err
    assert "hf download kqv-test/absent --include" in err
    assert shutil.which("hf", path=str(Path(sys.executable).parent)), "huggingface_hub installs the `hf` command"


def test_a_partly_cached_name_offline_says_so(calls, capsys):
    err = one_line_error(capsys, "kqv-test/partial")
    assert "kqv-test/partial: only partly in the Hugging Face cache (no model.safetensors, tokenizer.json" in err
    assert "hf download kqv-test/partial" in err


def test_pickled_weights_are_refused_by_name(calls, capsys):
    err = one_line_error(capsys, "kqv-test/pickled")
    assert "kqv-test/pickled: the weights on the Hugging Face hub are pytorch_model.bin (a pickle" in err
    assert "kqv reads safetensors only" in err


@pytest.mark.parametrize("arg", ["./nowhere", "~/kqv-no-such-model", "{tmp}/nowhere", "a/b/c", "gone/"])
def test_a_missing_path_keeps_its_message_and_never_asks_the_hub(calls, tmp_path, capsys, arg):
    arg = arg.replace("{tmp}", str(tmp_path))
    err = one_line_error(capsys, arg)
    assert f"{Path(arg)}: no such directory; give a Hugging Face GPT-2 folder" in err
    assert calls == []


def test_an_existing_folder_named_like_a_hub_id_is_read_as_a_folder(calls, gpt2_folder, monkeypatch, capsys):
    monkeypatch.chdir(gpt2_folder.parent.parent)
    relative = f"{gpt2_folder.parent.name}/{gpt2_folder.name}"  # "owner/name" in form, and a folder here
    assert sample_text(capsys, relative) == sample_text(capsys, NAME)
    assert [c["repo_id"] for c in calls] == [NAME]


def test_a_name_that_is_not_a_repo_id_is_one_line(calls, capsys):
    err = one_line_error(capsys, "not a--name")
    assert "not a--name: no such folder, and not a Hugging Face model name (like gpt2" in err and calls == []


# --- the hub switched on: fakes of HfApi and snapshot_download stand in for the network


def online(monkeypatch, cache: Path, listing, download=None) -> list:
    """The hub on, with `listing` (a file -> bytes dict, or an exception to raise) as the repo's files there."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    seen = []

    class FakeApi:
        def model_info(self, repo_id, files_metadata=False):
            seen.append(("model_info", repo_id))
            if isinstance(listing, Exception):
                raise listing
            return SimpleNamespace(siblings=[SimpleNamespace(rfilename=f, size=len(b)) for f, b in listing.items()])

    def fake_snapshot_download(repo_id, *, allow_patterns, local_files_only=False):
        seen.append(("snapshot_download", repo_id, local_files_only))
        assert allow_patterns == hub.HF_FILES
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        assert download is not None, "nothing to download in this test"
        return download(repo_id)

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    return seen


def test_a_name_not_cached_is_downloaded_saying_so_on_stderr(gpt2_folder, tmp_path, monkeypatch, capsys):
    cache, files = tmp_path / "hub", folder_files(gpt2_folder)
    on_hub = {**files, "README.md": b"x" * 10**6, "pytorch_model.bin": b"x", "onnx/model.onnx": b"x"}
    seen = online(monkeypatch, cache, on_hub, lambda repo_id: str(cache_repo(cache, repo_id, files)))
    code, out, err = cli(capsys, "gpt", "sample", "--from-hf", "kqv-test/fetched", *SAMPLE)
    assert code == 0, err
    assert seen == [
        ("snapshot_download", "kqv-test/fetched", True),
        ("model_info", "kqv-test/fetched"),
        ("snapshot_download", "kqv-test/fetched", False),
    ]
    size = sum(len(b) for b in files.values()) / 1e6
    assert err == (
        f"kqv: downloading kqv-test/fetched from the Hugging Face hub into {cache} (6 files, {size:.1f} MB)\n"
    )
    assert last_json(out)["text"] == sample_text(capsys, str(gpt2_folder))


def hub_error(cls, status: int):
    return cls(f"{status} Client Error", response=mock.Mock(status_code=status))


NO_WEIGHTS = {"config.json": b"{}", "vocab.json": b"{}", "merges.txt": b"", "tf_model.h5": b"x"}
HUB_FAILURES = {
    "not-found": (hub_error(RepositoryNotFoundError, 404), "kqv-test/x: no such folder, and no such model on the"),
    "gated": (hub_error(GatedRepoError, 403), "kqv-test/x: a gated model on the Hugging Face hub; accept its terms"),
    "unreachable": (
        httpx2.ConnectError("[Errno 101] Network is unreachable"),
        "the hub cannot be reached (ConnectError); fetch it where there is network: hf download kqv-test/x --include",
    ),
    "pickle-only": (
        {**NO_WEIGHTS, "pytorch_model.bin": b"x"},
        "kqv-test/x: the weights on the Hugging Face hub are pytorch_model.bin (a pickle",
    ),
    "no-safetensors": (NO_WEIGHTS, "kqv-test/x: the model on the Hugging Face hub has no model.safetensors, which"),
    "no-tokenizer": (
        {"config.json": b"{}", "model.safetensors": b"x"},
        "has no tokenizer.json (or vocab.json + merges.txt), which kqv needs",
    ),
}


@pytest.mark.parametrize("case", sorted(HUB_FAILURES))
def test_hub_failures_are_one_line_and_download_nothing(tmp_path, monkeypatch, capsys, case):
    listing, message = HUB_FAILURES[case]
    seen = online(monkeypatch, tmp_path / "hub", listing)
    err = one_line_error(capsys, "kqv-test/x")
    assert message in err
    assert ("snapshot_download", "kqv-test/x", False) not in seen


# --- the environment, as a user sets it, in real processes


@pytest.mark.parametrize("name", [NAME, "kqv-test/absent"])
def test_hf_hub_cache_and_offline_from_the_environment(cache, tmp_path, capsys, monkeypatch, name):
    env = {**os.environ, "KQV_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "home"),
           "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "kqv", "gpt", "sample", "--from-hf", name, *SAMPLE],
                          capture_output=True, text=True, env=env)  # fmt: skip
    if name == NAME:
        assert proc.returncode == 0, proc.stderr
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        assert last_json(proc.stdout)["text"] == sample_text(capsys, NAME)
    else:
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert f"kqv-test/absent: no such folder, and not in the Hugging Face cache ({cache})" in proc.stderr
        assert "hf download kqv-test/absent" in proc.stderr


def test_import_hf_and_why_read_a_hub_name_too(calls, gpt2_folder, tmp_path, capsys):
    run = tmp_path / "imported"
    code, out, err = cli(capsys, "gpt", "import-hf", NAME, run)
    assert code == 0, err
    code, out, err = cli(capsys, "gpt", "sample", run, *SAMPLE)
    assert code == 0, err
    assert last_json(out)["text"] == sample_text(capsys, str(gpt2_folder))
    code, out, err = cli(capsys, "why", "--from-hf", NAME, "Hello there", "--method", "lens,dla", "--out", tmp_path)
    assert code == 0, err
    assert "lens" in out and "dla" in out and (tmp_path / "dla.png").is_file()
