"""Direct logit attribution: which parts of the model write the logit difference straight into the stream.

The residual stream at the last block is a sum: everything any layer ever wrote stays in it.

    x_final = embed + pos + Σ_layers ( Σ_heads z_h · W_O[:, h]ᵀ + b_O + mlp_out )        (C,)

The final LayerNorm is not linear, but at one position its scale is one number, σ = √(Var(x_final) + ε).
Freezing σ at its value in the real forward pass makes it linear, part by part:

    LN(x) = Σ_parts (part − mean(part)) / σ · γ  +  β

and the logit difference is a dot product with d = W_U[target] − W_U[other] (Contrast.direction), so

    logit[target] − logit[other] = Σ_parts ((part − mean(part)) / σ · γ) · d  +  β · d

exactly. Each term is a part's *direct* effect: what it adds through the stream alone, not through
the layers that read it later (patching measures that, kqv.inspect.patching). References: Elhage et
al. 2021, "A Mathematical Framework for Transformer Circuits" (the residual stream as a sum of the
heads' outputs); Nanda, TransformerLens (`decompose_resid`, `apply_ln_to_stack` with a cached scale).

    dla = direct_logit_attribution(gpt, ids, Contrast(tok["pizza"], tok["oven"]))
    dla.heads            # (L, nh): each head's direct part of the logit difference
    dla.total            # Σ parts == dla.model_value, the model's own logit difference
"""

from dataclasses import dataclass

import torch

from kqv.inspect.cache import run_with_cache
from kqv.inspect.contrast import Contrast
from kqv.inspect.prompt import Ids, check_contrast, prompt_batch
from kqv.models.gpt import GPT


@dataclass
class DLA:
    contrast: Contrast
    labels: list[str]  # one per part: "embed", "pos", "L0H0", …, "L0 attn bias", "L0 mlp", …, "ln_f bias"
    values: torch.Tensor  # (n_parts,): each part's direct contribution to the logit difference
    heads: torch.Tensor  # (L, nh): the heads' parts (also in values)
    mlps: torch.Tensor  # (L,): the MLPs' parts (bias included)
    total: float  # Σ values
    model_value: float  # contrast.of(the model's logits): total equals it up to rounding
    scale: float  # σ, ln_f's frozen scale at the contrast's position


def direct_logit_attribution(model: GPT, ids: Ids, contrast: Contrast) -> DLA:
    """Split the logit difference of `contrast` at its position into the direct parts of every component."""
    idx = prompt_batch(model, ids)  # (1, T)
    p = check_contrast(model, contrast, idx.shape[1])
    c = model.config
    L, nh, hs, C = c.n_layer, c.n_head, c.head_size, c.n_embd
    names = ["embed", "pos_embed", f"blocks.{L - 1}.resid_post"]
    names += [f"blocks.{i}.{what}" for i in range(L) for what in ("attn.z", "mlp.out")]
    out, cache = run_with_cache(model, idx, names=names)

    parts, labels = [cache["embed"][0, p]], ["embed"]  # (C,) each
    head_rows, mlp_rows = [], []  # where the heads' and the MLPs' parts sit in `parts`
    if model.positional.kind == "additive":  # learned or sinusoidal: positions are in the stream
        parts.append(cache["pos_embed"][0, p] - cache["embed"][0, p])
        labels.append("pos")
    for i, block in enumerate(model.blocks):
        z = cache[f"blocks.{i}.attn.z"][0, :, p]  # (nh, hs)
        W_O = block.attn.proj.weight.detach().view(C, nh, hs)  # (C, C) -> (C, nh, hs): head h reads columns h·hs …
        head_rows += range(len(parts), len(parts) + nh)
        parts += list(torch.einsum("hd,chd->hc", z, W_O))  # nh × (C,): z_h · W_O[:, h]ᵀ
        labels += [f"L{i}H{h}" for h in range(nh)]
        if block.attn.proj.bias is not None:
            parts.append(block.attn.proj.bias.detach())
            labels.append(f"L{i} attn bias")
        mlp_rows.append(len(parts))
        parts.append(cache[f"blocks.{i}.mlp.out"][0, p])
        labels.append(f"L{i} mlp")
    stack = torch.stack(parts)  # (n_parts, C); sums to x_final

    ln_f = model.ln_f
    x_final = cache[f"blocks.{L - 1}.resid_post"][0, p]  # (C,)
    sigma = torch.sqrt(x_final.var(unbiased=False) + ln_f.eps)  # ln_f's scale in the real pass, frozen
    normed = (stack - stack.mean(dim=-1, keepdim=True)) / sigma * ln_f.weight.detach()  # (n_parts, C)
    direction = contrast.direction(model.lm_head.weight.detach())  # (C,)
    values = normed @ direction  # (n_parts,)
    if ln_f.bias is not None:
        values = torch.cat([values, (ln_f.bias.detach() @ direction)[None]])  # β · d, the one constant part
        labels.append("ln_f bias")

    return DLA(
        contrast=contrast,
        labels=labels,
        values=values,
        heads=values[head_rows].view(L, nh),
        mlps=values[mlp_rows],
        total=float(values.sum()),
        model_value=float(contrast.of(out.logits[0])),
        scale=float(sigma),
    )
