"""Why, for the encoder–decoder: which source tokens does each output token come from?

A translation model reads a source sentence (ids + </s>) and writes its target with the decoder
input <s> + target. Row t of every matrix here is decoder position t, whose logits predict the
next output token; column s is source token s. "The pizza came out of the oven and it tasted good"
into German: does the row that writes *sie* (die Pizza) or *er* (der Ofen) come from "pizza",
from "oven", or from "it"? Several methods answer side by side, each with its own assumptions:

    cross         mean over decoder layers ℓ and heads h of the cross-attention pattern A^ℓh (T, S):
                  where the decoder reads the memory. The memory is the encoder's *output*: its row s
                  has already mixed in other source tokens.
    rollout       cross · R_enc (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"):
                  R_enc = Â_L−1 ⋯ Â_0 is the encoder's attention rollout, Â_ℓ = rownorm(Ā_ℓ + I) with
                  Ā_ℓ the head mean of encoder layer ℓ (kqv.inspect.rollout), so each output row becomes a
                  distribution over the *input* tokens. The cross part is the mean over decoder layers,
                  not the last layer alone: every decoder layer reads the same memory, none is closer to
                  the source than another, and early layers' reads reach the output through the
                  decoder's residual stream (which carries no source positions, so no identity term).
    grad_x_input  e_s · ∂f_t/∂e_s, summed over the width (Shrikumar et al. 2016; Denil et al. 2014),
                  e_s the raw token embedding row E[src_s] (before ·√C and positions).
    integrated    integrated gradients (Sundararajan et al. 2017), baseline zero token embeddings
                  with the positions kept:  IG_s = e_s · (1/m) Σ_k ∂f_t/∂e_s |(α_k·e),  α_k = (k + ½)/m
                  (midpoint rule, m = steps), summed over the width. Completeness: Σ_s IG_s ≈
                  f_t(e) − f_t(0); `ig_gap` is the difference, per row.

f_t is the log-probability (by default; `measure="logit"` for the raw logit) of the token that
follows position t: tgt_in[t + 1], and at the last position the model's own top token. A
log-probability, because a logit alone can rise while its token's probability falls (all logits
rise together); the logit is the number direct logit attribution and `Contrast` read. The raw
embedding is hooked by rebuilding `embed_src` from it (positions.add_to_embeddings(e·√C)), as
Transformer._embed does; the √C is a constant, so e·∂f/∂e = (e√C)·∂f/∂(e√C).

    source_patching   activation patching (Meng et al. 2022; Wang et al. 2022) between a clean and a
                  corrupted source of the same token length, same decoder input: run the corrupted
                  source with one clean activation and measure (patched − corrupted)/(clean − corrupted)
                  of contrast.of(logits). Swept over each encoder layer's input stream at each source
                  position (encoder.{i}.resid_pre, (L_enc, S)) and each cross-attention head's output
                  (decoder.{i}.cross_attn.z of head h, all decoder positions, (L_dec, nh)).
    decoder_lens  the logit lens (nostalgebraist 2020) on the decoder: the stream after embed_tgt
                  and after each decoder layer, through the final LayerNorm ln_dec and x·Eᵀ. A pre-LN
                  (norm_first) decoder's stream is unnormalised and gets ln_dec; a post-LN decoder's
                  layer outputs are already LayerNormed (ln_dec is the identity there) and are
                  projected directly. The embed_tgt row is the input embedding ·√C + positions, not
                  normalised in either case. The last row is the model's own softmax.

The gradient rows (one per (position, α) pair) and the patching sweeps run as batched forward
passes, `chunk` rows at a time.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kqv.errors import UserError
from kqv.inspect.cache import hooks, run_with_cache
from kqv.inspect.contrast import Contrast
from kqv.inspect.prompt import evaluating
from kqv.inspect.rollout import attention_rollout
from kqv.models.transformer import Transformer

__all__ = [
    "DecoderLens",
    "SourceAttribution",
    "SourcePatching",
    "decoder_lens",
    "patched_logits",
    "source_attribution",
    "source_patching",
]

Ids = Sequence[int] | torch.Tensor
MEASURES = ("logprob", "logit")


@dataclass
class SourceAttribution:
    """Which source tokens each output token comes from, by four methods; rows t, columns s."""

    src_ids: list[int]  # (S,) the source, </s> included
    tgt_in: list[int]  # (T,) the decoder input, <s> + target
    targets: list[int]  # (T,) the token row t explains: tgt_in[t + 1], and the model's top token at the end
    measure: str  # "logprob" or "logit": f_t of the gradient methods
    cross: torch.Tensor  # (T, S) cross-attention, mean over decoder layers and heads
    cross_layers: torch.Tensor  # (Ld, T, S) cross-attention per decoder layer, mean over heads
    encoder_rollout: torch.Tensor  # (S, S) the encoder's final attention rollout: memory row <- input tokens
    rollout: torch.Tensor  # (T, S) cross @ encoder_rollout; rows sum to 1
    grad_x_input: torch.Tensor  # (T, S) e_s·∂f_t/∂e_s
    integrated: torch.Tensor  # (T, S) integrated gradients, zero token-embedding baseline
    value: torch.Tensor  # (T,) f_t at the input
    baseline_value: torch.Tensor  # (T,) f_t at the baseline (token embeddings 0, positions kept)
    ig_gap: torch.Tensor  # (T,) Σ_s integrated[t] − (value − baseline_value): completeness error
    steps: int

    def maps(self) -> dict[str, torch.Tensor]:
        """The four (T, S) matrices by name, for showing side by side."""
        return {
            "cross": self.cross,
            "rollout": self.rollout,
            "grad_x_input": self.grad_x_input,
            "integrated": self.integrated,
        }


@dataclass
class SourcePatching:
    """How much of contrast.of(logits) each clean activation restores in the corrupted run: 0 none, 1 all."""

    clean_ids: list[int]  # (S,)
    corrupt_ids: list[int]  # (S,)
    tgt_in: list[int]  # (T,)
    contrast: Contrast
    clean_value: float  # contrast.of(clean logits)
    corrupted_value: float  # contrast.of(corrupted logits)
    encoder: torch.Tensor  # (L_enc, S): encoder.{i}.resid_pre at source position s patched
    cross_heads: torch.Tensor  # (L_dec, nh): decoder.{i}.cross_attn.z of head h (all positions) patched


@dataclass
class DecoderLens:
    """The decoder's stream after each layer read as next-token predictions."""

    rows: list[str]  # Ld + 1 names: "embed_tgt", "decoder.0.resid_post", …
    top_ids: torch.Tensor  # (Ld+1, T, k) long
    top_probs: torch.Tensor  # (Ld+1, T, k)
    target_prob: torch.Tensor | None  # (Ld+1, T): the probability of `target` (per position), or None
    tgt_in: list[int]  # (T,)


def _ids(model: Transformer, ids: Ids, what: str) -> torch.Tensor:
    """A list of ids or a (L,) / (1, L) LongTensor -> (1, L) on the model's device; UserError if unusable."""
    t = torch.as_tensor(ids if isinstance(ids, torch.Tensor) else list(ids), dtype=torch.long)
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1 or t.numel() == 0:
        raise UserError(f"the {what} must be a non-empty list of token ids (one sentence), got shape {tuple(t.shape)}")
    c = model.config
    if int(t.min()) < 0 or int(t.max()) >= c.vocab_size:
        raise UserError(f"the {what} has a token id outside 0 … {c.vocab_size - 1}; encode it with the run's tokenizer")
    if t.numel() > c.max_len:
        raise UserError(f"the {what} has {t.numel()} tokens, more than the model's max_len {c.max_len}; shorten it")
    return t[None].to(model.embed.weight.device)  # (1, L)


def _check_model(model) -> None:
    if not isinstance(model, Transformer):
        raise UserError(f"kqv.inspect.source needs an encoder–decoder Transformer, got {type(model).__name__}")


# --- attribution -------------------------------------------------------------------------------------------------


def _score(logits: torch.Tensor, targets: torch.Tensor, measure: str) -> torch.Tensor:
    """logits (n, V), targets (n,) -> (n,) the log-probability or the logit of each row's target."""
    values = F.log_softmax(logits, dim=-1) if measure == "logprob" else logits  # (n, V)
    return values.gather(-1, targets[:, None])[:, 0]  # (n,)


def _gradient_rows(
    model: Transformer,
    src: torch.Tensor,
    tgt_in: torch.Tensor,
    targets: torch.Tensor,
    alphas: torch.Tensor,
    measure: str,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """f_t at the token embeddings α·e, and e·∂f_t/∂e there summed over C, for every (t, α).

    src (1, S), tgt_in (1, T), targets (T,), alphas (A,) -> values (T, A), contributions (T, A, S).
    One batch row per (t, α); each row's f is read at its own position t, so one backward of the
    summed f gives every row its own gradient (the rows of a batch do not interact).
    """
    T, A, S = tgt_in.shape[1], alphas.numel(), src.shape[1]
    scale = math.sqrt(model.config.n_embd)
    e = model.embed(src).detach()  # (1, S, C) raw token embeddings E[src]
    pos = torch.arange(S, device=src.device)  # (S,)
    row_t = torch.arange(T, device=src.device).repeat_interleave(A)  # (T·A,) position of each row
    row_alpha = alphas.to(e.dtype).repeat(T)  # (T·A,)
    values, contributions = [], []
    for start in range(0, T * A, chunk):
        t, alpha = row_t[start : start + chunk], row_alpha[start : start + chunk]  # (n,) each
        n = t.numel()
        x = (alpha[:, None, None] * e).requires_grad_()  # (n, S, C) the path point α·e, a leaf

        def embed_from_x(embedded: torch.Tensor, name: str, x=x) -> torch.Tensor:
            return model.positional.add_to_embeddings(x * scale, pos)  # (n, S, C), as Transformer._embed

        with hooks(model, {"embed_src": embed_from_x}), torch.enable_grad():
            logits = model(src.expand(n, -1), tgt_in.expand(n, -1)).logits  # (n, T, V)
            f = _score(logits[torch.arange(n), t], targets[t], measure)  # (n,)
            (grad,) = torch.autograd.grad(f.sum(), x)  # (n, S, C) ∂f/∂x at x = α·e
        values.append(f.detach())
        contributions.append((e * grad).sum(-1))  # (n, S)
    return torch.cat(values).view(T, A), torch.cat(contributions).view(T, A, S)


def source_attribution(
    model: Transformer, src_ids: Ids, tgt_in: Ids, *, steps: int = 32, measure: str = "logprob", chunk: int = 64
) -> SourceAttribution:
    """Cross-attention, rollout, grad×input and integrated gradients of each output row over the source.

    src_ids: the source ids with </s>; tgt_in: <s> + target ids. See the module docstring for each
    method. steps: integrated-gradient steps (midpoint rule); chunk: batch rows per forward pass.
    """
    _check_model(model)
    if measure not in MEASURES:
        raise UserError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if steps < 1 or chunk < 1:
        raise UserError(f"steps and chunk must be ≥ 1, got steps={steps}, chunk={chunk}")
    src, tgt = _ids(model, src_ids, "source"), _ids(model, tgt_in, "decoder input")  # (1, S), (1, T)
    with evaluating(model):
        names = ["encoder.*.self_attn.pattern", "decoder.*.cross_attn.pattern"]
        out, cache = run_with_cache(model, src, tgt, names=names)
        logits = out.logits[0]  # (T, V)
        cross_layers = cache.stack("decoder.*.cross_attn.pattern")[:, 0].mean(dim=1)  # (Ld, nh, T, S) -> (Ld, T, S)
        cross = cross_layers.mean(dim=0)  # (T, S)
        encoder_patterns = cache.stack("encoder.*.self_attn.pattern")[:, 0]  # (L_enc, nh, S, S)
        encoder_rollout = attention_rollout(encoder_patterns, residual=True)[-1]  # (S, S)
        rollout = cross @ encoder_rollout  # (T, S) @ (S, S) -> (T, S)

        targets = torch.cat([tgt[0, 1:], logits[-1].argmax()[None]])  # (T,) the token after each position
        alphas = (torch.arange(steps, device=src.device, dtype=torch.float64) + 0.5) / steps  # (m,) midpoints
        alphas = torch.cat([alphas, alphas.new_ones(1), alphas.new_zeros(1)])  # (m + 2,): the path, input, baseline
        values, contributions = _gradient_rows(model, src, tgt, targets, alphas, measure, chunk)  # (T, m+2), (…, S)
    integrated = contributions[:, :steps].mean(dim=1)  # (T, S)
    grad_x_input = contributions[:, steps]  # (T, S), at α = 1
    value, baseline_value = values[:, steps], values[:, steps + 1]  # (T,) each
    return SourceAttribution(
        src_ids=src[0].tolist(),
        tgt_in=tgt[0].tolist(),
        targets=targets.tolist(),
        measure=measure,
        cross=cross,
        cross_layers=cross_layers,
        encoder_rollout=encoder_rollout,
        rollout=rollout,
        grad_x_input=grad_x_input,
        integrated=integrated,
        value=value,
        baseline_value=baseline_value,
        ig_gap=integrated.sum(dim=1) - (value - baseline_value),  # (T,)
        steps=steps,
    )


# --- patching ----------------------------------------------------------------------------------------------------

Patch = Mapping[str, torch.Tensor]  # hook name -> bool mask, broadcastable to one example's activation


def _patched_runs(
    model: Transformer,
    corrupt: torch.Tensor,
    tgt: torch.Tensor,
    clean: Mapping[str, torch.Tensor],
    patches: Sequence[Patch],
    chunk: int,
) -> torch.Tensor:
    """The corrupted source run once per patch, where(mask, clean, corrupted) at each named hook -> (N, T, V)."""
    out = []
    for start in range(0, len(patches), chunk):
        rows = patches[start : start + chunk]
        n = len(rows)
        fns = {}
        for name in dict.fromkeys(name for row in rows for name in row):
            shape = clean[name].shape[1:]  # one example's activation, e.g. (S, C) or (nh, T, hs)
            off = torch.zeros(shape, dtype=torch.bool, device=corrupt.device)
            masks = torch.stack([torch.broadcast_to(row[name], shape) if name in row else off for row in rows])

            def patch(x: torch.Tensor, name: str, masks=masks) -> torch.Tensor:  # x (n, …)
                return torch.where(masks, clean[name], x)  # clean (1, …) broadcasts over the rows

            fns[name] = patch
        with hooks(model, fns), torch.no_grad():
            out.append(model(corrupt.expand(n, -1), tgt.expand(n, -1)).logits)  # (n, T, V)
    return torch.cat(out)


def patched_logits(
    model: Transformer, clean_src: Ids, corrupt_src: Ids, tgt_in: Ids, patches: Sequence[Patch], *, chunk: int = 64
) -> torch.Tensor:
    """The corrupted source's logits (N, T, V), row i with patches[i]'s clean activations copied in.

    patches[i] maps hook names to bool masks broadcastable to one example's activation (no batch
    axis): {"encoder.0.resid_pre": torch.tensor([True, False, …])[:, None]} patches source position 0,
    {"decoder.1.cross_attn.z": mask (nh, 1, 1)} one head; {} patches nothing. Batched, `chunk` rows
    per forward pass.
    """
    _check_model(model)
    clean, corrupt, tgt = _pair(model, clean_src, corrupt_src, tgt_in)
    names = list(dict.fromkeys(name for row in patches for name in row))
    with evaluating(model):
        _, cache = run_with_cache(model, clean, tgt, names=names) if names else (None, {})
        return _patched_runs(model, corrupt, tgt, cache, patches, chunk)


def _pair(model: Transformer, clean_src: Ids, corrupt_src: Ids, tgt_in: Ids) -> tuple[torch.Tensor, ...]:
    clean, corrupt = _ids(model, clean_src, "clean source"), _ids(model, corrupt_src, "corrupted source")
    if clean.shape[1] != corrupt.shape[1]:
        raise UserError(
            f"the clean source has {clean.shape[1]} tokens and the corrupted source {corrupt.shape[1]}; "
            "patching pairs position with position, so give two sources of the same token length"
        )
    return clean, corrupt, _ids(model, tgt_in, "decoder input")  # (1, S), (1, S), (1, T)


def source_patching(
    model: Transformer, clean_src: Ids, corrupt_src: Ids, tgt_in: Ids, contrast: Contrast, *, chunk: int = 64
) -> SourcePatching:
    """Patch each encoder layer's input at each source position, and each cross-attention head, clean -> corrupted.

    The metric is (patched − corrupted)/(clean − corrupted) of contrast.of(logits) at
    contrast.position of the decoder. The decoder input is the same for both sources. One batched
    sweep of L_enc·S + L_dec·nh patched runs, `chunk` rows per forward pass.
    """
    _check_model(model)
    clean, corrupt, tgt = _pair(model, clean_src, corrupt_src, tgt_in)
    S, T, c = clean.shape[1], tgt.shape[1], model.config
    if not -T <= contrast.position < T:
        raise UserError(f"contrast.position {contrast.position} is outside the decoder input's {T} positions")
    with evaluating(model):
        out, cache = run_with_cache(model, clean, tgt, names=["encoder.*.resid_pre", "decoder.*.cross_attn.z"])
        clean_value = float(contrast.of(out.logits)[0])
        with torch.no_grad():
            corrupted_value = float(contrast.of(model(corrupt, tgt).logits)[0])
        if math.isclose(clean_value, corrupted_value, rel_tol=1e-6, abs_tol=1e-9):
            raise UserError(
                f"the contrast is {clean_value:.4g} for both the clean and the corrupted source, so there is "
                "nothing to restore; choose sources (or a contrast) on which the model differs"
            )
        device = clean.device
        positions = torch.eye(S, dtype=torch.bool, device=device)[:, :, None]  # (S, S, 1): row s marks position s
        heads = torch.eye(c.n_head, dtype=torch.bool, device=device)[:, :, None, None]  # (nh, nh, 1, 1)
        patches = [{f"encoder.{i}.resid_pre": positions[s]} for i in range(c.n_layer_enc) for s in range(S)]
        patches += [{f"decoder.{i}.cross_attn.z": heads[h]} for i in range(c.n_layer_dec) for h in range(c.n_head)]
        logits = _patched_runs(model, corrupt, tgt, cache, patches, chunk)  # (L_enc·S + L_dec·nh, T, V)
    metric = (contrast.of(logits) - corrupted_value) / (clean_value - corrupted_value)  # (N,)
    n_enc = c.n_layer_enc * S
    return SourcePatching(
        clean_ids=clean[0].tolist(),
        corrupt_ids=corrupt[0].tolist(),
        tgt_in=tgt[0].tolist(),
        contrast=contrast,
        clean_value=clean_value,
        corrupted_value=corrupted_value,
        encoder=metric[:n_enc].view(c.n_layer_enc, S),
        cross_heads=metric[n_enc:].view(c.n_layer_dec, c.n_head),
    )


# --- logit lens --------------------------------------------------------------------------------------------------


def decoder_lens(
    model: Transformer, src_ids: Ids, tgt_in: Ids, target: int | Sequence[int] | None = None, k: int = 5
) -> DecoderLens:
    """The logit lens on the decoder: embed_tgt and each decoder layer's output, through ln_dec and Eᵀ.

    target: a token id (its probability at every position) or one id per decoder position (e.g. the
    next target tokens); None: no target_prob. The last row is softmax of the model's logits.
    """
    _check_model(model)
    src, tgt = _ids(model, src_ids, "source"), _ids(model, tgt_in, "decoder input")  # (1, S), (1, T)
    c, T = model.config, tgt.shape[1]
    if not 1 <= k <= c.vocab_size:
        raise UserError(f"k must be between 1 and the vocabulary size {c.vocab_size}, got {k}")
    if target is not None:
        wanted = torch.as_tensor(target, dtype=torch.long, device=src.device).reshape(-1)  # (1,) or (T,)
        if wanted.numel() not in (1, T) or int(wanted.min()) < 0 or int(wanted.max()) >= c.vocab_size:
            raise UserError(f"target must be one token id or {T} (one per decoder position), each below {c.vocab_size}")
    rows = ["embed_tgt", *(f"decoder.{i}.resid_post" for i in range(c.n_layer_dec))]
    with evaluating(model), torch.no_grad():
        _, cache = run_with_cache(model, src, tgt, names=rows)
        streams = torch.stack([cache[name][0] for name in rows])  # (Ld+1, T, C)
        probs = torch.softmax(model.ln_dec(streams) @ model.embed.weight.T, dim=-1)  # (Ld+1, T, V)
    top_probs, top_ids = probs.topk(k, dim=-1)  # (Ld+1, T, k) each
    target_prob = None
    if target is not None:
        target_prob = probs.gather(-1, wanted.expand(T)[None, :, None].expand(len(rows), T, 1))[..., 0]  # (Ld+1, T)
    return DecoderLens(rows, top_ids, top_probs, target_prob, tgt[0].tolist())
