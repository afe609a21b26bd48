"""The fast path of training: fused attention, torch.compile with clean checkpoints, fused AdamW,
and on CUDA bf16 autocast, TF32 and pinned non-blocking batch copies.

The CPU tests run everywhere; the CUDA ones are skipped without a GPU (scripts/gpu_check.sh
runs them, with `kqv bench gpt --device cuda`, on a machine that has one).
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kqv.nn.attention
from kqv.config import GPTConfig, TrainConfig
from kqv.device import amp_dtype, configure_device
from kqv.models.gpt import GPT
from kqv.runs.weights import model_tensors, read_safetensors
from kqv.train.gpt_run import train_gpt
from kqv.train.loop import Trainer
from kqv.train.optim import make_optimizer

CONFIG = GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quiet(_: str) -> None:
    pass


class RandomBatches:
    def __init__(self, batch_size: int = 4, seed: int = 0):
        self.g, self.batch_size = torch.Generator().manual_seed(seed), batch_size

    def next_batch(self):
        tokens = torch.randint(0, CONFIG.vocab_size, (self.batch_size, CONFIG.block_size + 1), generator=self.g)
        return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()  # (B, T), (B, T)

    def state_dict(self):
        return {"generator": self.g.get_state().tolist()}

    def load_state_dict(self, state):
        self.g.set_state(torch.tensor(state["generator"], dtype=torch.uint8))


def trainer(run_dir: Path, compiled_backend: str | None = None, device: str = "cpu", **train) -> Trainer:
    torch.manual_seed(0)
    model = GPT(CONFIG).to(device)
    compiled = torch.compile(model, backend=compiled_backend) if compiled_backend else None
    cfg = TrainConfig(**{"batch_size": 4, "max_iters": 2, "eval_interval": 2, "eval_iters": 1, **train})
    batches = RandomBatches(cfg.batch_size)
    evals = {"train": [batches.next_batch()], "val": [batches.next_batch()]}
    return Trainer(model, cfg, batches, evals, run_dir, device, amp_dtype(device), compiled, quiet)


def test_training_runs_attention_through_the_fused_kernel(monkeypatch, tmp_path):
    """Every training forward of every layer goes through F.scaled_dot_product_attention (flash attention
    on CUDA), none through the written-out softmax(q·kᵀ/√hs)·v."""
    calls = {"fused": 0, "written_out": 0}
    sdpa, written_out = F.scaled_dot_product_attention, kqv.nn.attention.attention

    def counting_sdpa(*args, **kwargs):
        calls["fused"] += torch.is_grad_enabled()  # training forwards only, not the no-grad evaluations
        return sdpa(*args, **kwargs)

    def counting_written_out(*args, **kwargs):
        calls["written_out"] += 1
        return written_out(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    monkeypatch.setattr(kqv.nn.attention, "attention", counting_written_out)
    trainer(tmp_path, grad_accum=3).fit()
    assert calls == {"fused": CONFIG.n_layer * 3 * 2, "written_out": 0}  # layers × micro-steps × steps


def test_a_compiled_models_checkpoints_have_clean_names(tmp_path):
    """torch.compile wraps the model as `_orig_mod`; the checkpoints hold the module's own names.

    (The aot_eager backend traces and compiles like the default inductor but skips code generation,
    which would take ~15 s per graph on 2 cores.)
    """
    t = trainer(tmp_path / "run", compiled_backend="aot_eager")
    assert any("_orig_mod" in name for name in t.forward.state_dict())  # it is wrapped
    result = t.fit()
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(result.step_losses)))
    expected = set(model_tensors(t.model))
    assert not any("_orig_mod" in name for name in expected)
    weights, _ = read_safetensors(tmp_path / "run" / "model.safetensors")
    state, _ = read_safetensors(tmp_path / "run" / "trainer.safetensors")
    assert set(weights) == expected
    assert {k.removeprefix("model.") for k in state if k.startswith("model.")} == expected
    fresh = trainer(tmp_path / "run")  # an uncompiled trainer resumes the compiled run's state
    fresh.restore()
    assert fresh.step == 2


def test_adamw_is_fused_where_this_torch_has_the_kernel():
    model = GPT(CONFIG)
    optimizer = make_optimizer(model, 1e-3, 0.1, (0.9, 0.99), "cpu")
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], fused=True)
        has_cpu_kernel = True
    except (RuntimeError, TypeError):
        has_cpu_kernel = False
    assert bool(optimizer.defaults["fused"]) == has_cpu_kernel


def test_the_cpu_trains_in_fp32_and_keeps_its_matmul_settings():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    configure_device("cpu")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    assert amp_dtype("cpu") is None
    batch = RandomBatches().next_batch()
    moved = Trainer.__new__(Trainer)
    moved.device, moved.pin = "cpu", False
    assert all(a is b for a, b in zip(moved._to_device(batch), batch, strict=True))  # no copy on the CPU


@cuda
def test_cuda_uses_bf16_tf32_and_pinned_non_blocking_copies(tmp_path):
    configure_device("cuda")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert amp_dtype("cuda:0") == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    t = trainer(tmp_path / "run", device="cuda:0")
    assert t.pin and t.optimizer.defaults["fused"]
    x, y = t._to_device(RandomBatches().next_batch())
    assert x.device.type == "cuda" and y.device.type == "cuda"
    result = t.fit()
    assert all(torch.isfinite(torch.tensor(result.step_losses)))


@cuda
def test_cuda_compiled_bf16_training_writes_clean_checkpoints(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question. " * 200)
    overrides = ["train.max_iters=4", "train.eval_interval=2", "train.eval_iters=1"]
    _, run_dir, summary = train_gpt(
        "tiny", str(corpus), str(tmp_path / "run"), overrides=overrides, device="cuda", compile_model=True, say=quiet
    )
    assert summary["steps"] == 4 and summary["device"] == "cuda"
    weights, _ = read_safetensors(run_dir / "model.safetensors")
    assert weights and not any("_orig_mod" in k or k.startswith("module.") for k in weights)
