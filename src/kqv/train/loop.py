"""One training loop for every kqv model: `model(*batch).loss` is all it needs.

A batch is a tuple of tensors — (x, y) for the GPT, (src, tgt_in, tgt_out) for the
translation Transformer. A batch with `n_tokens` says how many targets its loss is a
mean over (the translation batch: its non-padding target tokens); otherwise every
element of the last tensor (the targets) counts. An output with `nll` is evaluated on
it (plain NLL, not the label-smoothed loss).

Per optimiser step: `grad_accum` micro-batches, token-weighted: micro-batch i, with n_i
of the step's N targets, adds loss_i · n_i / N, so the k micro-steps give the gradient
of the concatenated batch (the sum of token losses ÷ N), whatever the padding in each —
not the mean of k means, which would count a 4-token micro-batch as much as a 16-token
one. Then gradient clipping,
AdamW, the learning rate of `cfg.schedule` (kqv.train.optim.scheduled_lr). Every `eval_interval` steps and at
the end: the mean loss on fixed train and validation batches, a CSV row, the
best-validation weights, and the full trainer state for an exact resume. The state is also
written every `state_every_s` seconds of wall time, and when the run stops early (`stop_at`).

Ctrl-C or SIGTERM during `fit` asks the run to stop: the step under way finishes, its state is
written, and the exception goes on with a message saying which step was saved and how to continue
(a second signal stops at once, losing only what came after the last written state). A signal
landing mid-step would leave the weights, the optimiser and the data position out of step with
one another; at a step's end they agree, so the resume is exact.

A non-finite loss stops the run before anything is written, so no checkpoint
ever holds NaNs. The trainer state also keeps the log rows, so a resume never depends on
log.csv (a file for people and plots, rewritten from the state when damaged). Everything
read back from a state is checked — ranges, types, shapes, finite values — and any problem
is one line naming the file.

Under torchrun (kqv.train.distributed) the model is wrapped in DistributedDataParallel:
each rank runs the micro-steps on its shard of the batch, gradients are all-reduced
on the last micro-step only (`no_sync` on the others), losses are averaged over the
ranks, and only rank 0 writes files, prints and shows progress. On CUDA, batches are
copied from pinned host memory without blocking.
"""

import csv
import io
import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kqv.config import TrainConfig
from kqv.errors import Terminated, UserError
from kqv.fileio import atomic_write_bytes
from kqv.progress import progress_bar
from kqv.runs.weights import (
    check_finite,
    load_model_tensors,
    model_tensors,
    read_safetensors,
    save_weights,
    write_safetensors,
)
from kqv.train import distributed
from kqv.train.checkpoint import load_optimizer, optimizer_tensors
from kqv.train.optim import make_optimizer, scheduled_lr

LOG_FIELDS = ["step", "train_loss", "val_loss", "lr", "tokens_per_s", "elapsed_s"]


@dataclass
class TrainResult:
    steps: int
    best_val_loss: float
    final_val_loss: float
    final_train_loss: float
    tokens_per_second: float
    train_seconds: float
    log: list[dict] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)  # training loss of each step run in this call
    step_grad_norms: list[float | None] = field(default_factory=list)  # norm before clipping (None: no clipping)


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        train_batches,  # .next_batch() -> tuple of tensors; .state_dict(); .load_state_dict()
        eval_sets: dict[str, list[tuple[torch.Tensor, ...]]],  # "train" and "val"
        run_dir: Path,
        device: str = "cpu",
        amp_dtype: torch.dtype | None = None,
        compiled: nn.Module | None = None,
        say: Callable[[str], None] = print,
        stamp: dict | None = None,
        require_checksum: bool = False,
        verify: Callable[[dict], None] | None = None,
        resume_command: str | None = None,
    ) -> None:
        """`stamp`: metadata written into every checkpoint (e.g. config.json's sha256); `require_checksum`:
        refuse a trainer state without its sha256; `verify(meta)`: a check of a restored state's metadata
        (e.g. that config.json is the one the stamp recorded), raising a UserError; `resume_command`:
        the command that continues this run, for the message after Ctrl-C."""
        distributed.check_launch()
        self.stamp, self.require_checksum, self.verify = dict(stamp or {}), require_checksum, verify
        self.model, self.cfg, self.batches, self.eval_sets = model, cfg, train_batches, eval_sets
        # torch.compile wraps the model; checkpoints use the original (`compiled or model` would call len() on it)
        self.forward = model if compiled is None else compiled
        self.train_forward = distributed.wrap(self.forward, device)  # DDP around it under torchrun
        self.world, self.main = distributed.world_size(), distributed.is_main()
        self.run_dir, self.device, self.say = Path(run_dir), device, say
        self.resume_command = resume_command
        self.pin = device.startswith("cuda")  # pinned host memory: the copy to the GPU can overlap compute
        self.autocast = (
            torch.autocast(device_type=device.split(":")[0], dtype=amp_dtype)
            if amp_dtype is not None
            else nullcontext()
        )
        self.optimizer = make_optimizer(
            model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device, cfg.decay_embeddings, cfg.eps
        )
        self.step = 0
        self.best_val = math.inf
        self.train_seconds = 0.0
        self.tokens_seen = 0
        self.log: list[dict] = []
        self.saved_step = -1  # the step of the trainer state last written (-1: none by this process)
        self.saved_at = time.monotonic()

    # -- state --------------------------------------------------------------
    def save_state(self) -> None:
        tensors = {f"model.{k}": v for k, v in model_tensors(self.model).items()}
        opt_tensors, opt_meta = optimizer_tensors(self.optimizer)
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        meta = {
            "step": self.step,
            "best_val": self.best_val if math.isfinite(self.best_val) else None,
            "train_seconds": self.train_seconds,
            "tokens_seen": self.tokens_seen,
            "sampler": self.batches.state_dict(),
            "optimizer": opt_meta,
            "processes": self.world,  # for the record only: a resume may use any number
            "log": self.log,
            **self.stamp,
        }
        write_safetensors(self.run_dir / "trainer.safetensors", tensors, meta)
        self.saved_step, self.saved_at = self.step, time.monotonic()

    def restore(self) -> None:
        path = self.run_dir / "trainer.safetensors"
        tensors, meta = read_safetensors(path, require_checksum=self.require_checksum)
        problem = state_problem(meta, self.cfg.max_iters)
        if problem:
            raise UserError(f"{path}: damaged: {problem}; it cannot resume")
        if self.verify is not None:
            self.verify(meta)
        weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        load_model_tensors(self.model, weights, str(path))
        check_finite({k: v for k, v in tensors.items() if k.startswith("optim.")}, str(path))
        load_optimizer(self.optimizer, tensors, meta, str(path))
        rng = tensors.get("rng.torch")
        if rng is None or rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape:
            raise UserError(f"{path}: damaged: the random number generator state (rng.torch) is missing or malformed")
        torch.set_rng_state(rng)
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        try:
            self.batches.load_state_dict(meta["sampler"])
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise UserError(
                f"{path}: damaged: the data position (sampler) is incomplete or malformed ({exc})"
            ) from None
        self.step = self.saved_step = int(meta["step"])
        self.best_val = meta["best_val"] if meta["best_val"] is not None else math.inf
        self.train_seconds = float(meta["train_seconds"])
        self.tokens_seen = int(meta["tokens_seen"])
        if "log" in meta:  # the log as it was when the state was written; log.csv is rewritten from it
            self.log = [dict(row) for row in meta["log"]]
            if self.main:
                write_log(self.run_dir / "log.csv", self.log)
        else:  # a state written before the log moved into it
            self.log = [row for row in read_log(self.run_dir / "log.csv") if row["step"] <= self.step]

    # -- evaluation ---------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        losses = {}
        for name, batches in self.eval_sets.items():
            total, count = 0.0, 0
            for batch in batches:
                with self.autocast:
                    out = self.forward(*self._to_device(batch))
                n = getattr(out, "n_tokens", 0) or 1  # token-weighted when batches differ in size
                loss = out.nll if getattr(out, "nll", None) is not None else out.loss
                total, count = total + loss.item() * n, count + n
            total, count = distributed.all_reduce_sum([total, count])  # every rank scored its shard
            losses[name] = total / count
        self.model.train()
        return losses

    # -- the loop -----------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train to `cfg.max_iters` (or `stop_at`), writing the state as the module docstring says."""
        # under torchrun the ranks could see a signal at different steps and wait on each other forever
        with StopRequest(enabled=self.world == 1) as stop:
            try:
                return self._fit(stop_at, stop)
            except (KeyboardInterrupt, Terminated) as exc:
                if exc.args or self.saved_step < 0 or not self.main:
                    raise
                raise type(exc)(self._where_to_continue("the last state written is")) from None

    def _where_to_continue(self, saved: str) -> str:
        hint = f"; continue with `{self.resume_command}`" if self.resume_command else ""
        return f"{saved} step {self.saved_step} of {self.cfg.max_iters}, in {self.run_dir}{hint}"

    def _fit(self, stop_at: int | None, stop: "StopRequest") -> TrainResult:
        cfg = self.cfg
        last = min(cfg.max_iters, stop_at) if stop_at is not None else cfg.max_iters
        self.model.train()
        step_losses: list[float] = []
        grad_norms: list[float | None] = []
        bar = progress_bar(cfg.max_iters, "train", unit="step") if self.main else _NoBar()
        bar.update(self.step)
        if self.step == 0 and not self.log:
            self._evaluate_and_save(lr=scheduled_lr(0, cfg))
        while self.step < last:
            if stop.requested:  # between steps, where the weights, optimiser and data position agree
                bar.close()
                self._save_unless_saved()
                raise stop.exception(self._where_to_continue("saved"))
            lr = scheduled_lr(self.step, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            distributed.seed_rank(cfg.seed, self.step)  # ranks > 0: dropout masks of their own
            started = time.perf_counter()
            micro_batches = [self.batches.next_batch() for _ in range(cfg.grad_accum)]  # GPT: B/N rows on N ranks
            counts = [target_count(b) for b in micro_batches]  # targets each micro-batch's loss is a mean over
            step_tokens = sum(counts)
            if self.world > 1 and any(hasattr(b, "n_tokens") for b in micro_batches):
                step_tokens = int(distributed.all_reduce_sum([float(step_tokens)])[0])  # ranks' shards may differ
            elif self.world > 1:
                step_tokens *= self.world  # equal shards: no collective (on a GPU it would wait every step)
            loss_sum = torch.zeros((), device=self.device)
            for micro, (batch, n) in enumerate(zip(micro_batches, counts, strict=True)):
                batch = self._to_device(batch)  # GPT: (B, T), (B, T)
                with distributed.no_sync(self.train_forward, skip=micro < cfg.grad_accum - 1):
                    with self.autocast:
                        out = self.train_forward(*batch)
                    # token-weighted: the step's loss is (sum of token losses) / step_tokens; DDP averages over
                    # the ranks, so each rank's share is multiplied back by their number
                    loss = out.loss * (n * self.world / step_tokens)
                    loss.backward()  # under DDP: on the last micro-step, the gradients are averaged over the ranks
                loss_sum += loss.detach()  # no .item() here: on a GPU that would wait for every micro-step
            loss_sum = distributed.all_reduce_mean(loss_sum)  # the global batch's loss, the same on every rank
            norm = torch.full((), math.nan, device=loss_sum.device)
            if cfg.grad_clip > 0:  # the gradients are the same on every rank by now, and so is their norm
                norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum, grad_norm = torch.stack([loss_sum.float(), norm.float()]).tolist()  # the step's one sync
            self.tokens_seen += step_tokens
            if not math.isfinite(loss_sum):  # the step is taken in memory only: nothing of it is ever saved
                bar.close()
                raise UserError(
                    f"the training loss became {loss_sum} at step {self.step + 1}; nothing was saved for this step "
                    f"(the last good state is in {self.run_dir}); try a lower lr or grad_clip"
                )
            self.step += 1
            seconds = time.perf_counter() - started
            self.train_seconds += seconds
            step_losses.append(loss_sum)
            grad_norms.append(grad_norm if cfg.grad_clip > 0 else None)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.4f}", tok_s=f"{step_tokens / seconds:,.0f}", refresh=False)
            if self.step % cfg.eval_interval == 0 or self.step == cfg.max_iters:
                bar.clear()
                self._evaluate_and_save(lr)
                bar.refresh()
            elif self.main and cfg.state_every_s and time.monotonic() - self.saved_at >= cfg.state_every_s:
                self.save_state()  # by wall time too: a kill loses at most state_every_s of training
        self._save_unless_saved()  # stopped early (stop_at): continue from here
        bar.close()
        final = self.log[-1] if self.log else {"train_loss": math.nan, "val_loss": math.nan}
        return TrainResult(
            steps=self.step,
            best_val_loss=self.best_val,
            final_val_loss=final["val_loss"],
            final_train_loss=final["train_loss"],
            tokens_per_second=self.tokens_seen / self.train_seconds if self.train_seconds else math.nan,
            train_seconds=self.train_seconds,
            log=list(self.log),
            step_losses=step_losses,
            step_grad_norms=grad_norms,
        )

    def _save_unless_saved(self) -> None:
        """Write the trainer state of this step unless it is on disk already (rank 0 writes)."""
        if self.main and self.saved_step != self.step:
            self.save_state()

    def _to_device(self, batch) -> tuple[torch.Tensor, ...]:
        tensors = (t for t in batch if isinstance(t, torch.Tensor))
        if self.pin:
            return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in tensors)
        return tuple(t.to(self.device) for t in tensors)

    def _evaluate_and_save(self, lr: float) -> None:
        losses = self.evaluate()
        row = {
            "step": self.step,
            "train_loss": losses["train"],
            "val_loss": losses["val"],
            "lr": lr,
            "tokens_per_s": self.tokens_seen / self.train_seconds if self.train_seconds else 0.0,
            "elapsed_s": self.train_seconds,
        }
        if not all(math.isfinite(v) for v in (row["train_loss"], row["val_loss"])):
            raise UserError(f"the evaluation loss is not finite at step {self.step}; nothing was saved")
        self.log.append(row)  # every rank keeps the log (the numbers are the same); rank 0 writes
        improved = row["val_loss"] < self.best_val
        if improved:
            self.best_val = row["val_loss"]
        if self.main:
            if improved:
                meta = {"step": self.step, "val_loss": self.best_val, **self.stamp}
                save_weights(self.run_dir / "model.safetensors", self.model, meta)
            write_log(self.run_dir / "log.csv", self.log)  # the log first: a resume drops rows past the saved step
            self.save_state()
        distributed.barrier()  # the others wait until the checkpoint is whole
        if not self.main:
            return
        self.say(
            f"step {self.step:>5}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"lr {lr:.2e}  {row['tokens_per_s']:,.0f} tok/s  {row['elapsed_s']:.1f} s" + ("  *best" if improved else "")
        )


class StopRequest:
    """SIGINT and SIGTERM while training: the first is noted (`requested`; the loop stops at the end of
    the step), a second goes to the handler that was there before, which stops the run at once.

    Signals the process ignores stay ignored; outside the main thread nothing is installed."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def exception(self, message: str) -> BaseException:
        return KeyboardInterrupt(message) if self.signum == signal.SIGINT else Terminated(message)

    def __enter__(self) -> "StopRequest":
        if self.enabled:
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self.previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    def _note(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            return
        previous = self.previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        else:  # SIG_DFL (or a handler set outside Python): stop now, as the default would
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


class _NoBar:
    """The progress bar of ranks other than 0: they show nothing."""

    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs) -> None: ...
    def clear(self) -> None: ...
    def refresh(self) -> None: ...
    def close(self) -> None: ...


def write_log(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_bytes(path, buf.getvalue().encode())


def read_log(path: Path) -> list[dict]:
    """The rows of a log.csv ([] when there is none); a damaged file is a UserError naming it."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [
                {k: (int(v) if k == "step" else float(v)) for k, v in row.items() if k in LOG_FIELDS}
                for row in csv.DictReader(f)
            ]
    except (OSError, ValueError, TypeError, csv.Error, UnicodeDecodeError):
        raise UserError(
            f"{path}: damaged (not the CSV log kqv writes); delete it or resume the run to rewrite it"
        ) from None
    if any(set(row) != set(LOG_FIELDS) for row in rows):
        raise UserError(f"{path}: damaged (columns missing); delete it or resume the run to rewrite it")
    return rows


def target_count(batch) -> int:
    """How many targets a batch's mean loss is over: its `n_tokens` (padding left out), else its last tensor's size."""
    n = getattr(batch, "n_tokens", None)
    return int(n) if n is not None else batch[-1].numel()


def state_problem(meta: dict, max_iters: int) -> str | None:
    """What is wrong with a trainer state's metadata, in a few words, or None (values are never echoed)."""

    def number(value, low=0.0) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= low

    def whole(value, low=0, high=2**63 - 1) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    if not whole(meta.get("step"), 0, max_iters):
        return f"the step is missing or outside 0 … {max_iters} (max_iters)"
    if "best_val" not in meta or not (meta["best_val"] is None or number(meta["best_val"])):
        return "the best validation loss is missing or not a finite number"
    if not number(meta.get("train_seconds")):
        return "train_seconds is missing or not a finite number ≥ 0"
    if not whole(meta.get("tokens_seen")):
        return "tokens_seen is missing or not a whole number ≥ 0"
    if not isinstance(meta.get("sampler"), dict):
        return "the data position (sampler) is missing"
    optimizer = meta.get("optimizer")
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("param_groups"), list):
        return "the optimizer state is missing"
    if "log" in meta:
        log = meta["log"]
        if not isinstance(log, list) or not all(
            isinstance(row, dict) and set(row) == set(LOG_FIELDS) and whole(row["step"], 0, meta["step"])
            and all(number(row[k], -math.inf) for k in LOG_FIELDS if k != "step")
            for row in log
        ):  # fmt: skip
            return "the log rows are malformed"
    return None
