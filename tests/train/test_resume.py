"""Resume (PITFALL 9) and gradient accumulation (PITFALL 11).

A run stopped and resumed must train on exactly what an uninterrupted run trains on:
same per-step losses, same final weights and optimiser moments, same log. Dropout is
on, so a resume that forgot the RNG state would show.
"""

import os
import signal
from pathlib import Path

import pytest
import torch

import kqv.fileio
import kqv.runs.weights
from kqv.config import GPTConfig, TrainConfig
from kqv.data.text import read_corpus
from kqv.errors import Terminated, UserError
from kqv.models.gpt import GPT
from kqv.runs.weights import read_safetensors
from kqv.train.gpt_run import train_gpt
from kqv.train.loop import Trainer, read_log
from tests.train.writes import gradients_at_the_step, patch_every_writer

OVERRIDES = ["train.max_iters=30", "train.eval_interval=10", "dropout=0.1", "train.state_every_s=0"]


def quiet(_: str) -> None:
    pass


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "shakespeare-40k.txt"
    path.write_text(read_corpus(None).text[:40_000], encoding="utf-8")
    return str(path)


def train(corpus: str, out: Path, stop_at: int | None = None):
    result, run_dir, _ = train_gpt(
        "tiny", corpus, str(out), overrides=OVERRIDES, device="cpu", stop_at=stop_at, say=quiet
    )
    return result


def resume(run_dir: Path):
    result, _, _ = train_gpt(resume=str(run_dir), device="cpu", say=quiet)
    return result


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = train(corpus, run_dir)
    assert result.steps == 30 and len(result.step_losses) == 30
    return result, run_dir


def assert_same_final_state(a: Path, b: Path) -> None:
    """Bit for bit: every tensor (weights, AdamW moments, RNG states), the data position, the best loss, the log."""
    for name in ("trainer.safetensors", "model.safetensors"):
        (ta, ma), (tb, mb) = read_safetensors(a / name), read_safetensors(b / name)
        assert ta.keys() == tb.keys(), name
        for key in ta:
            assert torch.equal(tb[key], ta[key]), f"{name}: {key}"
        assert any(k.startswith("rng.") for k in ta) == (name == "trainer.safetensors")
        if name == "trainer.safetensors":
            assert mb["step"] == ma["step"] == 30
            assert mb["sampler"] == ma["sampler"]
            assert mb["best_val"] == ma["best_val"]
            assert [{k: r[k] for k in EXACT} for r in mb["log"]] == [{k: r[k] for k in EXACT} for r in ma["log"]]
    log_a, log_b = read_log(a / "log.csv"), read_log(b / "log.csv")
    assert [r["step"] for r in log_b] == [r["step"] for r in log_a] == [0, 10, 20, 30]
    assert [{k: r[k] for k in EXACT} for r in log_b] == [{k: r[k] for k in EXACT} for r in log_a]


EXACT = ("step", "train_loss", "val_loss", "lr")  # the log's other columns are timings


@pytest.mark.parametrize("stop_at", [10, 15, 20], ids=["at-an-eval", "between-evals", "at-a-later-eval"])
def test_a_resumed_run_repeats_the_uninterrupted_one(corpus, uninterrupted, tmp_path, stop_at):
    reference, reference_dir = uninterrupted
    run_dir = tmp_path / "run"
    first = train(corpus, run_dir, stop_at=stop_at)
    assert first.steps == stop_at
    assert first.step_losses == reference.step_losses[:stop_at]
    saved = stop_at  # a run that stops early writes its state where it stopped, between evaluations too
    assert read_safetensors(run_dir / "trainer.safetensors")[1]["step"] == saved

    resumed = resume(run_dir)
    assert resumed.steps == 30
    assert len(resumed.step_losses) == 30 - saved
    assert resumed.step_losses == reference.step_losses[saved:]  # bit for bit
    assert resumed.best_val_loss == reference.best_val_loss
    assert_same_final_state(reference_dir, run_dir)


def test_dropout_is_on_so_the_rng_state_matters(uninterrupted, corpus, tmp_path):
    """Guard for the test above: resuming with a different torch RNG state changes the losses."""
    reference, _ = uninterrupted
    run_dir = tmp_path / "run"
    train(corpus, run_dir, stop_at=10)
    path = run_dir / "trainer.safetensors"
    tensors, meta = read_safetensors(path)
    tensors["rng.torch"] = torch.Generator().manual_seed(123).get_state()
    kqv.runs.weights.write_safetensors(path, tensors, meta)
    resumed = resume(run_dir)
    assert max(abs(a - b) for a, b in zip(resumed.step_losses, reference.step_losses[10:], strict=True)) > 1e-4


def test_resume_refuses_new_settings(uninterrupted):
    _, run_dir = uninterrupted
    with pytest.raises(UserError, match="--resume continues a run with its own settings"):
        train_gpt(resume=str(run_dir), overrides=["lr=1"], device="cpu", say=quiet)
    with pytest.raises(UserError, match="no such run directory"):
        train_gpt(resume=str(run_dir.parent / "missing"), device="cpu", say=quiet)


def test_a_run_stopped_before_its_first_evaluation_can_resume(corpus, uninterrupted, tmp_path):
    reference, reference_dir = uninterrupted
    run_dir = tmp_path / "run"
    train(corpus, run_dir, stop_at=5)
    assert read_safetensors(run_dir / "trainer.safetensors")[1]["step"] == 5
    resumed = resume(run_dir)
    assert resumed.step_losses == reference.step_losses[5:]
    assert_same_final_state(reference_dir, run_dir)


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in kqv catches it."""


def test_killed_between_the_state_and_the_log_loses_no_log_row(corpus, uninterrupted, monkeypatch, tmp_path):
    """Kill the run right after the first of {trainer.safetensors, log.csv} is written at step 20."""
    reference, reference_dir = uninterrupted
    writes = 0

    def patched(real):
        def write(path, data):
            nonlocal writes
            out = real(path, data)
            if Path(path).name in ("trainer.safetensors", "log.csv"):
                writes += 1
                if writes == 5:  # steps 0 and 10 wrote both files; this is step 20's first
                    raise Killed
            return out

        return write

    patch_every_writer(monkeypatch, patched(kqv.fileio.atomic_write_bytes))
    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        train(corpus, run_dir)
    monkeypatch.undo()
    resumed = resume(run_dir)
    assert resumed.steps == 30
    assert_same_final_state(reference_dir, run_dir)


def signal_during_step(monkeypatch, step: int, *signums: int, then=None) -> None:
    """Send `signums` to this process while training step `step` draws its batch (mid-step), then call `then()`."""
    real_fit = Trainer._fit

    def fit(trainer, *args):
        draw, drawn = trainer.batches.next_batch, 0

        def next_batch():
            nonlocal drawn
            drawn += 1
            if drawn == step:
                for signum in signums:
                    os.kill(os.getpid(), signum)
                if then is not None:
                    then()
            return draw()

        trainer.batches.next_batch = next_batch
        return real_fit(trainer, *args)

    monkeypatch.setattr(Trainer, "_fit", fit)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_mid_step_finishes_the_step_saves_it_and_says_how_to_continue(
    corpus, uninterrupted, monkeypatch, tmp_path, signum
):
    reference, reference_dir = uninterrupted
    run_dir = tmp_path / "run"
    signal_during_step(monkeypatch, 17, signum)  # between evaluations (10, 20)
    with pytest.raises(KeyboardInterrupt if signum == signal.SIGINT else Terminated) as stopped:
        train(corpus, run_dir)
    monkeypatch.undo()
    assert str(stopped.value) == f"saved step 17 of 30, in {run_dir}; continue with `kqv gpt train --resume {run_dir}`"
    assert read_safetensors(run_dir / "trainer.safetensors")[1]["step"] == 17
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the training's handlers are gone
    resumed = resume(run_dir)
    assert resumed.step_losses == reference.step_losses[17:]  # bit for bit: the state was taken between steps
    assert_same_final_state(reference_dir, run_dir)


def test_a_second_ctrl_c_stops_at_once_and_names_the_last_state(corpus, uninterrupted, monkeypatch, tmp_path):
    reference, reference_dir = uninterrupted
    run_dir = tmp_path / "run"
    signal_during_step(monkeypatch, 14, signal.SIGINT, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(corpus, run_dir)
    monkeypatch.undo()
    assert str(stopped.value).startswith("the last state written is step 10 of 30, in ")
    assert read_safetensors(run_dir / "trainer.safetensors")[1]["step"] == 10
    resume(run_dir)
    assert_same_final_state(reference_dir, run_dir)


def test_the_state_is_also_written_by_wall_time(corpus, uninterrupted, monkeypatch, tmp_path):
    """state_every_s: a kill (nothing can catch SIGKILL) loses at most that much training."""
    reference, reference_dir = uninterrupted

    def killed():
        raise Killed

    run_dir = tmp_path / "run"
    signal_during_step(monkeypatch, 16, then=killed)  # during step 16: steps 1 … 15 are done
    with pytest.raises(Killed):
        train_gpt("tiny", corpus, str(run_dir), overrides=[*OVERRIDES, "train.state_every_s=1e-9"], device="cpu",
                  say=quiet)  # fmt: skip
    monkeypatch.undo()
    assert read_safetensors(run_dir / "trainer.safetensors")[1]["step"] == 15
    resumed = resume(run_dir)
    assert resumed.step_losses == reference.step_losses[15:]
    assert_same_final_state(reference_dir, run_dir)

    never = tmp_path / "never"  # state_every_s=0: only the evaluations write it
    signal_during_step(monkeypatch, 16, then=killed)
    with pytest.raises(Killed):
        train(corpus, never)
    assert read_safetensors(never / "trainer.safetensors")[1]["step"] == 10


def test_resume_removes_temp_files_left_by_a_kill(corpus, tmp_path):
    run_dir = tmp_path / "run"
    train(corpus, run_dir, stop_at=10)
    stale = run_dir / ".trainer.safetensors.k1ll3d.tmp"  # what SIGKILL during a write leaves
    stale.write_bytes((run_dir / "trainer.safetensors").read_bytes()[:1000])
    assert resume(run_dir).steps == 30
    assert not list(run_dir.rglob(".*.tmp"))


# -- gradient accumulation (PITFALL 11) ---------------------------------------------------------------

CONFIG = GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16)


class ListBatches:
    """Hands out the given batches in order: both runs see exactly the same tokens."""

    def __init__(self, batches):
        self.batches, self.drawn = list(batches), 0

    def next_batch(self):
        self.drawn += 1
        return self.batches[self.drawn - 1]

    def state_dict(self):
        return {"drawn": self.drawn}

    def load_state_dict(self, state):
        self.drawn = state["drawn"]


def one_step(run_dir: Path, x: torch.Tensor, y: torch.Tensor, grad_accum: int):
    """One optimiser step on (x, y) split into `grad_accum` micro-batches -> (trainer, gradients seen by AdamW)."""
    torch.manual_seed(0)
    model = GPT(CONFIG)
    B = x.shape[0] // grad_accum
    micro = [(x[i * B : (i + 1) * B], y[i * B : (i + 1) * B]) for i in range(grad_accum)]
    cfg = TrainConfig(
        batch_size=B, grad_accum=grad_accum, max_iters=1, lr=1e-2, warmup_iters=0, grad_clip=0.0,
        eval_interval=1, eval_iters=1,
    )  # fmt: skip
    trainer = Trainer(model, cfg, ListBatches(micro), {"train": [(x, y)], "val": [(x, y)]}, run_dir, say=quiet)
    grads = gradients_at_the_step(trainer)
    result = trainer.fit()
    assert trainer.batches.drawn == grad_accum
    return trainer, result, grads


@pytest.mark.parametrize("k", [2, 4])
def test_k_micro_steps_of_b_equal_one_step_of_kb(tmp_path, k):
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, CONFIG.vocab_size, (8, CONFIG.block_size + 1), generator=g)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()  # (8, T), (8, T)
    whole, whole_result, whole_grads = one_step(tmp_path / "whole", x, y, grad_accum=1)
    accum, accum_result, accum_grads = one_step(tmp_path / "accum", x, y, grad_accum=k)

    torch.manual_seed(0)  # the reference gradient: autograd on the full batch of 8
    reference = GPT(CONFIG)
    reference(x, y).loss.backward()
    for name, p in reference.named_parameters():
        torch.testing.assert_close(whole_grads[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(accum_grads[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)

    assert accum_result.step_losses == pytest.approx(whole_result.step_losses, abs=1e-6)
    for (name, a), b in zip(whole.model.named_parameters(), accum.model.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)
    with torch.no_grad():
        after = whole.model.eval()(x, y).loss.item(), accum.model.eval()(x, y).loss.item()
    assert after[1] == pytest.approx(after[0], abs=1e-6)
    assert after[0] < whole_result.step_losses[0]  # the step did something
