"""Hook points: named places in a model where an activation can be read or replaced.

A `HookPoint` is an identity module. The models pass every interesting tensor through
one (`q = self.q(q)`), so each activation has a name, its module path:

    blocks.0.attn.q   the queries of block 0's attention, (B, nh, T, hs)

Nothing is attached by default, and then a hook point costs one module call and no
tensor work. A hook is an ordinary PyTorch forward hook on the module,
`fn(module, inputs, output) -> replacement | None`; `kqv.inspect.cache` attaches them
for one forward pass and always removes them afterwards.

The attention scores and pattern exist only on the written-out attention path, so
attention asks its `scores` and `pattern` hook points whether anything listens
(`active`) and leaves the fused kernel only when something does.

The full list of names and shapes is in docs/activations.md.
"""

import torch
from torch import nn


class HookPoint(nn.Module):
    """Identity: forward(x) returns x. Hooks registered on it see (and may replace) x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def active(self) -> bool:
        """True when a forward hook (or pre-hook) is attached, so the tensor must really be made."""
        return bool(self._forward_hooks or self._forward_pre_hooks)


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """Every hook point of `model` by module path, in the order the modules were created."""
    return {name: module for name, module in model.named_modules() if isinstance(module, HookPoint)}
