"""The activation cache: run a model once and keep its named activations.

    out, cache = run_with_cache(gpt, idx)                      # every hook point
    cache["blocks.0.attn.pattern"]                             # (B, nh, T, T)
    cache.stack("attn.pattern")                                # (n_layer, B, nh, T, T)
    out, cache = run_with_cache(transformer, src, tgt_in, names="decoder.*.cross_attn.pattern")

Names are the module paths of the models' hook points (kqv.nn.hooks, an identity module at
every activation); docs/activations.md lists each with its shape. `names` picks some: a list
of names, a glob such as "blocks.*.attn.pattern", or a function name -> bool. Only the
attention scores and patterns cost anything extra: a hook on them makes attention take the
written-out path instead of the fused kernel.

`hooks(model, {name: fn})` attaches any `fn(tensor, name) -> tensor | None` for the length of
a `with` block, to read an activation or, by returning a tensor, to replace it. The hooks are
removed when the block ends, also when the forward pass raises.
"""

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

from kqv.nn.hooks import HookPoint, hook_points

__all__ = ["ActivationCache", "HookPoint", "hook_points", "hooks", "run_with_cache", "select_names"]

Names = str | Iterable[str] | Callable[[str], bool] | None
HookFn = Callable[[torch.Tensor, str], torch.Tensor | None]
_LAYER = re.compile(r"\.(\d+)\.")  # the layer index inside a name: blocks.3.attn.q -> 3


def _unknown(name: str, known: Iterable[str]) -> ValueError:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see docs/activations.md for the names"
    return ValueError(f"no hook point matches {name!r}{hint}")


def select_names(model: nn.Module, names: Names = None) -> list[str]:
    """The hook point names of `model` that `names` picks, in the model's module order.

    None: all. A string: a glob ("blocks.*.attn.pattern"; an exact name is a glob too). A
    list of such strings: their union. A function: the names for which it returns True.
    A string that matches nothing is a ValueError (a typo should not give an empty cache).
    """
    known = list(hook_points(model))
    if names is None:
        return known
    if callable(names):
        return [n for n in known if names(n)]
    globs = [names] if isinstance(names, str) else list(names)
    for glob in globs:
        if not isinstance(glob, str):
            raise TypeError(f"names must be strings, got {glob!r}")
        if not any(fnmatchcase(n, glob) for n in known):
            raise _unknown(glob, known)
    return [n for n in known if any(fnmatchcase(n, glob) for glob in globs)]


@contextmanager
def hooks(model: nn.Module, fns: Mapping[str, HookFn]) -> Iterator[None]:
    """Attach fn(tensor, name) to each named hook point for the `with` block; always detach them.

    A function that returns a tensor replaces the activation (an intervention); one that
    returns None only reads it.
    """
    points = hook_points(model)
    handles = []
    try:
        for name, fn in fns.items():
            if name not in points:
                raise _unknown(name, points)

            def hook(module, inputs, output, fn=fn, name=name):
                return fn(output, name)

            handles.append(points[name].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


class ActivationCache(Mapping):
    """name -> activation (a detached tensor), in the order the forward pass made them."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self._tensors = dict(tensors)

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(str(_unknown(name, self._tensors))) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def names(self) -> list[str]:
        return list(self._tensors)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(t.shape) for name, t in self._tensors.items()}

    def stack(self, name: str) -> torch.Tensor:
        """One activation from every layer, stacked on a new first axis: (n_layer, …).

        `name` is a glob with `*` for the layer ("blocks.*.attn.pattern") or the part after the
        layer index ("attn.pattern"); it must pick one kind of activation ("self_attn.pattern"
        of an encoder–decoder names two, so say "encoder.*.self_attn.pattern").
        """
        glob = name if "*" in name else f"*.{name}"
        picked = [n for n in self._tensors if fnmatchcase(n, glob) and _LAYER.search(n)]
        if not picked:
            raise KeyError(str(_unknown(name, self._tensors)))
        kinds = list(dict.fromkeys(_LAYER.sub(".{i}.", n, count=1) for n in picked))  # in forward order
        if len(kinds) > 1:
            raise ValueError(f"{name!r} matches {' and '.join(kinds)}; name one, e.g. {kinds[0].replace('{i}', '*')!r}")
        picked.sort(key=lambda n: int(_LAYER.search(n).group(1)))
        return torch.stack([self._tensors[n] for n in picked])

    def __repr__(self) -> str:
        first = ", ".join(list(self._tensors)[:4]) + (", …" if len(self) > 4 else "")
        return f"ActivationCache({len(self)} activations: {first})"


def run_with_cache(model: nn.Module, *inputs, names: Names = None, **kwargs) -> tuple[Any, ActivationCache]:
    """Run `model(*inputs, **kwargs)` once in eval mode without gradients; return (its output, the cache).

    The model's train/eval mode is restored afterwards and the hooks removed, also when the
    forward pass raises. A hook point that fires more than once keeps its last tensor.
    """
    store: dict[str, torch.Tensor] = {}

    def keep(x: torch.Tensor, name: str) -> None:
        store.pop(name, None)  # (re-inserted: the cache stays in the order of the last pass)
        store[name] = x.detach()

    selected = select_names(model, names)
    was_training = model.training
    model.eval()
    try:
        with hooks(model, dict.fromkeys(selected, keep)), torch.no_grad():
            output = model(*inputs, **kwargs)
    finally:
        model.train(was_training)
    return output, ActivationCache(store)
