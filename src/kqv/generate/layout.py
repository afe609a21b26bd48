"""Weight layout for one-token decoding on the CPU: the same matrices, stored column-major.

A Linear layer computes y = x·Wᵀ + b with W stored (out, in), row after row. Decoding one token
at a time makes every layer a matrix–vector product, which reads all of W for two flops per
number: the step is bound by memory bandwidth, and how fast BLAS streams W depends on its layout.
Measured on the 2-core machine kqv is developed on (MKL, one thread, weights not in cache):

    GPT-2 small's matrices   (in -> out)     W stored (out, in)   W stored (in, out)
    attention in_proj        768 -> 2304     10.7 GB/s            13–15 GB/s
    MLP fc                   768 -> 3072     10.2 GB/s            15–16 GB/s
    LM head (tied wte)       768 -> 50257    11.4 GB/s            20 GB/s  (16 ms -> 8 ms a token)
    MLP proj                 3072 -> 768     13–15 GB/s           12 GB/s
    attention proj           768 -> 768      about the same

So `column_major(model)` moves the weights of Linear layers with more outputs than inputs into
(in, out) order — GPT-2's `Conv1D` layout — and leaves the others. A moved weight keeps its shape
(out, in), its values and its Parameter object (a tied embedding stays tied, an optimizer keeps
its references): it becomes the transposed view of a contiguous (in, out) tensor, so F.linear
hands BLAS a matrix it need not transpose. Only the order of the additions inside BLAS changes;
training still works on such weights (gradients follow the parameter's strides), and checkpoints
are written contiguous.
"""

import torch
from torch import nn


def column_major(model: nn.Module) -> int:
    """Store the CPU nn.Linear weights of `model` that widen (out > in) as (in, out); -> how many moved (0 again)."""
    moved = 0
    # Outside inference mode even when called inside it: an inference tensor as a parameter
    # could never be trained again.
    with torch.inference_mode(False), torch.no_grad():
        for module in model.modules():
            w = module.weight if isinstance(module, nn.Linear) else None
            if w is None or w.device.type != "cpu" or w.dim() != 2 or w.shape[0] <= w.shape[1] or w.shape[1] < 2:
                continue  # nothing to gain
            if not w.is_contiguous():
                continue  # moved already (a transposed view is not contiguous), or someone else's layout
            w.data = w.data.t().contiguous().t()  # (out, in) shape, (in, out) storage: strides (1, out)
            moved += 1
    return moved
