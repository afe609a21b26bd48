"""Attention patterns of one input, read out of a GPT or an encoder–decoder Transformer.

The models hand back their patterns when asked (`need_patterns=True` / `need_pattern=True`), which
also forces the written-out attention path. This module runs that one forward pass and keeps, for
each kind of attention, every layer's pattern beside the tokens it is about:

    kind       model         queries          keys             mask (what is hidden in a plot)
    "self"     GPT           the text         the text         the model's own (causal by default)
    "encoder"  translation   source + </s>    source + </s>    none
    "decoder"  translation   <s> + target     <s> + target     causal
    "cross"    translation   <s> + target     source + </s>    none

A model can come from a run directory (`load_subject(run=…)`) or, to see the shapes without
training, from a shipped preset with random weights (`load_subject(preset="tiny")`,
`load_subject(preset="translate/tiny")`).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kqv.errors import UserError
from kqv.inspect.attention import allowed_cells, token_texts

KINDS = ("self", "encoder", "decoder", "cross")
TRANSLATION_KINDS = ("encoder", "decoder", "cross")


@dataclass
class AttentionMaps:
    """One kind of attention on one input: patterns (L, nh, Tq, Tk) and the tokens on both axes."""

    kind: str
    patterns: np.ndarray  # (L, nh, Tq, Tk) float64; row i of [l, h] is query i's distribution over keys
    query_texts: list[str]  # Tq token texts (kqv.inspect.attention.token_texts)
    key_texts: list[str]  # Tk
    mask: str  # kqv.nn.masks name: which keys each query may see
    default_query: int  # the query shown when none is asked for: the last real token of the query side
    query_side: str  # "text", "source" or "target": where --query-token / --query-index look
    specials: frozenset[str] = frozenset()  # texts of special tokens ("<s>", "</s>"): each a word of its own

    @property
    def self_attention(self) -> bool:
        return self.kind != "cross"

    def allowed(self) -> np.ndarray:
        """(Tq, Tk) bool, True where the mask lets a query see a key."""
        return allowed_cells(self.mask, *self.patterns.shape[-2:])


@dataclass
class Subject:
    """A model to look inside, and where it came from."""

    family: str  # "gpt" or "translation"
    model: torch.nn.Module
    tokenizer: object
    name: str  # the run directory, or "preset tiny (random weights)"
    default_out: Path


def _stack(per_layer: list[torch.Tensor]) -> np.ndarray:
    return torch.stack([p[0] for p in per_layer]).double().cpu().numpy()  # L × (nh, Tq, Tk) -> (L, nh, Tq, Tk)


def _encode(tokenizer, text: str, what: str) -> list[int]:
    if not text.strip():
        raise UserError(f'the {what} is empty; give some text to look inside, e.g. "The pizza came out of the oven"')
    return tokenizer.encode(text)


@torch.no_grad()
def gpt_maps(model, tokenizer, text: str) -> AttentionMaps:
    """A GPT's masked self-attention on `text`, every layer and head."""
    ids = _encode(tokenizer, text, "text")
    limit = model.config.block_size
    if len(ids) > limit:
        raise UserError(
            f"the text is {len(ids)} tokens but the model reads at most {limit} (its block_size); shorten it"
        )
    device = next(model.parameters()).device
    out = model(torch.tensor([ids], device=device), need_patterns=True)
    texts = token_texts(tokenizer, ids)
    return AttentionMaps("self", _stack(out.patterns), texts, texts, model.config.mask, len(ids) - 1, "text")


@torch.no_grad()
def translation_maps(model, tokenizer, source: str, target: str | None = None) -> tuple[dict[str, AttentionMaps], str]:
    """Encoder, decoder and cross-attention on one sentence pair -> ({kind: maps}, the target text used).

    The source is read as the model reads it (ids + </s>), the decoder input as in training
    (<s> + target ids). Without `target`, the target is the model's own greedy translation.
    """
    from kqv.generate.beam import greedy_decode

    c = model.config
    src_ids = _encode(tokenizer, source, "source text") + [c.eos_id]
    if len(src_ids) > c.max_len:
        raise UserError(
            f"the source is {len(src_ids)} tokens with </s> but the model reads at most {c.max_len} (its max_len); "
            "shorten it"
        )
    device = next(model.parameters()).device
    src = torch.tensor([src_ids], device=device)  # (1, S)
    if target is None:
        tgt_ids = greedy_decode(model, src)[0].tokens
        target = tokenizer.decode(tgt_ids)
    else:
        tgt_ids = _encode(tokenizer, target, "--target text")
    tgt_in = [c.bos_id, *tgt_ids]
    if len(tgt_in) > c.max_len:
        raise UserError(
            f"the target is {len(tgt_in)} tokens with <s> but the model reads at most {c.max_len} (max_len); shorten it"
        )
    out = model(src, torch.tensor([tgt_in], device=device), need_pattern=True)
    src_texts, tgt_texts = token_texts(tokenizer, src_ids), token_texts(tokenizer, tgt_in)
    last_src = max(len(src_ids) - 2, 0)  # the last source token before </s>
    specials = frozenset(token_texts(tokenizer, [c.pad_id, c.bos_id, c.eos_id]))
    last_tgt = len(tgt_in) - 1
    maps = {
        "encoder": AttentionMaps("encoder", _stack(out.patterns["encoder"]), src_texts, src_texts, "none", last_src,
                                 "source", specials),
        "decoder": AttentionMaps("decoder", _stack(out.patterns["decoder"]), tgt_texts, tgt_texts, "causal", last_tgt,
                                 "target", specials),
        "cross": AttentionMaps("cross", _stack(out.patterns["cross"]), tgt_texts, src_texts, "none", last_tgt,
                               "target", specials),
    }  # fmt: skip
    return maps, target


# --- where the model comes from


def load_subject(run: str | None = None, preset: str | None = None, seed: int = 0) -> Subject:
    """A trained run (its config.json says "gpt" or "translation") or a preset with random weights."""
    if (run is None) == (preset is None):
        raise UserError("give a run directory or --preset NAME (one of them, not both)")
    if preset is not None:
        return _random_subject(preset, seed)
    from kqv.train.gpt_run import load_run, read_config
    from kqv.train.translate_run import load_translation_run

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise UserError(
            f"{run_dir}: no such run directory; train one with `kqv gpt train --out {run_dir}`, "
            "or look at a model with random weights: kqv inspect --preset tiny TEXT"
        )
    kind = read_config(run_dir).get("kind", "gpt")
    if kind == "translation":
        loaded = load_translation_run(run_dir)
    elif kind == "gpt":
        loaded = load_run(run_dir)
    else:
        raise UserError(f"{run_dir}: a {kind!r} run; kqv inspect reads gpt and translation runs")
    return Subject(kind, loaded.model, loaded.tokenizer, str(run_dir), run_dir / "inspect")


def _random_subject(preset: str, seed: int) -> Subject:
    """`tiny` (a GPT preset) or `translate/tiny`: the preset's model, random weights, a tokenizer that fits it.

    GPT: the char tokenizer of the embedded Shakespeare (65 characters). Translation: a BPE
    vocabulary of the preset's size trained on the embedded English–Spanish verses (~2 s).
    """
    from kqv.config import ConfigError, GPTConfig, TransformerConfig, from_dict, load_preset, preset_names

    family, _, name = preset.rpartition("/")
    family = family or "gpt"
    if family not in ("gpt", "translate"):
        raise UserError(f"--preset {preset}: use NAME for a GPT preset or translate/NAME for a translation preset")
    if name not in preset_names(family):
        named = [*preset_names("gpt"), *(f"translate/{n}" for n in preset_names("translate"))]
        raise UserError(f"--preset {preset}: no such preset; choose one of {', '.join(named)}")
    torch.manual_seed(seed)
    try:
        table = load_preset(name, family)["model"]
        if family == "gpt":
            from kqv.data.text import read_corpus
            from kqv.models.gpt import GPT
            from kqv.tokenizer import train_tokenizer

            tokenizer = train_tokenizer("char", read_corpus(None).text)
            model = GPT(from_dict(GPTConfig, {**table, "vocab_size": tokenizer.vocab_size}, f"preset {name}"))
        else:
            from kqv.data.parallel import default_corpus_path, read_tsv
            from kqv.models.transformer import Transformer
            from kqv.tokenizer.bpe import BPETokenizer
            from kqv.train.translate_run import SPECIAL_TOKENS

            pairs = read_tsv(default_corpus_path(), 2, 3, header=True)
            texts = [s for s, _ in pairs] + [t for _, t in pairs]
            tokenizer = BPETokenizer.train(texts, table.get("vocab_size", 8000), SPECIAL_TOKENS)
            config = from_dict(TransformerConfig, {**table, "vocab_size": tokenizer.vocab_size}, f"preset {preset}")
            model = Transformer(config)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    out = Path("runs") / f"inspect-{preset.replace('/', '-')}"
    family = "gpt" if family == "gpt" else "translation"
    return Subject(family, model.eval(), tokenizer, f"preset {preset} (random weights, seed {seed})", out)
