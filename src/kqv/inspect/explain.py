"""One forward pass, tensor by tensor: names, shapes and meanings, parameters and FLOPs (`kqv explain`).

`explain_gpt(model, ids)` and `explain_translation(model, src_ids, tgt_in)` run the model once with
the activation cache (kqv.inspect.cache) and return an `Explanation`:

- `notation`: the letters of the shapes (B, T, C, nh, hs, V, …) with their values in this model;
- `tensors`: every hook point, in the order the pass made it, with its shape and what it holds;
- `parameters`: each module's own parameters; a matrix shared by two modules (the tied
  embedding and LM head) is counted once, so the total equals sum(p.numel() for p in model.parameters());
- `flops`: forward FLOPs per token of each part. A matmul with an (m, n) weight costs 2·m·n FLOPs per
  token (one multiply and one add per weight: the "2N" rule); attention also costs 2·Tk·C for the
  scores q·kᵀ and 2·Tk·C for the weighted sum pattern·V per layer, where Tk is the number of keys a
  query sees (Kaplan et al. 2020, §2.1). Embedding lookups, LayerNorms, softmax and residual adds are
  O(C) per token and left out.
"""

import re
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from kqv.inspect.cache import ActivationCache, run_with_cache

_LAYER = re.compile(r"^(blocks|encoder|decoder)\.(\d+)\.(.+)$")


@dataclass
class TensorRow:
    name: str
    shape: tuple[int, ...]
    meaning: str


@dataclass
class ParamRow:
    module: str
    shapes: dict[str, tuple[int, ...]]  # parameter name (weight, bias, …) -> shape
    count: int  # 0 for a matrix counted under another module (tied)
    note: str = ""


@dataclass
class FlopRow:
    part: str
    per: str  # "token", "source token" or "target token"
    formula: str
    flops: int  # at this input's length
    flops_at_limit: int  # at the longest input the model takes (block_size / max_len)


@dataclass
class Explanation:
    family: str  # "gpt" or "translation"
    notation: list[tuple[str, int, str]]  # (symbol, value, meaning)
    tensors: list[TensorRow]
    parameters: list[ParamRow]
    total_parameters: int
    flops: list[FlopRow]
    limit: int  # the length flops_at_limit assumes
    output: object = field(repr=False, default=None)  # the model's output on this input

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("output")
        d["notation"] = {s: {"value": v, "meaning": m} for s, v, m in self.notation}
        for row in d["tensors"]:
            row["shape"] = list(row["shape"])
        for row in d["parameters"]:
            row["shapes"] = {k: list(v) for k, v in row["shapes"].items()}
        return d


def parameter_rows(model: nn.Module) -> tuple[list[ParamRow], int]:
    """Each module that owns parameters, in module order -> (rows, total); a shared tensor counts once."""
    owner: dict[int, str] = {}
    rows = []
    for path, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        shapes = {name: tuple(p.shape) for name, p in own}
        count, shared = 0, []
        for name, p in own:
            if id(p) in owner:
                shared.append(f"{name} is {owner[id(p)]} (tied: counted there)")
            else:
                owner[id(p)] = f"{path}.{name}"
                count += p.numel()
        rows.append(ParamRow(path, shapes, count, "; ".join(shared)))
    total = sum(r.count for r in rows)
    assert total == sum(p.numel() for p in model.parameters())  # the definition of the total
    return rows, total


# --- meanings


def _attention_meaning(part: str, shape, *, queries: str, keys: str, nh: int, hs: int, mask: str, score: str) -> str:
    """What q, k, v, scores, pattern, z, out of one attention hold; `queries`/`keys` say whose tokens."""
    if part == "q":
        return f"Q = x·W_Q, split into {nh} heads of {hs}: what each of the {shape[2]} {queries} asks"
    if part == "k":
        return f"K, split into heads: how each of the {shape[2]} {keys} describes itself"
    if part == "v":
        return f"V, split into heads: what each of the {shape[2]} {keys} carries"
    if part == "scores":
        hidden = f"; −inf where the {mask} mask hides a key" if mask != "none" else ""
        return f"{score} per head, before the softmax: how well each query matches each key{hidden}"
    if part == "pattern":
        how = f"how much each of the {shape[2]} {queries} takes from each key"
        return f"softmax of each row of the scores: {how}; rows sum to 1"
    if part == "z":
        return f"pattern·V per head: what each of the {nh} heads gathers for each of the {shape[2]} {queries}"
    if part == "out":
        return f"heads merged to (B, {shape[1]}, {nh * hs}) and projected by W_O: what attention adds to the stream"
    raise KeyError(part)


_SCORES = {
    "scaled_dot": "q·kᵀ/√hs",
    "dot": "q·kᵀ (unscaled)",
    "squared_dot": "(q⊙q)·(k⊙k)ᵀ/√hs",
    "dot_squared": "(q·kᵀ/√hs)²",
    "cosine": "τ·cos(q, k)",
    "additive": "vᵀ·tanh(W·q + U·k)",
    "negated_dot": "−q·kᵀ/√hs",
    "neg_distance": "−‖q−k‖²/√hs",
}


def _gpt_meaning(name: str, shape, model) -> str:
    c = model.config
    T, C = shape[1], c.n_embd
    m = _LAYER.match(name)
    if m is None:
        pos = c.pos_encoding
        return {
            "embed": f"token embeddings: for each of the {T} tokens, the row of tok_emb {(c.vocab_size, C)} at its id",
            "pos_embed": (
                f"embed + the {pos} position embeddings of positions 0…{T - 1}: the stream entering block 0"
                if pos in ("learned", "sinusoidal")
                else f"= embed: {pos} positions act inside attention, not here"
                if pos in ("rope", "alibi")
                else "= embed: this model has no position information (pos_encoding none)"
            ),
            "ln_final": "the stream after the final LayerNorm (ln_f)",
            "logits": f"a score for each of the {shape[-1]} vocabulary entries as the token after each position "
            "(ln_final · tok_embᵀ, the tied LM head)",
        }[name]
    i, part = m.group(2), m.group(3)
    if part.startswith("attn."):
        return _attention_meaning(
            part[len("attn.") :], shape, queries="tokens", keys="tokens", nh=c.n_head, hs=c.head_size,
            mask=c.mask, score=_SCORES[c.score],
        )  # fmt: skip
    hidden = model.blocks[0].mlp.fc.out_features
    return {
        "resid_pre": f"the residual stream entering block {i}: one {C}-vector per token",
        "resid_mid": "resid_pre + attn.out: the stream after attention",
        "mlp.hidden": f"MLP hidden layer: ln_2(resid_mid) · W_fc ({C} -> {hidden}), then GELU; each token on its own",
        "mlp.out": f"MLP output, {hidden} -> {C}: what the MLP adds to the stream",
        "resid_post": f"resid_mid + mlp.out: the stream leaving block {i}",
    }[part]


def _translation_meaning(name: str, shape, model) -> str:
    c = model.config
    C = c.n_embd
    m = _LAYER.match(name)
    if m is None:
        return {
            "embed_src": f"source token embeddings ·√{C}, + {c.pos_encoding} positions: the encoder's input",
            "memory": "the encoder's output: one vector per source token, read by every cross-attention",
            "embed_tgt": f"target token embeddings (the same table) ·√{C}, + positions: the decoder's input",
            "decoder_out": "the decoder's output stream" + (" after its final LayerNorm" if c.norm_first else ""),
            "logits": f"a score for each of the {shape[-1]} vocabulary entries as the next target token "
            "(decoder_out · Eᵀ, the shared embedding)",
        }[name]
    stack, i, part = m.groups()
    side = "source tokens" if stack == "encoder" else "target tokens"
    for attn, keys, mask in (("self_attn.", side, "none" if stack == "encoder" else "causal"),
                             ("cross_attn.", "source tokens", "none")):  # fmt: skip
        if part.startswith(attn):
            text = _attention_meaning(
                part[len(attn) :], shape, queries=side, keys=keys, nh=c.n_head, hs=c.head_size,
                mask=mask, score=_SCORES["scaled_dot"],
            )  # fmt: skip
            if attn == "cross_attn." and part.endswith((".k", ".v")):
                text += " (from the memory, computed once per sentence)"
            if attn == "self_attn." and stack == "encoder" and part.endswith("scores"):
                text += "; −inf at padding keys"
            return text
    act = {"relu": "ReLU", "gelu": "GELU", "gelu_tanh": "GELU (tanh)"}[c.activation]
    after = {"encoder": "attention", "decoder": "self-attention"}[stack]
    normed = "" if c.norm_first else ", LayerNormed (post-LN)"
    return {
        "resid_pre": f"the stream entering {stack} layer {i}: one {C}-vector per {side[:-1]}",
        "resid_mid": f"the stream after {after}{normed}",
        "resid_cross": f"the stream after cross-attention{normed}: each target token has read the source",
        "ff.hidden": f"feed-forward hidden layer ({C} -> {c.d_ff}), then {act}; each token on its own",
        "ff.out": f"feed-forward output, {c.d_ff} -> {C}: what it adds to the stream",
        "resid_post": f"the stream leaving {stack} layer {i}{normed}",
    }[part]


# --- FLOPs


def gpt_flops(model, T: int) -> tuple[list[FlopRow], int]:
    """Forward FLOPs per token of a GPT at context T and at block_size."""
    c = model.config
    C, L, V, H, limit = c.n_embd, c.n_layer, c.vocab_size, model.blocks[0].mlp.fc.out_features, c.block_size
    note = "" if c.score == "scaled_dot" else f" (for scaled_dot; {c.score} costs more)"

    def rows(t: int) -> list[tuple[str, str, int]]:
        return [
            ("attention projections W_Q, W_K, W_V, W_O", "2·4C²·L", 2 * 4 * C * C * L),
            ("attention scores q·kᵀ" + note, "2·T·C·L", 2 * t * C * L),
            ("attention weighted sum pattern·V", "2·T·C·L", 2 * t * C * L),
            (f"MLP ({C} -> {H} -> {C})", "2·2·C·H·L", 2 * 2 * C * H * L),
            ("LM head (tied embedding)", "2·C·V", 2 * C * V),
        ]

    out = [
        FlopRow(part, "token", formula, n, n_limit)
        for (part, formula, n), (_, _, n_limit) in zip(rows(T), rows(limit), strict=True)
    ]
    return out, limit


def translation_flops(model, S: int, T: int) -> tuple[list[FlopRow], int]:
    """Forward FLOPs per source token (encoder, cross K/V) and per target token at S, T and max_len."""
    c = model.config
    C, F, Le, Ld, V, limit = c.n_embd, c.d_ff, c.n_layer_enc, c.n_layer_dec, c.vocab_size, c.max_len

    def rows(s: int, t: int) -> list[tuple[str, str, str, int]]:
        return [
            ("encoder attention projections", "source token", "2·4C²·Le", 2 * 4 * C * C * Le),
            ("encoder scores + weighted sum", "source token", "2·2·S·C·Le", 2 * 2 * s * C * Le),
            ("encoder feed-forward", "source token", "2·2·C·F·Le", 2 * 2 * C * F * Le),
            ("cross-attention K, V of the memory", "source token", "2·2C²·Ld", 2 * 2 * C * C * Ld),
            ("decoder self-attention projections", "target token", "2·4C²·Ld", 2 * 4 * C * C * Ld),
            ("decoder self-attention scores + sum", "target token", "2·2·T·C·Ld", 2 * 2 * t * C * Ld),
            ("cross-attention Q, out projections", "target token", "2·2C²·Ld", 2 * 2 * C * C * Ld),
            ("cross-attention scores + sum", "target token", "2·2·S·C·Ld", 2 * 2 * s * C * Ld),
            ("decoder feed-forward", "target token", "2·2·C·F·Ld", 2 * 2 * C * F * Ld),
            ("output projection (shared embedding)", "target token", "2·C·V", 2 * C * V),
        ]

    out = [
        FlopRow(part, per, formula, n, n_limit)
        for (part, per, formula, n), (*_, n_limit) in zip(rows(S, T), rows(limit, limit), strict=True)
    ]
    return out, limit


# --- the walk


def _rows(cache: ActivationCache, meaning, model) -> list[TensorRow]:
    return [TensorRow(name, tuple(t.shape), meaning(name, tuple(t.shape), model)) for name, t in cache.items()]


def explain_gpt(model, ids: list[int], vocab_note: str = "") -> Explanation:
    """One forward pass of a GPT on the token ids `ids` (at most block_size of them)."""
    c = model.config
    device = next(model.parameters()).device
    out, cache = run_with_cache(model, torch.tensor([ids], device=device))
    T = len(ids)
    hidden = model.blocks[0].mlp.fc.out_features
    notation = [
        ("B", 1, "sequences in the batch (one text here)"),
        ("T", T, f"tokens in the text: time steps, positions 0…T−1 (at most block_size = {c.block_size})"),
        ("C", c.n_embd, "model width (n_embd): the length of every token's vector in the residual stream"),
        ("nh", c.n_head, "attention heads per layer"),
        ("hs", c.head_size, "head size C/nh: the length of each head's q, k and v"),
        ("Tk", T, "keys each query is scored against (= T: every token of the text; the causal mask hides later ones)"),
        ("H", hidden, "MLP hidden width (4C)"),
        ("V", c.vocab_size, "vocabulary size" + (f" ({vocab_note})" if vocab_note else "")),
        ("L", c.n_layer, "blocks (n_layer)"),
    ]
    params, total = parameter_rows(model)
    flops, limit = gpt_flops(model, T)
    return Explanation("gpt", notation, _rows(cache, _gpt_meaning, model), params, total, flops, limit, out)


def explain_translation(model, src_ids: list[int], tgt_in: list[int], vocab_note: str = "") -> Explanation:
    """One teacher-forced pass of the encoder–decoder: source ids (with </s>) and decoder input (<s> + target)."""
    c = model.config
    device = next(model.parameters()).device
    src, tgt = torch.tensor([src_ids], device=device), torch.tensor([tgt_in], device=device)
    out, cache = run_with_cache(model, src, tgt)
    S, T = len(src_ids), len(tgt_in)
    notation = [
        ("B", 1, "sentence pairs in the batch (one here)"),
        ("S", S, f"source tokens, </s> included (at most max_len = {c.max_len})"),
        ("T", T, "target tokens fed to the decoder: <s> + the target (teacher forcing)"),
        ("C", c.n_embd, "model width (n_embd; d_model in the paper): the length of every token's vector"),
        ("nh", c.n_head, "attention heads per attention"),
        ("hs", c.head_size, "head size C/nh: the length of each head's q, k and v"),
        ("F", c.d_ff, "feed-forward hidden width (d_ff)"),
        ("V", c.vocab_size, "shared source/target vocabulary" + (f" ({vocab_note})" if vocab_note else "")),
        ("Le", c.n_layer_enc, "encoder layers"),
        ("Ld", c.n_layer_dec, "decoder layers"),
    ]
    params, total = parameter_rows(model)
    flops, limit = translation_flops(model, S, T)
    rows = _rows(cache, _translation_meaning, model)
    return Explanation("translation", notation, rows, params, total, flops, limit, out)
