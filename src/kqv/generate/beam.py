"""Greedy and beam-search decoding for the encoder–decoder Transformer, batched.

Both encode the source once, keep a self-attention cache per hypothesis and the
cross-attention keys/values of the source (kqv.models.transformer.DecoderState), and
stop a sentence at eos or at its length limit: ⌊max_len_a · source tokens + max_len_b⌋
new tokens, eos included (never more than the model's max_len − 1).

Beam search keeps `beam` live hypotheses per sentence, ranked by their summed
log-probability. Each step takes the best 2·beam extensions: an eos among the top
`beam` ends that hypothesis and moves it to the sentence's finished list (where it is
never touched again); the best `beam` non-eos extensions stay live. A sentence is done
when it has `beam` finished hypotheses. The result is the finished hypothesis with the
best GNMT-normalised score (Wu et al. 2016, eq. 14):

    score(Y) = log P(Y | X) / lp(Y),   lp(Y) = ((5 + |Y|) / 6) ** alpha

with |Y| counting eos. alpha = 0 ranks by plain log-probability. Rows of finished
sentences leave the batch, so a batch costs what its live hypotheses need.

Neither search ever proposes <pad> or <s> (the config's pad_id, bos_id): they get
log-probability −inf after the log-softmax, without renormalising, so a hypothesis's
reported log-probability is still the model's, as teacher forcing (`sequence_logprob`)
computes it.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kqv.models.transformer import Transformer


@dataclass
class Hypothesis:
    tokens: list[int]  # without bos and eos
    logprob: float  # log P(tokens + eos | source), summed
    score: float  # logprob / length_penalty(len(tokens) + 1, alpha)


def next_logprobs(model: Transformer, tokens: torch.Tensor, state) -> torch.Tensor:
    """One decoder step -> log-probabilities (R, V) in float64, −inf at pad and bos, which are never output.

    float64: sums over many steps stay exact enough to compare with teacher forcing."""
    c = model.config
    logits = model.step(tokens, state)  # (R, V), bf16 under autocast
    wide = logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits
    logp = F.log_softmax(wide, dim=-1).double()  # (R, V)
    logp[:, [c.pad_id, c.bos_id]] = float("-inf")  # masked, not renormalised: log P stays the model's
    return logp


def length_penalty(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


def length_limits(src: torch.Tensor, pad_id: int, max_len_a: float, max_len_b: int, cap: int) -> torch.Tensor:
    """src (B, S) -> (B,) the most target tokens (eos included) each sentence may get."""
    src_len = (src != pad_id).sum(dim=1).float()  # (B,)
    return (max_len_a * src_len + max_len_b).floor().long().clamp(min=1, max=cap)


@torch.no_grad()
def greedy_decode(
    model: Transformer, src: torch.Tensor, max_len_a: float = 1.5, max_len_b: int = 10
) -> list[Hypothesis]:
    """src (B, S) source ids (eos-terminated, right-padded) -> one Hypothesis per sentence: the argmax each step."""
    c = model.config
    B = src.shape[0]
    limits = length_limits(src, c.pad_id, max_len_a, max_len_b, c.max_len - 1)  # (B,)
    state = model.start_decoding(src, int(limits.max()) + 1)
    alive = torch.arange(B, device=src.device)  # sentence of each row
    tokens = torch.full((B,), c.bos_id, dtype=torch.long, device=src.device)  # (R,)
    outputs: list[list[int]] = [[] for _ in range(B)]
    logprobs = [0.0] * B
    for t in range(int(limits.max())):
        logp = next_logprobs(model, tokens, state)  # (R, V)
        at_limit = t + 1 >= limits[alive]  # (R,) the next token must be eos
        logp[at_limit] = torch.where(
            torch.arange(logp.shape[1], device=src.device) == c.eos_id, logp[at_limit], float("-inf")
        )
        best = logp.argmax(dim=-1)  # (R,)
        picked = logp.gather(1, best[:, None]).squeeze(1)  # (R,)
        for sent, token, lp in zip(alive.tolist(), best.tolist(), picked.tolist(), strict=True):
            logprobs[sent] += lp
            if token != c.eos_id:
                outputs[sent].append(token)
        keep = (best != c.eos_id).nonzero().squeeze(1)  # (R',)
        if keep.numel() == 0:
            break
        if keep.numel() < alive.numel():
            state.select(keep)
        alive, tokens = alive[keep], best[keep]
    return [Hypothesis(o, lp, lp / length_penalty(len(o) + 1, 0.0)) for o, lp in zip(outputs, logprobs, strict=True)]


@torch.no_grad()
def beam_search(
    model: Transformer,
    src: torch.Tensor,
    beam: int = 4,
    alpha: float = 0.6,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
) -> list[Hypothesis]:
    """src (B, S) -> the best Hypothesis per sentence under the normalised score."""
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    c = model.config
    B, K, device = src.shape[0], beam, src.device
    limits = length_limits(src, c.pad_id, max_len_a, max_len_b, c.max_len - 1)  # (B,)
    state = model.start_decoding(src, int(limits.max()) + 1)
    state.select(torch.arange(B, device=device).repeat_interleave(K))  # K rows per sentence: (B·K, …)
    sentences = torch.arange(B, device=device)  # (n,) the sentence of each group of K rows
    scores = torch.full((B, K), float("-inf"), dtype=torch.float64, device=device)  # (n, K) summed log-probs
    scores[:, 0] = 0.0  # one live hypothesis to start with, so the K rows do not repeat it
    seqs = torch.zeros((B, K, 0), dtype=torch.long, device=device)  # (n, K, t) tokens so far
    tokens = torch.full((B * K,), c.bos_id, dtype=torch.long, device=device)  # (n·K,)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    for t in range(int(limits.max())):
        n = sentences.numel()
        logp = next_logprobs(model, tokens, state)  # (n·K, V)
        V = logp.shape[-1]
        candidates = scores[:, :, None] + logp.view(n, K, V)  # (n, K, V)
        at_limit = t + 1 >= limits[sentences]  # (n,) only eos may follow
        if bool(at_limit.any()):
            only_eos = torch.full((V,), float("-inf"), dtype=torch.float64, device=device)
            only_eos[c.eos_id] = 0.0
            candidates[at_limit] = candidates[at_limit] + only_eos
        top_scores, top = candidates.view(n, K * V).topk(2 * K, dim=1)  # (n, 2K)
        from_beam, token = top // V, top % V  # (n, 2K) each
        is_eos = token == c.eos_id

        ends = (is_eos[:, :K] & torch.isfinite(top_scores[:, :K])).nonzero().tolist()
        for i, j in ends:
            sent = int(sentences[i])
            if len(finished[sent]) < K:
                logprob = float(top_scores[i, j])
                kept = seqs[i, from_beam[i, j]].tolist()
                finished[sent].append(Hypothesis(kept, logprob, logprob / length_penalty(t + 1, alpha)))

        # the best K extensions that are not eos stay live (there are ≥ K: at most K of the 2K are eos)
        rank = is_eos.long() * (2 * K) + torch.arange(2 * K, device=device)  # eos last, order kept
        live = rank.argsort(dim=1)[:, :K]  # (n, K)
        from_beam, token, scores = from_beam.gather(1, live), token.gather(1, live), top_scores.gather(1, live)
        seqs = torch.cat([seqs.gather(1, from_beam[:, :, None].expand(-1, -1, t)), token[:, :, None]], dim=2)

        done = torch.tensor([len(finished[int(s)]) >= K for s in sentences], device=device) | at_limit  # (n,)
        keep = (~done).nonzero().squeeze(1)  # (n',)
        if keep.numel() == 0:
            break
        rows = (keep[:, None] * K + from_beam[keep]).reshape(-1)  # (n'·K,) the rows each live hypothesis extends
        state.select(rows)
        sentences, scores, seqs = sentences[keep], scores[keep], seqs[keep]
        tokens = token[keep].reshape(-1)
    return [max(hyps, key=lambda h: h.score) for hyps in finished]


@torch.no_grad()
def sequence_logprob(model: Transformer, src: torch.Tensor, hyps: list[list[int]]) -> list[float]:
    """log P(hyp + eos | src) under the model, by teacher forcing: a check on what decoding reports."""
    c = model.config
    T = max(len(h) for h in hyps) + 1
    tgt_in = torch.full((len(hyps), T), c.pad_id, dtype=torch.long, device=src.device)
    tgt_out = torch.full_like(tgt_in, c.pad_id)
    for i, h in enumerate(hyps):
        tgt_in[i, : len(h) + 1] = torch.tensor([c.bos_id, *h])
        tgt_out[i, : len(h) + 1] = torch.tensor([*h, c.eos_id])
    logits = model(src, tgt_in).logits.double()  # (B, T, V)
    logp = F.log_softmax(logits, dim=-1).gather(-1, tgt_out[..., None]).squeeze(-1)  # (B, T)
    return (logp * (tgt_out != c.pad_id)).sum(dim=1).tolist()
