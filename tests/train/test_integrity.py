"""Damage is detected, not loaded (PITFALL 20): checksums, non-finite weights, and every field read back from a
run directory checked as strictly as `--set` is, each problem one line that names the file."""

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from kqv.config import GPTConfig, TransformerConfig
from kqv.errors import UserError
from kqv.families.gpt import GPT_FAMILY
from kqv.models.gpt import GPT
from kqv.models.transformer import Transformer
from kqv.runs import memory
from kqv.runs.config_file import read_config
from kqv.runs.weights import CHECKSUM_KEY, read_safetensors, tensors_digest, write_safetensors
from kqv.tokenizer import CharTokenizer, save_tokenizer
from kqv.train.gpt_run import train_gpt
from kqv.train.loop import read_log

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SETTINGS = ["train.max_iters=6", "train.eval_interval=3", "train.eval_iters=2"]


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, corpus_20k) -> Path:
    """A run stopped at step 3 of 6: every file a resume reads is there."""
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    train_gpt("tiny", str(corpus_20k), str(run_dir), overrides=SETTINGS, device="cpu", stop_at=3, say=quiet)
    return run_dir


@pytest.fixture
def run(stopped, tmp_path) -> Path:
    return Path(shutil.copytree(stopped, tmp_path / "run"))


def resume(run_dir: Path):
    return train_gpt(resume=str(run_dir), device="cpu", say=quiet)


def refused(run_dir: Path, words: str, what=("load", "resume")) -> None:
    for action in what:
        with pytest.raises(UserError, match=words) as caught:
            GPT_FAMILY.load(run_dir) if action == "load" else resume(run_dir)
        assert "\n" not in str(caught.value)


def restamp(run_dir: Path) -> None:
    """A consistent edit of config.json: its new sha256 recorded in the tensor files, so only validation is left."""
    digest = hashlib.sha256((run_dir / "config.json").read_bytes()).hexdigest()
    for name in ("model.safetensors", "trainer.safetensors"):
        tensors, meta = read_safetensors(run_dir / name)
        write_safetensors(run_dir / name, tensors, {**meta, "config_sha256": digest})


# -- checksums ---------------------------------------------------------------------------------------------------


def test_the_digest_covers_names_dtypes_shapes_bytes_and_metadata():
    t = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(2, dtype=torch.bfloat16)}
    base = tensors_digest(t, "{}")
    assert (
        base
        == hashlib.sha256(
            b"a\0torch.float32\0(2, 3)\0" + t["a"].numpy().tobytes() + b"b\0torch.bfloat16\0(2,)\0" + bytes(4) + b"{}"
        ).hexdigest()
    )  # the definition, written out
    for changed in (
        {**t, "a": t["a"].reshape(3, 2)},
        {**t, "a": t["a"].double()},
        {"A": t["a"], "b": t["b"]},
        {**t, "b": torch.tensor([0.0, 1.0], dtype=torch.bfloat16)},
    ):
        assert tensors_digest(changed, "{}") != base
    assert tensors_digest(t, '{"step": 1}') != base


@pytest.mark.parametrize("name", ["model.safetensors", "trainer.safetensors"])
@pytest.mark.parametrize("where", ["first tensor byte", "middle", "last byte", "metadata digit"])
def test_a_flipped_bit_anywhere_in_a_tensor_file_is_refused(run, name, where):
    raw = bytearray((run / name).read_bytes())
    header = int.from_bytes(raw[:8], "little")
    if where == "metadata digit":  # a change that keeps the header valid JSON: the step 3 -> 2
        at = raw.index(b'\\"step\\": 3')
        raw[at + len(b'\\"step\\": ')] ^= 0x01
    else:
        at = {"first tensor byte": 8 + header, "middle": (8 + header + len(raw)) // 2, "last byte": len(raw) - 1}
        raw[at[where]] ^= 0x10
    (run / name).write_bytes(bytes(raw))
    refused(run, "damaged", what=("load",) if name == "model.safetensors" else ("resume",))


def test_a_file_whose_checksum_was_removed_is_refused_in_a_run_written_with_checksums(run):
    tensors, meta = read_safetensors(run / "model.safetensors")
    from safetensors.torch import save_file

    save_file(tensors, run / "model.safetensors", metadata={"kqv": json.dumps(meta)})  # no CHECKSUM_KEY
    refused(run, "its checksum is missing", what=("load",))
    assert read_config(run)["checksums"] == "sha256"


def test_files_without_checksums_from_older_runs_still_load(run):
    """A run written before checksums: no "checksums" in config.json and none in the files."""
    info = json.loads((run / "config.json").read_text())
    del info["checksums"]
    (run / "config.json").write_text(json.dumps(info))
    for name in ("model.safetensors", "trainer.safetensors"):
        tensors, meta = read_safetensors(run / name)
        meta.pop("config_sha256", None)
        from safetensors.torch import save_file

        save_file(tensors, run / name, metadata={"kqv": json.dumps(meta)})
    assert GPT_FAMILY.load(run).model_config.n_layer == 2
    assert resume(run)[0].steps == 6


def test_an_edited_config_json_is_refused(run):
    (run / "config.json").write_text((run / "config.json").read_text().replace('"dropout": 0.0', '"dropout": 0.1'))
    refused(run, "config.json: damaged or changed since")


def test_a_tokenizer_that_is_not_the_runs_is_refused(run):
    tokens = json.loads((run / "tokenizer.json").read_text())["chars"]
    save_tokenizer(CharTokenizer(list(reversed(tokens))), run / "tokenizer.json")  # same size, other ids
    refused(run, "is not the tokenizer this")


# -- non-finite weights ----------------------------------------------------------------------------------------


WEIGHTS = [("model.safetensors", ""), ("trainer.safetensors", "model."), ("trainer.safetensors", "optim.")]


@pytest.mark.parametrize("name,prefix", WEIGHTS, ids=["best", "latest", "adam"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_weights_are_refused(run, name, prefix, value):
    tensors, meta = read_safetensors(run / name)
    key = next(k for k in sorted(tensors) if k.startswith(prefix) and tensors[k].is_floating_point())
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = value
    write_safetensors(run / name, tensors, meta)  # a valid checksum: the values themselves are refused
    refused(run, "holds NaN or infinite values", what=("load",) if name == "model.safetensors" else ("resume",))


# -- the trainer state, field by field ----------------------------------------------------------------------------


def edit_state(run_dir: Path, change) -> None:
    tensors, meta = read_safetensors(run_dir / "trainer.safetensors")
    change(tensors, meta)
    write_safetensors(run_dir / "trainer.safetensors", tensors, meta)


STATE_EDITS = {
    "step -5": (lambda t, m: m.update(step=-5), "the step is missing or outside 0 … 6"),
    "step 10^6": (lambda t, m: m.update(step=1_000_000), "the step is missing or outside"),
    "step 2.5": (lambda t, m: m.update(step=2.5), "the step is missing"),
    "no best_val": (lambda t, m: m.pop("best_val"), "best validation loss is missing"),
    "best_val NaN": (lambda t, m: m.update(best_val=math.nan), "best validation loss"),
    "no train_seconds": (lambda t, m: m.pop("train_seconds"), "train_seconds is missing"),
    "tokens_seen -1": (lambda t, m: m.update(tokens_seen=-1), "tokens_seen"),
    "no sampler": (lambda t, m: m.pop("sampler"), "sampler"),
    "no generator": (lambda t, m: m["sampler"].pop("generator"), r"data position \(sampler\)"),
    "short generator": (lambda t, m: m["sampler"]["generator"].pop(), r"data position \(sampler\)"),
    "generator byte 300": (lambda t, m: m["sampler"]["generator"].__setitem__(0, 300), "sampler"),
    "batches_drawn -1": (lambda t, m: m["sampler"].update(batches_drawn=-1), "sampler"),
    "no rng.torch": (lambda t, m: t.pop("rng.torch"), "rng.torch"),
    "rng.torch cut": (lambda t, m: t.update({"rng.torch": t["rng.torch"][:100]}), "rng.torch"),
    "no optimizer": (lambda t, m: m.pop("optimizer"), "optimizer state is missing"),
    "optimizer groups": (lambda t, m: m["optimizer"]["param_groups"].pop(), "optimizer state was saved for other"),
    "adam moment shape": (
        lambda t, m: t.update({"optim.0.exp_avg": t["optim.0.exp_avg"].flatten()}),
        "optim.0.exp_avg has shape",
    ),
    "log row": (lambda t, m: m["log"][0].pop("val_loss"), "log rows are malformed"),
}


@pytest.mark.parametrize("case", STATE_EDITS, ids=list(STATE_EDITS))
def test_a_trainer_state_out_of_range_or_incomplete_is_one_line(run, case):
    change, words = STATE_EDITS[case]
    edit_state(run, change)
    refused(run, words, what=("resume",))


# -- config.json, field by field ----------------------------------------------------------------------------------

CONFIG_EDITS = {
    "no data": (lambda i: i.pop("data"), '"data" is missing'),
    "data sha256": (lambda i: i["data"].update(sha256="x"), "data.sha256"),
    "kind": (lambda i: i.update(kind="diffusion"), '"kind" is not one of'),
    "no tokenizer": (lambda i: i.pop("tokenizer"), '"tokenizer" must hold'),
    "model a list": (lambda i: i.update(model=[1]), '"model" is missing or not a table'),
    "n_layer a long string": (lambda i: i["model"].update(n_layer="x" * 10_000), "n_layer expects int"),
    "block_size 10^12": (lambda i: i["model"].update(block_size=10**12), "needs at least"),
    "n_embd 10^6": (lambda i: i["model"].update(n_embd=10**6, n_head=1), "needs at least"),
    "unknown key": (lambda i: i["model"].update(wings=2), "unknown key"),
    "seed 2^64": (lambda i: i["train"].update(seed=2**64), "seed must be"),
}


@pytest.mark.parametrize("case", CONFIG_EDITS, ids=list(CONFIG_EDITS))
def test_a_config_json_field_out_of_range_is_one_line_even_with_consistent_checksums(run, case):
    change, words = CONFIG_EDITS[case]
    info = json.loads((run / "config.json").read_text())
    change(info)
    (run / "config.json").write_text(json.dumps(info))
    restamp(run)
    refused(run, words)
    with pytest.raises(UserError) as caught:
        GPT_FAMILY.load(run)
    assert len(str(caught.value)) < 400  # a value is never echoed whole


def test_a_corpus_path_pointed_elsewhere_never_echoes_that_files_contents(run, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:the secret line\n" * 50)
    info = json.loads((run / "config.json").read_text())
    info["data"]["path"] = str(secret)
    (run / "config.json").write_text(json.dumps(info))
    restamp(run)
    with pytest.raises(UserError, match="has changed since the run started") as caught:
        resume(run)
    assert "secret line" not in str(caught.value)


# -- other damage: the log, folders where files belong ----------------------------------------------------------


def test_a_damaged_log_is_rewritten_from_the_trainer_state(run):
    (run / "log.csv").write_bytes(b"\xff\xfe garbage,\n1,2,3\n")
    with pytest.raises(UserError, match="log.csv: damaged"):
        read_log(run / "log.csv")
    assert resume(run)[0].steps == 6
    assert [row["step"] for row in read_log(run / "log.csv")] == [0, 3, 6]


@pytest.mark.parametrize("name", ["model.safetensors", "trainer.safetensors", "config.json"])
def test_a_folder_where_a_run_file_belongs_is_one_line(run, name):
    (run / name).unlink()
    (run / name).mkdir()
    with pytest.raises(UserError, match="a folder is where this file belongs"):
        resume(run) if name != "model.safetensors" else GPT_FAMILY.load(run)


def test_a_folder_where_a_checkpoint_is_written_is_one_line_and_the_run_stays_resumable(run):
    (run / "log.csv").unlink()
    (run / "log.csv").mkdir()  # the next evaluation cannot write its log
    with pytest.raises(UserError, match="log.csv: cannot write there"):
        resume(run)
    (run / "log.csv").rmdir()
    assert resume(run)[0].steps == 6


# -- memory ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "alibi", "none"])
@pytest.mark.parametrize("bias", [False, True])
def test_the_gpt_parameter_count_is_exact(pos, bias):
    c = GPTConfig(vocab_size=37, block_size=24, n_layer=3, n_head=2, n_embd=16, bias=bias, pos_encoding=pos)
    model = GPT(c)
    tables = sum(b.numel() for n, b in model.named_buffers() if n.endswith("table"))
    assert memory.gpt_parameters(c) == model.num_parameters() + tables


def test_the_transformer_parameter_count_is_a_close_lower_bound():
    c = TransformerConfig(vocab_size=500, max_len=64, n_layer_enc=2, n_layer_dec=2, n_head=4, n_embd=32, d_ff=64)
    model = Transformer(c)
    real = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    assert 0.95 * real <= memory.transformer_parameters(c) <= real


def test_a_model_that_does_not_fit_is_refused_before_anything_is_allocated(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 10**9)
    small, train = GPTConfig(n_embd=64, n_head=2), __import__("kqv.config").config.TrainConfig()
    memory.check_gpt_training(small, train)
    with pytest.raises(UserError, match=r"needs at least .* of memory but 1.0 GB is free; lower n_embd"):
        memory.check_gpt_training(GPTConfig(n_embd=8192, n_head=2, n_layer=4), train)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": None)
    memory.check_gpt_training(GPTConfig(n_embd=8192, n_head=2, n_layer=4), train)  # unknown: nothing to check


def test_the_checksum_key_is_in_every_file_a_run_writes(stopped):
    for name in ("model.safetensors", "trainer.safetensors"):
        raw = (stopped / name).read_bytes()
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
        assert len(header["__metadata__"][CHECKSUM_KEY]) == 64
