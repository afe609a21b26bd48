"""Training on several processes, GPUs or machines: torchrun + DistributedDataParallel.

One machine, N processes (N GPUs, or N CPU processes with the gloo backend):

    torchrun --standalone --nproc_per_node=N -m kqv gpt train --preset default --out runs/ddp

Two machines with 8 GPUs each: run the same command on both, with --node_rank 0 on the
machine at HOST and --node_rank 1 on the other (HOST:PORT must be reachable from both):

    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 \\
        --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m kqv gpt train --out runs/ddp

torchrun starts the processes and gives each RANK (0 … N−1 over all machines),
LOCAL_RANK (its index on its machine) and WORLD_SIZE (N). `session` joins the group
(nccl on CUDA, each process on GPU cuda:LOCAL_RANK; gloo on CPU); without torchrun,
or with one process, nothing changes and no process group is made.

What N processes compute — the same as one process, split up:

- **Data.** The global batch stays batch_size × grad_accum sequences of block_size
  tokens. Every rank draws the same random window starts a single process draws (same
  generator, same seed) and keeps its batch_size/N rows of each micro-batch, so the
  data order does not depend on N. batch_size must be a multiple of N.
- **Gradients.** Each rank's loss is the mean over its rows; DDP averages the ranks'
  gradients, and the mean of N equal-sized shard means is the full-batch mean. So the
  update is the single-process update up to float rounding (sums in another order).
  Gradients are all-reduced once per optimiser step: `no_sync` on all micro-steps
  but the last.
- **Evaluation.** Every rank scores its rows of each fixed evaluation batch and the
  sums are all-reduced: the numbers are one process's, in 1/N of the time.
- **Files and output.** Only rank 0 writes (run directory, token cache, log,
  checkpoints, plot), prints and shows progress; the others wait at barriers. A
  `UserError` raised on every rank is printed once, by rank 0.
- **Checkpoints do not depend on N**: the unwrapped model's weights (no `module.`),
  the AdamW state (the same on every rank), the step, the sampler's generator (the
  same on every rank) and rank 0's RNG state. A run can resume with any N.
- **Dropout.** Rank 0 carries the run's RNG stream (the one saved); rank r > 0
  reseeds at every step from (seed, rank, step), so masks differ between ranks and a
  resume with the same N is exact. With dropout > 0, N processes train like one only
  statistically; with dropout 0 (kqv's presets) they match it to float rounding.

Every rank reads the corpus itself (the path must exist on every machine). On
machines that do not share a filesystem, ranks on other machines encode the corpus in
memory instead of reading rank 0's token cache; `--resume` needs RUN_DIR readable by
every rank (a shared filesystem).
"""

import inspect
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kqv.errors import UserError

R = TypeVar("R")
WAIT_FOR_MAIN_S = 30.0  # how long a rank > 0 that met an error waits for rank 0 to report it and end the run


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one process that writes and prints."""
    return rank() == 0


def _device() -> torch.device:
    """Where collectives' tensors live: the process's GPU for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if world_size() > 1:
        dist.barrier(device_ids=[torch.cuda.current_device()] if dist.get_backend() == "nccl" else None)


def all_reduce_sum(values: list[float]) -> list[float]:
    """Each value summed over the ranks (float64); unchanged in a single process."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean over the ranks of a one-element tensor (on its device); itself in a single process."""
    if world_size() == 1:
        return value
    t = value.detach().to(_device(), torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / world_size()).to(value.device, value.dtype)


def broadcast_from_main(fn: Callable[[], R]) -> R:
    """Run `fn` on rank 0 only and hand its (picklable) result to every rank.

    A UserError on rank 0 is raised on every rank (rank 0 prints it, the others exit
    quietly); any other failure there makes the others stop with a UserError too,
    instead of waiting for a result that never comes.
    """
    if world_size() == 1:
        return fn()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except UserError as exc:
            box[0] = ("error", str(exc))
            dist.broadcast_object_list(box, src=0)
            raise
        except BaseException:
            box[0] = ("error", "rank 0 failed (its traceback says why)")
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise UserError(value)
    return value


def main_first(fn: Callable[[], R]) -> R:
    """Run `fn` on rank 0, then (once it has succeeded) on every other rank.

    For work whose files rank 0 writes and the others then read, such as the token
    cache; `fn` itself checks `is_main()` to decide whether it may write.
    """
    if world_size() == 1:
        return fn()
    if is_main():
        result: list[R] = []
        broadcast_from_main(lambda: result.append(fn()))
        return result[0]
    broadcast_from_main(lambda: None)  # waits for rank 0; raises its UserError
    return fn()


def check_launch() -> None:
    """Refuse a run that torchrun started as several processes but that made no process group.

    Each process would train alone on the same data and write the same files; kqv gpt train
    (through `session`) is the command that trains as one over several processes.
    """
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n > 1 and world_size() == 1:
        raise UserError(
            f"started as {n} processes (torchrun), but this command trains in one process; "
            "multi-process training is `kqv gpt train`"
        )


def check_batch_size(batch_size: int) -> None:
    n = world_size()
    if batch_size % n:
        raise UserError(
            f"batch_size {batch_size} cannot be split evenly over {n} processes; each process takes "
            f"batch_size/{n} rows of every micro-batch, so choose a multiple of {n} (--set batch_size=…)"
        )


def seed_rank(seed: int, step: int) -> None:
    """Rank r > 0: a dropout RNG of its own for this step, from (seed, rank, step). Rank 0 keeps its stream."""
    r = rank()
    if r > 0:
        torch.manual_seed(((seed * 1_000_003 + r) * 1_000_003 + step) % 2**63)


def wrap(model: nn.Module, device: str) -> nn.Module:
    """DistributedDataParallel around `model` (possibly compiled) when there are several ranks.

    Buffers (positional tables) are constants, so they are not broadcast at every forward.
    """
    if world_size() == 1:
        return model
    device_ids = [torch.device(device).index] if device.startswith("cuda") else None
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters  # newer torch renamed it
    no_buffer_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=device_ids, **no_buffer_sync)


def no_sync(model: nn.Module, skip: bool):
    """Inside: backward() accumulates gradients without the all-reduce (DDP's no_sync), when `skip`."""
    if skip and hasattr(model, "no_sync"):
        return model.no_sync()
    return nullcontext()


@contextmanager
def session(device: str) -> Iterator[str]:
    """Join torchrun's process group for the duration of a run; yields this process's device.

    `device` is an already resolved name (kqv.runs.directory.pick_device): "cuda" becomes
    "cuda:LOCAL_RANK" under torchrun. Without torchrun (no WORLD_SIZE, or 1), or when the
    caller has already made a process group, nothing is set up or torn down here.
    """
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n <= 1 or (dist.is_available() and dist.is_initialized()):
        if device == "cuda" and world_size() > 1:  # a process group made by the caller: its current GPU
            device = f"cuda:{torch.cuda.current_device()}"
        with _quiet_errors_off_main():
            yield device
        return
    if not dist.is_available():
        raise UserError("this torch build has no torch.distributed; run with one process")
    local_rank = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"process {local_rank} on this machine has no GPU: {torch.cuda.device_count()} visible; "
                "--nproc_per_node must not exceed the GPUs per machine"
            )
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device(device))
    elif device == "cpu":
        dist.init_process_group("gloo")
    else:
        raise UserError(f"--device {device}: multi-process training runs on CUDA (nccl) or the CPU (gloo)")
    try:
        with _quiet_errors_off_main():
            yield device
        barrier()  # no rank leaves while another may still be writing or reducing
    finally:
        dist.destroy_process_group()


@contextmanager
def _quiet_errors_off_main() -> Iterator[None]:
    """A UserError seen by every rank is printed once, by rank 0.

    The other ranks wait instead of exiting: rank 0 prints the error and exits, and torchrun
    then stops them. Exiting first would let torchrun stop rank 0 before its line is out.
    A rank still running after `WAIT_FOR_MAIN_S` met an error rank 0 did not, and says so.
    """
    try:
        yield
    except UserError as exc:
        if is_main():
            raise
        time.sleep(WAIT_FOR_MAIN_S)
        print(f"kqv: error (rank {rank()}): {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
