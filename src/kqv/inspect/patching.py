"""Activation patching: put one activation of a clean run into a corrupted run and see how much comes back.

Two prompts of the same token length differ where it matters ("The pizza came out of the oven and
it tasted" against "The oven came out of the pizza and it tasted"). Run the corrupted one, but
replace one activation (the residual stream at one layer and position, one head's output, one
MLP's output) with its value from the clean run. If the logit difference comes back, that
activation carries the information. The metric (denoising, as in TransformerLens):

    restored = (patched − corrupted) / (clean − corrupted)        1: fully restored, 0: nothing

of the Contrast's logit difference. Unlike direct logit attribution this is causal: a patch acts
through every later layer. References: Meng et al. 2022, "Locating and Editing Factual Associations
in GPT" (causal tracing, §2.1); Wang et al. 2022, "Interpretability in the Wild" (path patching,
IOI); Heimersheim & Nanda 2024, "How to use and interpret activation patching".

    result = activation_patching(gpt, clean_ids, corrupt_ids, Contrast(tok["pizza"], tok["oven"]))
    result.resid                 # (L, T): the stream entering block l at position p
    result.heads                 # (L, nh): head h's output at every position
    result.mlp                   # (L, T): block l's MLP output at position p

A sweep is one batched forward pass: batch row b is the corrupted prompt with its own patch, made
by one hook per activation that swaps in the clean values where a boolean mask (B, [nh,] T) says
(`run_patched`, `Patch`). The same machinery ablates heads (`ablate_heads`): the replacement is then
zeros, or the head's mean output over the prompt's positions, instead of a clean run.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from kqv.errors import UserError
from kqv.inspect.cache import hook_points, hooks, run_with_cache
from kqv.inspect.contrast import Contrast
from kqv.inspect.prompt import Ids, check_contrast, evaluating, prompt_batch
from kqv.models.gpt import GPT

HEADED = ("q", "k", "v", "scores", "pattern", "z")  # attention activations (B, nh, T, …): heads before positions
CHUNK_ELEMENTS = 2**24  # a chunk of the batch holds about this many floats in its widest activation


@dataclass(frozen=True)
class Patch:
    """Replace one activation of one batch row, at one position or all, one head or all, with the source's."""

    name: str  # a hook point, e.g. "blocks.2.resid_pre" or "blocks.0.attn.z" (docs/activations.md)
    position: int | None = None  # None: every position
    head: int | None = None  # None: every head; only for the attention activations with a head axis


Row = Patch | Sequence[Patch]  # the patches of one batch row; an empty sequence: the unpatched run


def has_heads(name: str) -> bool:
    return ".attn." in name and name.rsplit(".", 1)[-1] in HEADED


def _check_rows(model: GPT, rows: list[list[Patch]], source: Mapping[str, torch.Tensor], T: int) -> None:
    points, nh = hook_points(model), model.config.n_head
    for patch in {patch for row in rows for patch in row}:
        if patch.name not in points:
            raise UserError(f"no hook point is called {patch.name!r}; docs/activations.md lists them")
        if patch.name not in source:
            raise UserError(f"a patch of {patch.name!r} has no source activation to copy from")
        if patch.position is not None and not 0 <= patch.position < T:
            raise UserError(f"patch position {patch.position} is out of range: the prompt has {T} tokens (0 … {T - 1})")
        if patch.head is not None and not has_heads(patch.name):
            raise UserError(f"{patch.name} has no head axis; patch it without a head")
        if patch.head is not None and not 0 <= patch.head < nh:
            raise UserError(f"head {patch.head} is out of range: the model has {nh} heads per layer (0 … {nh - 1})")


def _masks(rows: list[list[Patch]], names: set[str], n_head: int, T: int, device) -> dict[str, torch.Tensor]:
    """name -> bool mask, (B, nh, T) for the activations with heads and (B, T) for the others: True where patched."""
    B = len(rows)
    masks = {
        name: torch.zeros((B, n_head, T) if has_heads(name) else (B, T), dtype=torch.bool, device=device)
        for name in names
    }
    for b, row in enumerate(rows):
        for patch in row:
            position = slice(None) if patch.position is None else patch.position
            head = slice(None) if patch.head is None else patch.head
            masks[patch.name][(b, head, position) if has_heads(patch.name) else (b, position)] = True
    return masks


def run_patched(
    model: GPT,
    ids: Ids,
    rows: Sequence[Row],
    source: Mapping[str, torch.Tensor],
    contrast: Contrast | None = None,
) -> torch.Tensor:
    """Run the prompt once per row, each with that row's patches: (B, T, V) logits, or (B,) with a contrast.

    `source[name]` is what a patch of `name` copies in: an activation of one sequence, (1, …) as in
    a clean run's ActivationCache, or anything that broadcasts to the activation (zeros (1, 1, 1, 1),
    a mean over positions (1, nh, 1, hs)). With a contrast, the result is its value for each row
    and the unembedding runs at the contrast's position only. The rows run in chunks of one
    batched forward pass each, in eval mode, without gradients.
    """
    idx = prompt_batch(model, ids)  # (1, T)
    T, c = idx.shape[1], model.config
    rows = [[row] if isinstance(row, Patch) else list(row) for row in rows]
    if not rows:
        raise UserError("run_patched got no rows; give at least one (an empty row is the unpatched run)")
    _check_rows(model, rows, source, T)
    position = check_contrast(model, contrast, T) if contrast is not None else None
    names = {patch.name for row in rows for patch in row}
    narrow = contrast is not None and not names & {"ln_final", "logits"}  # unembed one position only

    widest = max(4 * c.n_embd, c.n_head * T, 1 if narrow else c.vocab_size)  # floats per token, roughly
    chunk = max(1, CHUNK_ELEMENTS // (T * widest))
    results = []
    with evaluating(model), torch.no_grad():
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            masks = _masks(part, names, c.n_head, T, idx.device)

            def swap(x: torch.Tensor, name: str, masks=masks) -> torch.Tensor:
                return torch.where(masks[name][..., None], source[name].to(x.dtype), x)  # mask (B, [nh,] T, 1)

            fns = dict.fromkeys(names, swap)
            if narrow:
                fns["ln_final"] = lambda x, name: x[:, position : position + 1]  # (B, T, C) -> (B, 1, C)
            with hooks(model, fns):
                logits = model(idx.expand(len(part), T)).logits  # (B, T, V), or (B, 1, V) narrowed
            if contrast is None:
                results.append(logits)
            else:
                at = replace(contrast, position=-1 if narrow else position)
                results.append(at.of(logits))  # (B,)
    return torch.cat(results)


@dataclass
class Patching:
    contrast: Contrast
    clean: float  # the logit difference of the clean prompt
    corrupted: float  # … and of the corrupted one
    resid: torch.Tensor  # (L, T): restored by the clean stream entering block l (resid_pre) at position p
    heads: torch.Tensor  # (L, nh): restored by head h's clean output z at every position
    heads_by_position: torch.Tensor | None  # (L, nh, T): … at position p only; None unless asked for
    mlp: torch.Tensor  # (L, T): restored by block l's clean MLP output at position p


def activation_patching(
    model: GPT, clean_ids: Ids, corrupt_ids: Ids, contrast: Contrast, by_position: bool = True
) -> Patching:
    """Every residual, head and MLP patch from the clean prompt into the corrupted one, as `restored` above.

    `by_position=False` skips the largest sweep, heads_by_position (L·nh·T rows)."""
    clean_idx = prompt_batch(model, clean_ids, "clean prompt")  # (1, T)
    corrupt_idx = prompt_batch(model, corrupt_ids, "corrupted prompt")  # (1, T)
    T = clean_idx.shape[1]
    if corrupt_idx.shape[1] != T:
        raise UserError(
            f"the clean prompt has {T} tokens and the corrupted one {corrupt_idx.shape[1]}; patching swaps "
            "activations position by position, so the two must have the same number of tokens"
        )
    check_contrast(model, contrast, T)
    L, nh = model.config.n_layer, model.config.n_head
    names = [f"blocks.{i}.{what}" for i in range(L) for what in ("resid_pre", "attn.z", "mlp.out")]
    out, cache = run_with_cache(model, clean_idx, names=names)
    clean = float(contrast.of(out.logits)[0])
    corrupted = float(run_patched(model, corrupt_idx, [[]], cache, contrast)[0])
    scale = max(1.0, abs(clean), abs(corrupted))
    if abs(clean - corrupted) <= 16 * torch.finfo(out.logits.dtype).eps * scale:
        raise UserError(
            f"the clean and the corrupted prompt give the same logit difference ({clean:.6g}), so "
            "(patched − corrupted) / (clean − corrupted) is undefined: pick another corruption"
        )

    rows = [Patch(f"blocks.{i}.resid_pre", p) for i in range(L) for p in range(T)]  # L·T
    rows += [Patch(f"blocks.{i}.attn.z", head=h) for i in range(L) for h in range(nh)]  # L·nh
    if by_position:
        rows += [Patch(f"blocks.{i}.attn.z", p, h) for i in range(L) for h in range(nh) for p in range(T)]  # L·nh·T
    rows += [Patch(f"blocks.{i}.mlp.out", p) for i in range(L) for p in range(T)]  # L·T
    values = run_patched(model, corrupt_idx, rows, cache, contrast)  # (n_rows,)
    restored = ((values - corrupted) / (clean - corrupted)).split(
        [L * T, L * nh] + ([L * nh * T] if by_position else []) + [L * T]
    )
    return Patching(
        contrast=contrast,
        clean=clean,
        corrupted=corrupted,
        resid=restored[0].view(L, T),
        heads=restored[1].view(L, nh),
        heads_by_position=restored[2].view(L, nh, T) if by_position else None,
        mlp=restored[-1].view(L, T),
    )


@dataclass
class HeadAblation:
    contrast: Contrast
    how: str  # "zero" | "mean"
    clean: float  # the logit difference with nothing ablated
    values: torch.Tensor  # (L, nh): the logit difference with head h of layer l ablated at every position

    @property
    def change(self) -> torch.Tensor:
        """(L, nh): values − clean; negative where the head helped the target."""
        return self.values - self.clean


def ablate_heads(model: GPT, ids: Ids, contrast: Contrast, how: str = "zero") -> HeadAblation:
    """Knock out each head in turn (its z at every position) and read the logit difference; one batched pass.

    how="zero": z_h = 0. how="mean": z_h at every position replaced by its mean over this prompt's
    positions (the head's average output on this text, with what it says about any one token
    averaged away; TransformerLens's mean ablation usually averages over a data set instead).
    """
    if how not in ("zero", "mean"):
        raise UserError(f"how={how!r}: ablate heads with 'zero' or 'mean'")
    idx = prompt_batch(model, ids)  # (1, T)
    check_contrast(model, contrast, idx.shape[1])
    L, nh = model.config.n_layer, model.config.n_head
    names = [f"blocks.{i}.attn.z" for i in range(L)]
    out, cache = run_with_cache(model, idx, names=names)
    if how == "zero":
        source = {name: torch.zeros((1, 1, 1, 1), dtype=out.logits.dtype, device=idx.device) for name in names}
    else:
        source = {name: cache[name].mean(dim=2, keepdim=True) for name in names}  # (1, nh, T, hs) -> (1, nh, 1, hs)
    rows = [Patch(name, head=h) for name in names for h in range(nh)]  # L·nh
    values = run_patched(model, idx, rows, source, contrast).view(L, nh)
    return HeadAblation(contrast, how, float(contrast.of(out.logits)[0]), values)
