"""The encoder–decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017, §3).

    source ids (B, S) -> embed·√d_model + positions -> N encoder layers -> memory (B, S, C)
    target ids (B, T) -> embed·√d_model + positions -> N decoder layers (reading memory)
                      -> logits (B, T, V) = x · Eᵀ   (the same embedding matrix E, unscaled)

Three attentions, each from kqv.nn.attention.MultiHeadAttention:

    encoder self-attention    Q, K, V from the source            (B, S, C): every source token sees
                              every other, padding hidden          pattern (B, nh, S, S)
    decoder masked self-attn  Q, K, V from the target so far      (B, T, C): causal, pattern (B, nh, T, T)
    cross-attention           Q from the decoder (B, T, C),       K, V from the memory (B, S, C):
                              source padding hidden                pattern (B, nh, T, S)

Post-LN as in the paper (x = LayerNorm(x + Sublayer(x))) by default; `norm_first`
gives pre-LN (x = x + Sublayer(LayerNorm(x)), with a final LayerNorm on each stack),
which tolerates larger learning rates and shorter warm-ups.

Hook points (kqv.nn.hooks), named by module path: embed_src, encoder.{i}.resid_pre|resid_mid|resid_post,
encoder.{i}.self_attn.q|k|v|scores|pattern|z|out, encoder.{i}.ff.hidden|out, memory, embed_tgt,
decoder.{i}.resid_pre|resid_mid|resid_cross|resid_post, decoder.{i}.self_attn.…, decoder.{i}.cross_attn.…,
decoder.{i}.ff.…, decoder_out, logits. Shapes: docs/activations.md.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kqv.config import TransformerConfig
from kqv.nn.attention import MultiHeadAttention
from kqv.nn.block import FeedForward
from kqv.nn.hooks import HookPoint
from kqv.nn.kv_cache import LayerCache
from kqv.nn.positional import make_positional

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")  # the tokenizer's ids 0, 1, 2: TransformerConfig's pad_id, bos_id, eos_id


@dataclass
class Seq2SeqOutput:
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None = None  # label-smoothed cross-entropy per target token (the training objective)
    nll: torch.Tensor | None = None  # plain negative log-likelihood per target token (perplexity = exp(nll))
    n_tokens: int = 0  # target tokens that count (padding excluded)
    patterns: dict | None = None  # "encoder", "decoder", "cross": a list per layer of (B, nh, Tq, Tk)


def smoothed_loss(
    logits: torch.Tensor, target: torch.Tensor, pad_id: int, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """-> (label-smoothed loss, plain NLL, token count), both means over non-padding targets.

    logits (B, T, V), target (B, T). The smoothed target puts 1 − ε on the right token and
    spreads ε evenly over all V classes (as torch's `label_smoothing` does); padding
    positions are left out of both sums and of the count.
    """
    wide = logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits  # the sums need ≥ fp32
    logp = F.log_softmax(wide, dim=-1)  # (B, T, V)
    keep = target != pad_id  # (B, T)
    n = int(keep.sum())
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T)
    uniform = -logp.mean(dim=-1)  # (B, T): cross-entropy against the uniform distribution
    nll_mean = nll[keep].sum() / max(n, 1)
    loss = (1.0 - epsilon) * nll_mean + epsilon * uniform[keep].sum() / max(n, 1)
    return loss, nll_mean, n


class EncoderLayer(nn.Module):
    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.norm_first = c.norm_first
        self.self_attn = MultiHeadAttention(
            c.n_embd, c.n_head, c.bias, c.dropout, mask="none", attn_dropout=c.attn_dropout
        )
        self.ln_1 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.ff = FeedForward(c.n_embd, c.bias, c.dropout, hidden=c.d_ff, activation=c.activation)
        self.ln_2 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.resid_pre, self.resid_mid, self.resid_post = HookPoint(), HookPoint(), HookPoint()  # (B, S, C) each

    def forward(self, x: torch.Tensor, src_pad: torch.Tensor, need_pattern: bool = False):
        """x (B, S, C), src_pad (B, S) True at padding -> (B, S, C), pattern (B, nh, S, S) | None."""
        x = self.resid_pre(x)
        if self.norm_first:
            attn = self.self_attn(self.ln_1(x), key_padding=src_pad, need_pattern=need_pattern)
            x = self.resid_mid(x + attn.out)
            x = self.resid_post(x + self.ff(self.ln_2(x)))
        else:
            attn = self.self_attn(x, key_padding=src_pad, need_pattern=need_pattern)
            x = self.resid_mid(self.ln_1(x + attn.out))
            x = self.resid_post(self.ln_2(x + self.ff(x)))
        return x, attn.pattern


class DecoderLayer(nn.Module):
    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.norm_first = c.norm_first
        self.self_attn = MultiHeadAttention(
            c.n_embd, c.n_head, c.bias, c.dropout, mask="causal", attn_dropout=c.attn_dropout
        )
        self.ln_1 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.cross_attn = MultiHeadAttention(
            c.n_embd, c.n_head, c.bias, c.dropout, mask="none", attn_dropout=c.attn_dropout
        )
        self.ln_2 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.ff = FeedForward(c.n_embd, c.bias, c.dropout, hidden=c.d_ff, activation=c.activation)
        self.ln_3 = nn.LayerNorm(c.n_embd, bias=c.bias)
        # hook points on the stream (B, T, C): entering, after self-attention, after cross-attention, leaving
        self.resid_pre, self.resid_mid, self.resid_cross, self.resid_post = (HookPoint() for _ in range(4))

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        src_pad: torch.Tensor,
        cache: LayerCache | None = None,
        start: int = 0,
        need_pattern: bool = False,
    ):
        """x (B, T, C) at target positions start…start+T−1; memory_kv: cross-attention k, v (B, nh, S, hs).

        -> (B, T, C), self pattern (B, nh, T, start+T) | None, cross pattern (B, nh, T, S) | None."""

        def self_attention(h):
            return self.self_attn(h, cache=cache, start=start, need_pattern=need_pattern)

        def cross_attention(h):
            return self.cross_attn(h, context_kv=memory_kv, key_padding=src_pad, need_pattern=need_pattern)

        x = self.resid_pre(x)
        if self.norm_first:
            own = self_attention(self.ln_1(x))
            x = self.resid_mid(x + own.out)
            cross = cross_attention(self.ln_2(x))
            x = self.resid_cross(x + cross.out)
            x = self.resid_post(x + self.ff(self.ln_3(x)))
        else:
            own = self_attention(x)
            x = self.resid_mid(self.ln_1(x + own.out))
            cross = cross_attention(x)
            x = self.resid_cross(self.ln_2(x + cross.out))
            x = self.resid_post(self.ln_3(x + self.ff(x)))
        return x, own.pattern, cross.pattern


@dataclass
class DecoderState:
    """What incremental decoding keeps between steps, one row per hypothesis.

    self_caches: per decoder layer, k and v of the target tokens so far, (R, nh, max_len, hs);
    memory_kv: per decoder layer, the cross-attention k and v of the source, (R, nh, S, hs) each;
    src_pad: (R, S). `select(rows)` keeps (and reorders, repeats) rows: beam search calls it
    after every step so each hypothesis keeps its own history and its own source.
    """

    self_caches: list[LayerCache]
    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]
    src_pad: torch.Tensor
    length: int = 0

    def select(self, rows: torch.Tensor) -> "DecoderState":
        for cache in self.self_caches:
            cache.k = cache.k.index_select(0, rows)
            cache.v = cache.v.index_select(0, rows)
        self.memory_kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.memory_kv]
        self.src_pad = self.src_pad.index_select(0, rows)
        return self


class Transformer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.n_embd)  # shared: source, target and output projection
        self.positional = make_positional(c.pos_encoding, c.n_embd, c.n_head, c.max_len)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(c) for _ in range(c.n_layer_enc))
        self.decoder = nn.ModuleList(DecoderLayer(c) for _ in range(c.n_layer_dec))
        # pre-LN leaves the residual stream unnormalised; post-LN's last sublayer already normalised it
        self.ln_enc = nn.LayerNorm(c.n_embd, bias=c.bias) if c.norm_first else nn.Identity()
        self.ln_dec = nn.LayerNorm(c.n_embd, bias=c.bias) if c.norm_first else nn.Identity()
        # hook points: embeddings entering each stack (B, S, C) and (B, T, C); the encoder's output (B, S, C);
        # the decoder's (B, T, C); logits (B, T, V)
        self.embed_src, self.embed_tgt, self.memory = HookPoint(), HookPoint(), HookPoint()
        self.decoder_out, self.logits = HookPoint(), HookPoint()
        self.apply(self._init_weights)
        # E ~ N(0, 1/d_model): the input E·√d_model has unit-variance rows, the output x·Eᵀ modest logits
        nn.init.normal_(self.embed.weight, mean=0.0, std=c.n_embd**-0.5)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        pos = torch.arange(start, start + ids.shape[1], device=ids.device)  # (T,)
        x = self.embed(ids) * math.sqrt(self.config.n_embd)  # (B, T, C), scaled on the input side only
        x = self.positional.add_to_embeddings(x, pos)  # (B, T, C)
        return self.drop(x) if self.training else x

    def check_length(self, n: int, what: str) -> None:
        if n > self.config.max_len:
            raise ValueError(
                f"{what} of {n} tokens is longer than the model's max_len {self.config.max_len}; shorten it"
            )

    def encode(self, src: torch.Tensor, need_pattern: bool = False):
        """src (B, S) -> memory (B, S, C), src_pad (B, S) True at padding, encoder patterns (list) | None."""
        self.check_length(src.shape[1], "a source sentence")
        src_pad = src == self.config.pad_id  # (B, S)
        x = self.embed_src(self._embed(src))  # (B, S, C)
        patterns = []
        for layer in self.encoder:
            x, pattern = layer(x, src_pad, need_pattern)  # (B, S, C)
            patterns.append(pattern)
        return self.memory(self.ln_enc(x)), src_pad, (patterns if need_pattern else None)

    def memory_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The cross-attention keys and values of every decoder layer: [(k, v) (B, nh, S, hs)] × n_layer_dec."""
        return [layer.cross_attn.project_kv(memory) for layer in self.decoder]

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
        src_pad: torch.Tensor,
        caches: list[LayerCache] | None = None,
        start: int = 0,
        need_pattern: bool = False,
    ):
        """tgt_in (B, T) at positions start…start+T−1 -> logits (B, T, V), decoder and cross patterns | None."""
        self.check_length(start + tgt_in.shape[1], "a translation")
        x = self.embed_tgt(self._embed(tgt_in, start))  # (B, T, C)
        own_patterns, cross_patterns = [], []
        for i, layer in enumerate(self.decoder):
            cache = caches[i] if caches is not None else None
            x, own, cross = layer(x, memory_kv[i], src_pad, cache, start, need_pattern)  # (B, T, C)
            own_patterns.append(own)
            cross_patterns.append(cross)
        x = self.decoder_out(self.ln_dec(x))  # (B, T, C)
        logits = self.logits(x @ self.embed.weight.T)  # (B, T, C) @ (C, V) -> (B, T, V)
        patterns = {"decoder": own_patterns, "cross": cross_patterns} if need_pattern else None
        return logits, patterns

    def forward(
        self, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor | None = None, need_pattern: bool = False
    ) -> Seq2SeqOutput:
        """Teacher forcing: src (B, S), tgt_in (B, T) = [bos, y1 … yn], tgt_out (B, T) = [y1 … yn, eos]."""
        memory, src_pad, enc_patterns = self.encode(src, need_pattern)  # (B, S, C)
        logits, patterns = self.decode(tgt_in, self.memory_kv(memory), src_pad, need_pattern=need_pattern)
        out = Seq2SeqOutput(logits)
        if need_pattern:
            out.patterns = {"encoder": enc_patterns, **patterns}
        if tgt_out is not None:
            epsilon = self.config.label_smoothing if self.training else 0.0
            out.loss, out.nll, out.n_tokens = smoothed_loss(logits, tgt_out, self.config.pad_id, epsilon)
        return out

    def start_decoding(self, src: torch.Tensor, max_len: int) -> DecoderState:
        """Encode src (B, S) once and make empty self-attention caches for up to max_len target tokens."""
        memory, src_pad, _ = self.encode(src)
        c, B = self.config, src.shape[0]
        weight = self.embed.weight
        caches = [
            LayerCache(B, c.n_head, max_len, c.head_size, device=weight.device, dtype=weight.dtype)
            for _ in range(c.n_layer_dec)
        ]
        return DecoderState(caches, self.memory_kv(memory), src_pad)

    def step(self, tokens: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """One decoding step: tokens (R,) at position state.length -> next-token logits (R, V)."""
        logits, _ = self.decode(tokens[:, None], state.memory_kv, state.src_pad, state.self_caches, state.length)
        state.length += 1
        return logits[:, -1]  # (R, V)
