"""Head detectors: which heads look one token back, at an earlier copy of the token, or just after it.

A detector is a (T, T) 0/1 matrix D of the cells a head of some kind would look at; a head's score
on an input is the share of its attention that falls on them (TransformerLens,
transformer_lens.head_detector, error_measure "mul", nothing excluded):

    score = Σ (A ⊙ D) / Σ A          A: the head's (T, T) pattern; rows sum to 1, so Σ A = T

    previous   D[i, i−1] = 1                                  a previous-token head
    duplicate  D[i, j] = 1 for j < i with token j = token i  an earlier copy of this token
    induction  D[i, j] = 1 for 0 < j ≤ i with token j−1 = token i  the token just after an earlier
               copy: at the second A of "A B … A" a head looks at B, and so can predict B
    first      D[i, 0] = 1                                    the first token (no TransformerLens
                                                             detector; defined the same way)

Induction heads (Olsson et al. 2022, "In-context Learning and Induction Heads") are found on a
random sequence r repeated, [r, r]: in the second half every token has an earlier copy. A score
counts every row, so its ceiling is the share of rows that have a cell to look at: (T−1)/T for
previous, 1 for first, and about ½ for duplicate and induction on [r, r] (the first half has no
copies). `HeadScores.ceiling` reports these for the sequences used.

A detector reads patterns, not mechanisms: a model with learned positions trained on [r, r] of one
fixed length n can copy with a single layer-0 head that attends by position to i − n + 1, and that
head scores as an induction head too (tests/inspect/test_heads.py trains the two-layer circuit with
ALiBi, which gives no absolute positions to do this with).
"""

from dataclasses import dataclass, field

import torch

from kqv.errors import UserError

KINDS = ("previous", "duplicate", "induction", "first")


def previous_token_detection(T: int) -> torch.Tensor:
    """(T, T): ones on the first subdiagonal, D[i, i−1] = 1."""
    return torch.diag(torch.ones(T - 1), diagonal=-1) if T > 1 else torch.zeros(1, 1)


def duplicate_token_detection(ids) -> torch.Tensor:
    """ids (T,) -> (T, T): D[i, j] = 1 where j < i and ids[j] == ids[i]."""
    ids = torch.as_tensor(ids)
    same = (ids[:, None] == ids[None, :]).float()  # (T, T), symmetric, ones on the diagonal
    return torch.tril(same, diagonal=-1)  # earlier positions only


def induction_detection(ids) -> torch.Tensor:
    """ids (T,) -> (T, T): the duplicate pattern shifted one key to the right, D[i, j] = dup[i, j−1], kept j ≤ i."""
    duplicate = duplicate_token_detection(ids)  # (T, T)
    shifted = torch.zeros_like(duplicate)
    shifted[:, 1:] = duplicate[:, :-1]  # key j−1 was a copy -> look at key j
    return torch.tril(shifted)  # (T, T)


def first_token_detection(T: int) -> torch.Tensor:
    """(T, T): ones in column 0."""
    detection = torch.zeros(T, T)
    detection[:, 0] = 1.0
    return detection


def detections(ids) -> dict[str, torch.Tensor]:
    """ids (T,) -> each kind's detection pattern (T, T)."""
    T = len(ids)
    return {
        "previous": previous_token_detection(T),
        "duplicate": duplicate_token_detection(ids),
        "induction": induction_detection(ids),
        "first": first_token_detection(T),
    }


def detection_score(patterns: torch.Tensor, detection: torch.Tensor) -> torch.Tensor:
    """patterns (…, T, T), detection (T, T) or broadcastable to them -> (…): Σ(A ⊙ D) / Σ A per pattern.

    A pattern with no weight at all scores 0.
    """
    detection = detection.to(device=patterns.device, dtype=patterns.dtype)
    hit = (patterns * detection).sum(dim=(-2, -1))  # (…)
    total = patterns.sum(dim=(-2, -1))  # (…)
    return hit / total.clamp_min(torch.finfo(patterns.dtype).tiny)  # (…)


@dataclass
class HeadScores:
    previous: torch.Tensor  # (L, nh): mean over the sequences of each head's score
    duplicate: torch.Tensor  # (L, nh)
    induction: torch.Tensor  # (L, nh)
    first: torch.Tensor  # (L, nh)
    ceiling: dict[str, float] = field(default_factory=dict)  # kind -> the score of a perfect head on these inputs

    def top(self, kind: str, n: int = 5) -> list[tuple[int, int, float]]:
        """The n best heads of `kind` as (layer, head, score), best first."""
        if kind not in KINDS:
            raise UserError(f"unknown head kind {kind!r}; choose one of {', '.join(KINDS)}")
        scores = getattr(self, kind)  # (L, nh)
        n_head = scores.shape[1]
        best = torch.argsort(scores.flatten(), descending=True, stable=True)[:n]  # (n,) flat indices
        return [(int(i) // n_head, int(i) % n_head, float(scores.flatten()[i])) for i in best]


def score_patterns(patterns: torch.Tensor, ids: torch.Tensor) -> HeadScores:
    """patterns (B, L, nh, T, T) of sequences ids (B, T) -> every kind's score, averaged over the B sequences."""
    B, L, n_head, T, _ = patterns.shape
    ids = ids.cpu()
    scores, ceiling = {}, {}
    for kind in KINDS:
        detection = torch.stack([detections(row)[kind] for row in ids])  # (B, T, T)
        per_sequence = detection_score(patterns, detection[:, None, None])  # (B, L, nh)
        scores[kind] = per_sequence.mean(dim=0)  # (L, nh)
        ceiling[kind] = float(detection.amax(dim=-1).mean())  # the share of rows with a cell to look at
    return HeadScores(**scores, ceiling=ceiling)


def repeated_random_tokens(vocab_size: int, length: int, batch: int, seed: int = 0) -> torch.Tensor:
    """(batch, 2·length): random token ids r (batch, length), each row followed by itself, [r, r]."""
    generator = torch.Generator().manual_seed(seed)
    r = torch.randint(0, vocab_size, (batch, length), generator=generator)  # (B, n)
    return torch.cat([r, r], dim=1)  # (B, 2n)


def detect_heads(model, *, length: int, batch: int, seed: int = 0) -> HeadScores:
    """Every head's previous / duplicate / induction / first-token score on `batch` sequences [r, r].

    r is `length` random token ids (seeded), so the sequences are 2·length ≤ block_size tokens long.
    """
    c = model.config
    for name, value in (("length", length), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a whole number ≥ 1, got {value!r}")
    if 2 * length > c.block_size:
        raise UserError(
            f"length {length} repeated is {2 * length} tokens, over block_size {c.block_size}; "
            f"use length ≤ {c.block_size // 2}"
        )
    ids = repeated_random_tokens(c.vocab_size, length, batch, seed)  # (B, T)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(ids.to(model.tok_emb.weight.device), need_patterns=True)
    finally:
        model.train(was_training)
    patterns = torch.stack(out.patterns, dim=1)  # L × (B, nh, T, T) -> (B, L, nh, T, T)
    return score_patterns(patterns, ids)
