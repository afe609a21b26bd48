"""Run files: clean weight names, the tied head stored once, damage and missing state as
UserErrors naming the file, and no checkpoint ever holding a non-finite value (PITFALLS 9, 10)."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from kqv.config import GPTConfig, TrainConfig
from kqv.data.text import BatchSampler, fixed_batches, read_corpus
from kqv.errors import UserError
from kqv.families.gpt import GPT_FAMILY
from kqv.models.gpt import GPT
from kqv.runs.weights import load_model_tensors, model_tensors, read_safetensors, save_weights, write_safetensors
from kqv.train.gpt_run import train_gpt
from kqv.train.loop import Trainer, read_log

CONFIG = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)


def quiet(_: str) -> None:
    pass


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gpt(seed: int = 0, config: GPTConfig = CONFIG) -> GPT:
    torch.manual_seed(seed)
    return GPT(config)


class Wrapper(nn.Module):
    """Stands in for DistributedDataParallel: the model lives under `.module`."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def compiled(model: nn.Module) -> nn.Module:
    if not hasattr(torch, "compile"):
        pytest.skip("this torch has no torch.compile")
    try:
        return torch.compile(model)  # wrapping is lazy: nothing is compiled until a forward
    except Exception as exc:  # pragma: no cover - platform without dynamo
        pytest.skip(f"torch.compile is not available here: {exc}")


WRAPS = {
    "plain": lambda m: m,
    "module": Wrapper,
    "compiled": compiled,
    "module-compiled": lambda m: Wrapper(compiled(m)),
    "compiled-module": lambda m: compiled(Wrapper(m)),
}


@pytest.mark.parametrize("wrap", WRAPS, ids=list(WRAPS))
def test_saved_names_have_no_wrapper_prefixes(wrap, tmp_path):
    model = gpt()
    wrapped = WRAPS[wrap](model)
    expected = {n for n, _ in model.named_parameters()}  # tied head once, as tok_emb.weight
    names = set(model_tensors(wrapped))
    assert names == expected
    assert not any("_orig_mod" in n or n.startswith("module.") for n in names)
    save_weights(tmp_path / "w.safetensors", wrapped)
    tensors, _ = read_safetensors(tmp_path / "w.safetensors")
    assert set(tensors) == expected
    fresh = gpt(seed=1)
    load_model_tensors(fresh, tensors, "w.safetensors")
    for name, p in fresh.named_parameters():
        assert torch.equal(p, dict(model.named_parameters())[name]), name


def test_tied_head_is_stored_once_and_tied_again_after_loading(tmp_path):
    model = gpt()
    save_weights(tmp_path / "w.safetensors", model, {"step": 3})
    tensors, meta = read_safetensors(tmp_path / "w.safetensors")
    assert meta == {"step": 3}
    assert "tok_emb.weight" in tensors and "lm_head.weight" not in tensors
    fresh = gpt(seed=1)
    assert not torch.equal(fresh.tok_emb.weight, model.tok_emb.weight)
    load_model_tensors(fresh, tensors, "w.safetensors")
    assert fresh.lm_head.weight is fresh.tok_emb.weight
    assert torch.equal(fresh.lm_head.weight, model.tok_emb.weight)
    idx = torch.randint(0, CONFIG.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(idx).logits, model.eval()(idx).logits)
    with torch.no_grad():  # still one matrix: a change to the embedding shows in the head
        fresh.tok_emb.weight[0, 0] += 1.0
    assert torch.equal(fresh.lm_head.weight, fresh.tok_emb.weight)


def test_weights_that_do_not_fit_are_a_user_error():
    tensors = model_tensors(gpt())
    with pytest.raises(UserError, match=r"w\.st.*missing \['blocks\.0\.attn\.proj\.weight'\]"):
        load_model_tensors(gpt(), {k: v for k, v in tensors.items() if k != "blocks.0.attn.proj.weight"}, "w.st")
    with pytest.raises(UserError, match="unexpected"):
        load_model_tensors(gpt(), {**tensors, "extra.weight": torch.zeros(1)}, "w.st")
    other = gpt(config=GPTConfig(vocab_size=14, block_size=8, n_layer=2, n_head=2, n_embd=16))
    with pytest.raises(UserError, match=r"tok_emb\.weight has shape \(13, 16\)"):
        load_model_tensors(other, tensors, "w.st")


# -- trainer state on a tiny model ---------------------------------------------------------------------


def make_trainer(run_dir: Path, max_iters: int = 4, seed: int = 0) -> Trainer:
    tokens = torch.randint(0, CONFIG.vocab_size, (400,), generator=torch.Generator().manual_seed(5)).numpy()
    cfg = TrainConfig(batch_size=4, max_iters=max_iters, warmup_iters=1, eval_interval=2, eval_iters=1)
    sampler = BatchSampler(tokens, CONFIG.block_size, cfg.batch_size, seed=1)
    evals = {"train": fixed_batches(tokens, 8, 4, 1, 2), "val": fixed_batches(tokens, 8, 4, 1, 3)}
    return Trainer(gpt(seed), cfg, sampler, evals, run_dir, say=quiet)


@pytest.fixture
def trained(tmp_path) -> Trainer:
    trainer = make_trainer(tmp_path)
    trainer.fit()
    return trainer


def test_trainer_state_holds_weights_optimizer_rng_and_position(trained):
    tensors, meta = read_safetensors(trained.run_dir / "trainer.safetensors")
    assert meta["step"] == 4 and meta["sampler"]["batches_drawn"] == 4 and "optimizer" in meta
    weights = {k[len("model.") :] for k in tensors if k.startswith("model.")}
    assert weights == set(model_tensors(trained.model))
    assert {"rng.torch"} <= set(tensors)
    n_params = len(list(trained.model.parameters()))
    assert {k.split(".", 2)[2] for k in tensors if k.startswith("optim.")} == {"exp_avg", "exp_avg_sq", "step"}
    assert len([k for k in tensors if k.startswith("optim.")]) == 3 * n_params
    restored = make_trainer(trained.run_dir, seed=9)
    restored.restore()
    assert restored.step == 4 and restored.batches.batches_drawn == 4
    for (name, a), b in zip(trained.model.named_parameters(), restored.model.parameters(), strict=True):
        assert torch.equal(a, b), name
    old, new = trained.optimizer.state_dict()["state"], restored.optimizer.state_dict()["state"]
    assert old.keys() == new.keys()
    for i in old:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch.as_tensor(old[i][key]), torch.as_tensor(new[i][key])), (i, key)


@pytest.mark.parametrize("cut", ["empty", "8 bytes", "half", "last byte"])
@pytest.mark.parametrize("name", ["model.safetensors", "trainer.safetensors"])
def test_truncated_files_are_user_errors_naming_the_file(trained, name, cut):
    path = trained.run_dir / name
    raw = path.read_bytes()
    keep = {"empty": 0, "8 bytes": 8, "half": len(raw) // 2, "last byte": len(raw) - 1}[cut]
    path.write_bytes(raw[:keep])
    with pytest.raises(UserError, match=rf"{name}: truncated or not a safetensors file") as info:
        read_safetensors(path)
    assert str(path) in str(info.value)
    if name == "trainer.safetensors":
        with pytest.raises(UserError, match=name):
            make_trainer(trained.run_dir).restore()


def without(path: Path, drop) -> None:
    tensors, meta = read_safetensors(path)
    write_safetensors(path, {k: v for k, v in tensors.items() if not drop(k)}, meta)


def test_trainer_state_without_optimizer_tensors_is_a_loud_error(trained):
    path = trained.run_dir / "trainer.safetensors"
    without(path, lambda k: k.startswith("optim."))
    with pytest.raises(UserError, match=r"trainer\.safetensors: no optimizer state"):
        make_trainer(trained.run_dir).restore()


@pytest.mark.parametrize("drop", ["one parameter", "one key"])
def test_partly_missing_optimizer_state_is_a_loud_error(trained, drop):
    path = trained.run_dir / "trainer.safetensors"
    gone = "optim.0." if drop == "one parameter" else "optim.0.exp_avg_sq"
    without(path, lambda k: k.startswith(gone))
    with pytest.raises(UserError, match="optimizer"):
        make_trainer(trained.run_dir).restore()


# -- a non-finite loss (PITFALL 10) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "shakespeare-40k.txt"
    path.write_text(read_corpus(None).text[:40_000], encoding="utf-8")
    return path


def all_finite(path: Path) -> bool:
    tensors, _ = read_safetensors(path)
    return all(torch.isfinite(t.float()).all() for k, t in tensors.items() if not k.startswith("rng."))


def test_a_nan_loss_stops_the_run_and_leaves_the_last_good_checkpoint(monkeypatch, tmp_path, small_corpus):
    real_forward = GPT.forward
    calls = 0

    def forward(self, idx, targets=None, *args, **kwargs):
        nonlocal calls
        out = real_forward(self, idx, targets, *args, **kwargs)
        if self.training and targets is not None:
            calls += 1
            if calls > 12:  # training steps 13, 14, ... produce NaN
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(GPT, "forward", forward)
    run = tmp_path / "run"
    overrides = ["train.max_iters=30", "train.eval_interval=5"]
    with pytest.raises(UserError, match=r"loss became nan at step 13.*last good state"):
        train_gpt("tiny", str(small_corpus), str(run), overrides=overrides, device="cpu", say=quiet)
    _, meta = read_safetensors(run / "trainer.safetensors")
    assert meta["step"] == 10
    assert [row["step"] for row in read_log(run / "log.csv")] == [0, 5, 10]
    assert all_finite(run / "trainer.safetensors") and all_finite(run / "model.safetensors")
    assert not list(run.rglob(".*.tmp"))
    monkeypatch.setattr(GPT, "forward", real_forward)
    result, _, _ = train_gpt(resume=str(run), device="cpu", say=quiet)  # the run is still good
    assert result.steps == 30 and math.isfinite(result.final_val_loss)


def test_a_nan_evaluation_is_never_saved(monkeypatch, tmp_path, small_corpus):
    real_forward = GPT.forward

    def forward(self, idx, targets=None, *args, **kwargs):
        out = real_forward(self, idx, targets, *args, **kwargs)
        if not self.training and targets is not None and self.bad:
            out.loss = out.loss + float("inf")
        return out

    monkeypatch.setattr(GPT, "bad", False, raising=False)
    monkeypatch.setattr(GPT, "forward", forward)
    run = tmp_path / "run"
    train_gpt(
        "tiny",
        str(small_corpus),
        str(run),
        overrides=["train.max_iters=4", "train.eval_interval=2"],
        stop_at=2,
        device="cpu",
        say=quiet,
    )
    before = {name: (run / name).read_bytes() for name in ("model.safetensors", "trainer.safetensors", "log.csv")}
    monkeypatch.setattr(GPT, "bad", True, raising=False)
    with pytest.raises(UserError, match="evaluation loss is not finite at step 4"):
        train_gpt(resume=str(run), device="cpu", say=quiet)
    assert {name: (run / name).read_bytes() for name in before} == before


def test_load_run_names_a_truncated_model_file(tmp_path, small_corpus):
    run = tmp_path / "run"
    train_gpt("tiny", str(small_corpus), str(run), overrides=["train.max_iters=1"], device="cpu", say=quiet)
    model = GPT_FAMILY.load(run).model
    assert model.lm_head.weight is model.tok_emb.weight
    raw = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(UserError, match=r"model\.safetensors: truncated"):
        GPT_FAMILY.load(run)
